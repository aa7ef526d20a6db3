#!/bin/bash
# One device session: the CUDA tests, then decode/prefill benchmarks of
# Qwen3-0.6B- and Qwen3-4B-shaped models. Expects the binaries built
# elsewhere in .devrun/devrun.tgz (test_cuda, kiln_bench_decode, kiln and the
# ICU libraries they link; see bench/RESULTS.md).
#   TESTS=0 skips the tests; SIZES="0.6b 4b" picks the models.
set -u
OUT=${OUT:-/tmp/out}
mkdir -p /work /tmp/kd
[ -e /work/main ] || ln -s "$PWD" /work/main
# KILN_TEST_DATA is the build tree's path: link a worktree build's too (BUILD_SRC=path).
[ -n "${BUILD_SRC:-}" ] && [ ! -e "$BUILD_SRC" ] && ln -s "$PWD" "$BUILD_SRC"
tar xzf .devrun/devrun.tgz -C /tmp/kd
export LD_LIBRARY_PATH=/tmp/kd:/usr/local/cuda/lib64:/usr/local/cuda/lib:${LD_LIBRARY_PATH:-}
nvidia-smi --query-gpu=name,memory.total,memory.used,clocks.sm,clocks.mem --format=csv > $OUT/gpu.txt 2>&1
cat $OUT/gpu.txt
if [ "${TESTS:-1}" = 1 ]; then
  timeout 300 /tmp/kd/test_cuda ${GTEST_ARGS:-} > $OUT/test_cuda.log 2>&1
  echo "test_cuda rc=$?"
  grep -E "FAILED|PASSED|max relative|cosine >=|Failure|error|Expected|Which is|rel_err|round" $OUT/test_cuda.log | head -50
fi
B=/tmp/kd/kiln_bench_decode
S4B="--layers 36 --hidden 2560 --ffn 9728 --heads 32 --kv-heads 8 --head-dim 128"
bench() {  # name, args...
  local name=$1; shift
  timeout 200 $B "$@" > $OUT/bench.log 2>&1
  echo "== $name rc=$? $(grep -E '^(prefill|decode)' $OUT/bench.log | tr '\n' ' ')"
  grep -E "weights read" $OUT/bench.log | sed 's/.*weights read/  weights read/'
  grep -iE "error|kiln_bench" $OUT/bench.log | head -3
}
for size in ${SIZES:-0.6b 4b}; do
  for t in ${TYPES:-q4_0 q4_K q8_0 bf16}; do
    if [ $size = 0.6b ]; then args=""; else args="$S4B"; fi
    f=/tmp/synth-$size-$t.gguf
    if [ $t = q4_K_M ]; then
      cfg=bench/configs/qwen3-$size.json
      timeout 200 /tmp/kd/kiln synth --config $cfg --type q4_k_m $f > /dev/null 2> $OUT/synth.err ||
        { echo "synth $size failed"; tail -3 $OUT/synth.err; continue; }
    fi
    bench "$size $t" --type ${t/q4_K_M/q4_K} $args --out $f
    [ $size = 0.6b ] && [ $t = q8_0 ] && {
      KILN_CUDA_FUSE=0 bench "$size $t unfused" --type $t --out $f
      KILN_CUDA_GRAPHS=0 bench "$size $t no graphs" --type $t --out $f
    }
    rm -f $f
  done
done
