#!/bin/bash
# Packs what bench/cuda_device_run.sh runs on the device machine into
# .devrun/devrun.txz (git-ignored; name `.devrun` in the device call's
# carry): the kiln command, the CUDA test binary, and the shared libraries
# they load that the device image lacks. The device image has newer C and
# CUDA runtimes, so those stay out; FFmpeg (video input, unused there) is
# replaced by empty stand-ins of the same names, which keeps the archive a
# fraction of the size (its codec libraries are ~100 MB).
set -euo pipefail
cd "$(dirname "$0")/.."
B=${BUILD_DIR:-build}
S=.devrun/stage
rm -rf $S && mkdir -p $S/lib .devrun/stub
echo "void kiln_stub(void) {}" > .devrun/stub/stub.c
for l in libavformat.so.59 libavcodec.so.59 libswscale.so.6 libavutil.so.57 libswresample.so.4; do
  gcc -shared -fPIC -Wl,-soname,$l -o $S/lib/$l .devrun/stub/stub.c
done
bins=()
[ "${NO_TEST_CUDA:-0}" = 1 ] || bins+=("$B/tests/test_cuda")
[ "${NO_KILN:-0}" = 1 ] || bins+=("$B/kiln")
[ "${NO_BENCH:-0}" = 1 ] || [ ! -x "$B/bench/kiln_bench_cuda" ] || bins+=("$B/bench/kiln_bench_cuda")
# The kernel timeline (bench/kernel_trace.cpp; TRACE= in cuda_device_run.sh),
# with the CUPTI it was built against.
[ "${NO_BENCH:-0}" = 1 ] || [ ! -e "$B/bench/libkiln_kernel_trace.so" ] ||
  bins+=("$B/bench/libkiln_kernel_trace.so")
# EXTRA_BINS: more binaries to ship (a build of the previous commit, say,
# for a before/after in the same device call).
for e in ${EXTRA_BINS:-}; do bins+=("$e"); done
cp "${bins[@]}" $S/
for b in "${bins[@]}"; do strip --strip-debug $S/$(basename "$b"); done
for b in "${bins[@]}"; do
  LD_LIBRARY_PATH=$S/lib ldd "$b" | awk '/=> \//{print $3}'
done | sort -u | grep -v "^$S/" |
  grep -vE '/(libc|libm|libdl|librt|libpthread|ld-linux[^/]*|libcublas[^/]*|libcudart)\.so' |
  while read -r lib; do cp -L "$lib" $S/lib/; done
strip --strip-unneeded $S/lib/*.so* 2>/dev/null || true
tar cf - -C $S . | xz -T2 -9 > .devrun/devrun.txz
du -sh .devrun/devrun.txz
