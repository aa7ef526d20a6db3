#!/bin/bash
# One device session: the CUDA tests, then decode benchmarks. Expects the
# binaries built elsewhere in .devrun/devrun.tgz (see bench/RESULTS.md).
set -u
OUT=${OUT:-/tmp/out}
mkdir -p /work /tmp/kd
[ -e /work/main ] || ln -s "$PWD" /work/main
tar xzf .devrun/devrun.tgz -C /tmp/kd
export LD_LIBRARY_PATH=/tmp/kd:/usr/local/cuda/lib64:/usr/local/cuda/lib:${LD_LIBRARY_PATH:-}
nvidia-smi --query-gpu=name,memory.total,memory.used,clocks.sm,clocks.mem --format=csv > $OUT/gpu.txt 2>&1
cat $OUT/gpu.txt
ldd /tmp/kd/test_cuda | grep "not found"
timeout 240 /tmp/kd/test_cuda ${GTEST_ARGS:-} > $OUT/test_cuda.log 2>&1
echo "test_cuda rc=$?"
grep -E "FAILED|PASSED|max relative|cosine >=|Failure|error" $OUT/test_cuda.log | head -60
for t in ${TYPES:-q8_0 q4_K bf16}; do
  timeout 150 /tmp/kd/kiln_bench_decode --type $t > $OUT/bench_$t.log 2>&1
  echo "== $t rc=$?"; tail -4 $OUT/bench_$t.log
done
KILN_CUDA_GRAPHS=0 timeout 100 /tmp/kd/kiln_bench_decode --type q8_0 > $OUT/bench_q8_0_nograph.log 2>&1
echo "== q8_0 without graphs"; tail -2 $OUT/bench_q8_0_nograph.log
