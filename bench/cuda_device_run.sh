#!/bin/bash
# One device session: the CUDA tests, then `kiln bench` (llama-bench's method:
# pp512 from an empty cache, tg128 from an empty cache) on random-weight GGUFs
# of real shapes made there by `kiln synth`. Expects the binaries built here in
# .devrun/devrun.txz (bench/pack_devrun.sh: test_cuda, kiln and the shared
# libraries the device image lacks).
# The call's tree must stay under the device tool's 64 MiB: the archive is
# ~20-22 MB and the tracked tree ~59 MB, of which tests/data/quant,
# tests/data/tokenizers and tests/data/chat (~16 MB) are not read there.
# `bench/devrun_tree.sh out` moves those out of the checkout for the call
# and says whether it fits, `bench/devrun_tree.sh in` puts them back; carry
# only .devrun/devrun.txz. A second kiln build shipped beside the first
# (EXTRA_BINS, KILN_BIN) adds ~8 MB: then `out more` (tests/data/vision,
# hf_shapes and the video references too), with
# GTEST_ARGS='--gtest_filter=-*HybridShapes*:*VideoPrompt*'.
#   TESTS=0 skips the tests; MODELS="4b:q4_k_m 4b:q8_0" picks the models;
#   VARIANTS="default pdl0 stage" also runs each model with KILN_CUDA_PDL=0 /
#   KILN_CUDA_MV=stage, and VAR=val,VAR2=val2 sets those; @NAME[,...] runs
#   the build shipped as /tmp/kd/NAME (EXTRA_BINS) with those settings; KERNELS="default pdl0 piece2048" runs kiln_bench_cuda
#   (products alone, launch floor; bench/cuda_kernels.cu) once per setting
#   (KSETS picks its tables: all, floor, iso, ops, step, rows (one product at growing row counts); "iso N" the N-th product only, for Nsight Compute); PROFILE=4b:q4_0 adds an Nsight Compute per-kernel
#   summary of decode steps of that model.
#   TRACE=3-4b:q4_k_m adds the timeline of that model's last decode step's
#   kernels as they ran in the replayed graph (bench/kernel_trace.cpp), once
#   per setting in TRACE_VARIANTS (default: default), the whole table in
#   $OUT/trace-*.txt and its summary printed.
# Everything written to $OUT comes back in results-N.tgz (see the end).
set -u
OUT=${OUT:-/tmp/out}
mkdir -p /work /tmp/kd
[ -e /work/main ] || ln -s "$PWD" /work/main
# Test fixtures are found through the source path compiled in: a build made
# in another worktree (/work/cuda, say) looks there.
for d in ${SRC_DIRS:-/work/cuda}; do [ -e $d ] || ln -s "$PWD" $d; done
tar xJf .devrun/devrun.txz -C /tmp/kd
export LD_LIBRARY_PATH=/tmp/kd/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
K=${KILN_BIN:-/tmp/kd/kiln}  # KILN_BIN: another build shipped beside it (EXTRA_BINS)
nvidia-smi --query-gpu=name,memory.total,memory.used,clocks.sm,clocks.mem --format=csv,noheader
if [ "${TESTS:-1}" = 1 ]; then
  timeout 300 /tmp/kd/test_cuda ${GTEST_ARGS:-} > $OUT/test_cuda.log 2>&1
  echo "test_cuda rc=$? $(grep -cE '^\[       OK' $OUT/test_cuda.log) ok, $(grep -cE '^\[  FAILED' $OUT/test_cuda.log) failed lines"
  grep -E '^\[  (PASSED|FAILED)|tests ran' $OUT/test_cuda.log | head -20
  grep -E "FAILED|Failure|error:|Expected|Which is|rel|cosine" $OUT/test_cuda.log | head -30
  # The register-staged products (every GPU before Hopper) through the
  # product tests too: on this machine only KILN_CUDA_MV=stage reaches them.
  KILN_CUDA_MV=stage timeout 200 /tmp/kd/test_cuda --gtest_filter='*Matmul*:*FusedStep*:*Batch*' \
    > $OUT/test_cuda_stage.log 2>&1
  echo "test_cuda (staged products) rc=$? $(grep -E '^\[  (PASSED|FAILED)' $OUT/test_cuda_stage.log | head -3 | tr '\n' ' ')"
fi
# Device-to-device copy bandwidth (read + write), the ceiling for decode.
python3 - <<'EOF' 2>/dev/null
import torch
x = torch.empty(2 * 1024**3, dtype=torch.uint8, device="cuda"); y = torch.empty_like(x)
for _ in range(3): y.copy_(x)
s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
torch.cuda.synchronize(); s.record()
for _ in range(10): y.copy_(x)
e.record(); torch.cuda.synchronize()
print("copy bandwidth (read+write): %.0f GB/s" % (2 * x.numel() * 10 / (s.elapsed_time(e) / 1e3) / 1e9))
EOF
fname() { echo "$1" | tr -c 'A-Za-z0-9._\n-' '_'; }  # a variant as a file name the device tool returns
envof() {  # variant name -> environment
  case $1 in
    pdl0) echo "KILN_CUDA_PDL=0" ;;
    reuse0) echo "KILN_CUDA_MV_REUSE=0" ;;
    stage) echo "KILN_CUDA_MV=stage" ;;
    graphs0) echo "KILN_CUDA_GRAPHS=0" ;;
    blocks*) echo "KILN_CUDA_MV_BLOCKS=${1#blocks}" ;;
    f16kv) echo "KILN_BENCH_KV=f16" ;;
    piece*) echo "KILN_CUDA_MV_PIECE=${1#piece}" ;;
    fuse0) echo "KILN_CUDA_FUSE=0" ;;
    tf32) echo "KILN_CUDA_PREFILL=tf32" ;;
    *=*) echo "${1//,/ }" ;;  # VAR=val,VAR2=val2
    *) echo "" ;;
  esac
}
if [ -n "${KERNELS:-}" ] && [ -x /tmp/kd/kiln_bench_cuda ]; then
  for v in $KERNELS; do
    echo "== kiln_bench_cuda $v"
    log=$OUT/kernels-$(fname $v).log
    env $(envof $v) timeout 120 /tmp/kd/kiln_bench_cuda ${KSETS:-all} > $log 2>&1
    echo "rc=$?"; cat $log
  done
fi
# NCU_ISO=N: Nsight Compute's details (occupancy, scheduler, warp states,
# memory) and SASS source counters of the N-th product of kiln_bench_cuda's
# table alone (4: Q4_K gate/up), one launch of its graph.
if [ -n "${NCU_ISO:-}" ] && [ -x /tmp/kd/kiln_bench_cuda ]; then
  timeout 300 ncu --clock-control none --graph-profiling node -k regex:mv_bulk --launch-skip ${NCU_SKIP:-40} --launch-count 1 \
    --section SpeedOfLight --section Occupancy --section SchedulerStats --section WarpStateStats \
    --section LaunchStats --section MemoryWorkloadAnalysis --section InstructionStats --section SourceCounters \
    -o $OUT/iso /tmp/kd/kiln_bench_cuda iso $NCU_ISO > $OUT/ncu_iso.log 2>&1
  echo "ncu iso $NCU_ISO rc=$?"
  ncu -i $OUT/iso.ncu-rep --page details > $OUT/ncu_iso_details.txt 2>&1
  grep -E "^  [A-Za-z]|Duration|Throughput|Executed Ipc|Issue Slots|Active Warps|Eligible|Achieved Occupancy|Theoretical Occupancy|Registers|Stall|Warp Cycles|Executed Instructions|Block Limit|No Eligible|One or More" $OUT/ncu_iso_details.txt | head -70
  # Where the warps wait: the sampled stall reasons, largest first.
  ncu -i $OUT/iso.ncu-rep --page raw --csv 2>/dev/null | python3 -c '
import csv, sys
rows = list(csv.reader(sys.stdin))
if len(rows) >= 3:
    kv = [(h, v) for h, v in zip(rows[0], rows[2]) if "pcsamp_warps_issue_stalled" in h and not h.endswith("not_issued")]
    kv = [(h.split("stalled_")[-1], float(v.replace(",", "") or 0)) for h, v in kv]
    tot = sum(v for _, v in kv) or 1
    print("stall samples:", ", ".join("%s %.1f%%" % (h, 100 * v / tot) for h, v in sorted(kv, key=lambda x: -x[1])[:12]))'
  ncu -i $OUT/iso.ncu-rep --page source --print-source sass --csv > $OUT/ncu_iso_source.csv 2>/dev/null
  python3 bench/ncu_source_top.py $OUT/ncu_iso_source.csv 25 2>&1 | head -70
fi
synth() {  # size type -> path
  local f=/tmp/synth-$1-$2.gguf
  [ -e $f ] || timeout 300 $K synth --config bench/configs/qwen$1.json --type $2 $f > /dev/null 2> $OUT/synth.err ||
    { echo "synth $1 $2 failed: $(tail -2 $OUT/synth.err)"; rm -f $f; return 1; }
  echo $f
}
for m in ${MODELS:-3-4b:q4_k_m 3-4b:q8_0 3-4b:q4_0 3-4b:bf16}; do
  size=${m%%:*}; type=${m##*:}
  f=$(synth $size $type) || { echo "$f"; continue; }
  for v in ${VARIANTS:-default}; do
    # @NAME or @NAME,VAR=val: the build shipped as NAME (EXTRA_BINS) instead
    # of $K, so that two builds alternate in one call.
    bin=$K; opts=$v
    case $v in @*) name=${v#@}; bin=/tmp/kd/${name%%,*}; opts=${name#*,}; [ "$opts" = "$name" ] && opts=default ;; esac
    env=$(envof $opts)
    kv=""; [ "$opts" = f16kv ] && kv="--cache-type f16"
    r=$(env KILN_CUDA_STATS=1 $env timeout 240 $bin bench $f -p ${PP:-512} -n ${TG:-128} -r ${REPS:-3} $kv --json 2> $OUT/bench.err)
    echo "$r" > $OUT/bench-$size-$type-$(fname $v).json
    echo "$size $type $v: $(echo "$r" | python3 -c '
import json,sys
try:
  for o in json.load(sys.stdin): print("%s %.1f±%.1f%s" % (o["test"], o["avg_ts"], o["stddev_ts"], " (%.0f GB/s)" % o["avg_gbps"] if "avg_gbps" in o else ""), end="  ")
except Exception as e: print("no result", e)
') $(tail -1 $OUT/bench.err | grep -i error)"
    grep "kiln cuda stats" $OUT/bench.err | sed 's/^/    /'
  done
  if [ "${PROFILE:-}" = "$m" ]; then
    timeout 300 ncu --clock-control none --graph-profiling node --launch-skip ${SKIP:-2000} --launch-count ${COUNT:-400} \
      --metrics gpu__time_duration.sum,dram__bytes_read.sum --csv --page raw $K bench $f -p 0 -n 64 -r 1 > $OUT/ncu.csv 2> $OUT/ncu.err
    echo "ncu rc=$?"; python3 bench/ncu_summary.py $OUT/ncu.csv 2>&1 | head -30
  fi
  if [ "${TRACE:-}" = "$m" ] && [ -e /tmp/kd/libkiln_kernel_trace.so ]; then
    for v in ${TRACE_VARIANTS:-default}; do
      t=$OUT/trace-$size-$type-$(fname $v).txt
      env $(envof $v) CUDA_INJECTION64_PATH=/tmp/kd/libkiln_kernel_trace.so KILN_TRACE_OUT=$t \
        KILN_TRACE_COUNT=${TRACE_COUNT:-400} timeout 120 $K bench $f -p 0 -n 16 -r 1 > /dev/null 2> $OUT/trace.err
      echo "trace $v rc=$?"; sed -n '/^window/,$p' $t 2>/dev/null | head -25
    done
  fi
  if [ "${PROFILE_PP:-}" = "$m" ]; then  # one 512-token prefill after the 32-token warm-up
    timeout 300 ncu --clock-control none --graph-profiling node --launch-skip ${SKIP_PP:-0} --launch-count ${COUNT_PP:-2000} \
      --metrics gpu__time_duration.sum,dram__bytes_read.sum --csv --page raw $K bench $f -p 512 -n 0 -r 1 > $OUT/ncu_pp.csv 2> $OUT/ncu_pp.err
    echo "ncu prefill rc=$?"; python3 bench/ncu_summary.py $OUT/ncu_pp.csv 2>&1 | head -30
  fi
done
# The device tool brings back at most 8 files: what this run wrote goes
# back as one archive (results-N.tgz, N counting this call's runs), beside
# the caller's own log.txt, if any. PACK_OUT=0 leaves the files as they are.
if [ "${PACK_OUT:-1}" = 1 ]; then
  n=1
  while [ -e "$OUT/results-$n.tgz" ]; do n=$((n + 1)); done
  (cd "$OUT" && ls -A | grep -vxE 'log\.txt|results-[0-9]+\.tgz' > /tmp/kd-out-list || true
   if [ -s /tmp/kd-out-list ]; then
     tar czf "/tmp/kd-results-$n.tgz" -T /tmp/kd-out-list && xargs rm -rf < /tmp/kd-out-list &&
       mv "/tmp/kd-results-$n.tgz" "results-$n.tgz"
   fi)
  echo "results in $OUT: $(ls "$OUT" | tr '\n' ' ')"
fi
