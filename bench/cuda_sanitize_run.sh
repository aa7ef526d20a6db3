#!/bin/bash
# memcheck of one GPU test, then the whole device session (tests + benchmarks).
set -u
OUT=${OUT:-/tmp/out}
mkdir -p /work /tmp/kd
[ -e /work/main ] || ln -s "$PWD" /work/main
tar xzf .devrun/devrun.tgz -C /tmp/kd
export LD_LIBRARY_PATH=/tmp/kd:/usr/local/cuda/lib64:/usr/local/cuda/lib:${LD_LIBRARY_PATH:-}
timeout 120 compute-sanitizer --tool memcheck --print-limit 5 /tmp/kd/test_cuda --gtest_filter="${FILTER:-*llama_safetensors*}" > $OUT/memcheck.log 2>&1
grep -E "Invalid|at 0x|by thread|Address|OK \]|FAILED|ERROR SUMMARY" $OUT/memcheck.log | head -20
bash bench/cuda_device_run.sh
