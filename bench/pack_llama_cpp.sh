#!/bin/bash
# Packs Debian's build of llama.cpp (llama-bench and llama-server with its
# CUDA backend) for a device call, to measure it side by side with kiln on
# the same GPU and the same files (bench/llama_cpp_side_by_side.sh,
# bench/llama_server_side_by_side.sh). For measurement only:
# nothing in kiln's build, tests or README uses it.
#
# llama.cpp is not in Debian 12; Debian's unstable archive has it
# (llama.cpp-tools, ggml, and ggml's CUDA backend in contrib, built against
# CUDA 12). The packages and the C and C++ runtimes they need (unstable's,
# newer than the device image's) are fetched from deb.debian.org, unpacked
# with dpkg -x, and run through unstable's own loader. The CUDA backend
# keeps only its compute_90 PTX (bench/fatbin_keep.py) so that the archive
# fits a call. Writes .devrun/llama.txz and the Qwen3 tokenizer files that
# kiln synth writes into the models (llama.cpp refuses a GGUF without one).
set -euo pipefail
cd "$(dirname "$0")/.."
work=${LLAMA_PACK_DIR:-/tmp/kiln-llama-pack}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
mkdir -p "$work/debs" .devrun
for comp in main contrib non-free; do
  [ -s "$work/$comp.Packages" ] ||
    curl -fsS "$mirror/dists/sid/$comp/binary-amd64/Packages.xz" | xz -d > "$work/$comp.Packages"
done
# The pool path of a package in sid.
filename() {
  awk -v p="$1" '$1 == "Package:" { hit = ($2 == p) } hit && $1 == "Filename:" { print $2; exit }' \
    "$work/main.Packages" "$work/contrib.Packages" "$work/non-free.Packages"
}
for p in llama.cpp-tools libllama0 libggml0 libggml0-backend-cuda libcudart12 \
         libc6 libstdc++6 libgcc-s1 libgomp1 libssl3t64; do
  f=$(filename "$p")
  [ -n "$f" ] || { echo "$p: not in sid" >&2; exit 1; }
  [ -s "$work/debs/$(basename "$f")" ] || curl -fsS -o "$work/debs/$(basename "$f")" "$mirror/$f"
done
rm -rf "$work/root" "$work/stage" && mkdir -p "$work/stage"
for d in "$work"/debs/*.deb; do dpkg -x "$d" "$work/root"; done
L=$work/root/usr/lib/x86_64-linux-gnu
cp "$work/root/usr/bin/llama-bench" "$L/llama/libllama-bench-impl.so" \
   "$work/root/usr/bin/llama-server" "$L/llama/libllama-server-impl.so" "$work/stage/"
for l in libmtmd.so.0 libllama.so.0 libllama-common.so.0 libggml.so.0 libggml-base.so.0 libc.so.6 libm.so.6 \
         ld-linux-x86-64.so.2 libstdc++.so.6 libgcc_s.so.1 libgomp.so.1 libssl.so.3 libcrypto.so.3; do
  cp -L "$L/$l" "$work/stage/"
done
# ggml picks the best CPU variant and the CUDA backend from the directory
# of the executable, which is the loader's when run through it.
for v in x64 haswell skylakex icelake sapphirerapids zen4; do
  cp "$L/ggml/backends0/libggml-cpu-$v.so" "$work/stage/"
done
python3 bench/fatbin_keep.py "$L/ggml/backends0/libggml-cuda.so" "$work/stage/libggml-cuda.so"
# The device image has CUDA 13 only: the CUDA 12 runtime comes along (small),
# cuBLAS (hundreds of MB) as a stand-in that the measured runs never call.
cp -L "$L/libcudart.so.12" "$work/stage/"
echo 'libcublas.so.12 { global: *; };' > "$work/cublas.map"
gcc -shared -fPIC -O1 -Wl,-soname,libcublas.so.12 -Wl,--version-script="$work/cublas.map" \
  -o "$work/stage/libcublas.so.12" bench/cublas_stub.c
tar cf - -C "$work/stage" . | xz -T2 -9 > .devrun/llama.txz
cp tests/data/tokenizers/qwen3.tokenizer.json.gz .devrun/
cp tests/data/tokenizers/qwen3.tokenizer_config.json .devrun/
du -sh .devrun/llama.txz
