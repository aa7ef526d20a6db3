#!/bin/bash
# A device session for diagnosis: a backtrace of a crashing test, then
# per-kernel GPU times of a few decode steps under Nsight Compute.
set -u
OUT=${OUT:-/tmp/out}
mkdir -p /work /tmp/kd
[ -e /work/main ] || ln -s "$PWD" /work/main
tar xzf .devrun/devrun.tgz -C /tmp/kd
export LD_LIBRARY_PATH=/tmp/kd:/usr/local/cuda/lib64:/usr/local/cuda/lib:${LD_LIBRARY_PATH:-}
timeout 120 cuda-gdb -batch -ex run -ex bt --args /tmp/kd/test_cuda --gtest_filter="${FILTER:-*llama_safetensors*}" > $OUT/gdb.log 2>&1
grep -E "^#|SIGSEGV|OK|FAILED|Failure" $OUT/gdb.log | head -30
timeout 200 /tmp/kd/kiln_bench_decode --type q8_0 --prompt 64 --tokens 8 > /dev/null 2>&1
KILN_CUDA_GRAPHS=0 timeout 250 ncu --launch-skip 2000 --launch-count 420 --metrics gpu__time_duration.sum,dram__bytes_read.sum --csv /tmp/kd/kiln_bench_decode --type q8_0 --prompt 64 --tokens 8 > $OUT/ncu.csv 2>$OUT/ncu.err
python3 - <<'PY' $OUT/ncu.csv
import csv,sys,collections
rows=[r for r in csv.reader(open(sys.argv[1])) if len(r)>10]
h=rows[0]; rows=rows[1:]
ki=h.index('Kernel Name'); mi=h.index('Metric Name'); vi=h.index('Metric Value')
t=collections.defaultdict(lambda:[0,0.0,0.0])
for r in rows:
  k=r[ki][:60]; v=float(r[vi].replace(',',''))
  if r[mi]=='gpu__time_duration.sum': t[k][0]+=1; t[k][1]+=v
  else: t[k][2]+=v
tot=sum(x[1] for x in t.values())
for k,(n,ns,b) in sorted(t.items(),key=lambda x:-x[1][1]): print(f"{ns/1e3:9.1f} us {n:4d}x {b/max(ns,1):6.0f} GB/s  {k}")
print("total us", tot/1e3)
PY
