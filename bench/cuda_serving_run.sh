#!/bin/bash
# One device session for serving on the GPU: the CUDA tests, then the
# scheduler's throughput measurement (tests/server/throughput_bench_test.cpp:
# 32 greedy streams against one, and each of the 32 against its run alone)
# on stories260K and on kiln synth models of real shapes made there.
# Expects .devrun/devrun.txz from bench/pack_devrun.sh with
# EXTRA_BINS=build/tests/test_server (NO_KILN=1 leaves the kiln command out:
# the test makes its synth models itself, and the call's tree stays under
# the device tool's 64 MiB with the two test binaries).
#   TESTS=0 skips test_cuda; MODELS="3-0.6b:q8_0 ..." picks the synth models
#   (default 0.6B Q8_0 and Q4_K_M); TOKENS per stream (default 64);
#   VARIANTS="default KILN_CUDA_BATCH_INVARIANT=0+KILN_CUDA_MV_TOKENS=8"
#   runs each with those settings ('+' between variables; see the README);
#   BINS="test_server test_server_before" runs each binary of the archive
#   (EXTRA_BINS, say a build of the previous commit) in turn, interleaved.
set -u
OUT=${OUT:-/tmp/out}
mkdir -p /work /tmp/kd
[ -e /work/main ] || ln -s "$PWD" /work/main
tar xJf .devrun/devrun.txz -C /tmp/kd
export LD_LIBRARY_PATH=/tmp/kd/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.mem --format=csv,noheader
if [ "${TESTS:-1}" = 1 ]; then
  timeout 400 /tmp/kd/test_cuda ${GTEST_ARGS:-} > $OUT/test_cuda.log 2>&1
  echo "test_cuda rc=$? $(grep -cE '^\[       OK' $OUT/test_cuda.log) ok, $(grep -cE '^\[  FAILED' $OUT/test_cuda.log) failed lines"
  grep -E "FAILED|Failure|error:|Expected|Which is|measured" $OUT/test_cuda.log | head -40
fi
throughput() {  # model (a path, or size:type to synth) variant -> a summary line, log under $OUT
  local model=$1 v=$2 name src
  case $model in
    *:*) name=${model//:/-}; src="KILN_SERVE_BENCH_SYNTH=bench/configs/qwen${model%%:*}.json:${model##*:}" ;;
    *) name=$(basename $model .gguf); src="KILN_SERVE_BENCH_MODEL=$model" ;;
  esac
  local bin=/tmp/kd/${BIN:-test_server}
  name=$name-${v//=/_}$([ -n "${BIN:-}" ] && echo "-$BIN")
  env $([ "$v" = default ] || echo "${v//+/ }") $src KILN_SERVE_BENCH_TOKENS=${TOKENS:-64} \
    timeout 300 $bin --gtest_also_run_disabled_tests --gtest_filter='*Throughput*' > $OUT/$name.log 2>&1
  echo "$name rc=$?: $(grep -E '^ *(1|32) streams:' $OUT/$name.log | sed -n '2,3p' | sed -E 's/.*= ([0-9.]+) tok\/s aggregate.*after every first token ([0-9.]+) tok\/s.*/\1 (decode \2)/' | tr '\n' ' ') ratio $(grep -oE '/ 1 stream: [0-9.]+x' $OUT/$name.log) differ $(grep -c 'differs' $OUT/$name.log)"
}
for m in /work/main/models/stories260K.gguf ${MODELS:-3-0.6b:q8_0 3-0.6b:q4_k_m}; do
  for v in ${VARIANTS:-default}; do
    for b in ${BINS:-test_server}; do BIN=$([ "$b" = test_server ] || echo $b) throughput $m $v; done
  done
done
