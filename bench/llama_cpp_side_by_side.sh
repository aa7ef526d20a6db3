#!/bin/bash
# One device call: llama.cpp's llama-bench (Debian's build, packed by
# bench/pack_llama_cpp.sh) and `kiln bench` on the same kiln synth GGUFs,
# alternated, flash attention on for llama.cpp as issue 5's reference has it.
# Expects .devrun/llama.txz, the tokenizer files beside it, and
# .devrun/devrun.txz from `NO_TEST_CUDA=1 NO_BENCH=1 bench/pack_devrun.sh`
# (the kiln command); `bench/devrun_tree.sh out all` makes room for them.
#   MODELS="qwen3.5-2b:q4_k_m qwen3-4b:q8_0" (bench/configs names : type),
#   PP (512), TG (128), REPS (3), ROUNDS (2).
set -u
source bench/llama_cpp_env.sh
llama() { llama_cpp llama-bench "$@"; }
models=()
for m in ${MODELS:-qwen3.5-2b:q4_k_m qwen3-4b:q4_k_m qwen3-4b:q8_0}; do
  f=/tmp/m/${m%%:*}-${m##*:}.gguf
  /tmp/kd/kiln synth --config "bench/configs/${m%%:*}.json" --type "${m##*:}" --tokenizer /tmp/tok \
    "$f" 2>&1 | tail -1
  models+=("$f")
done
echo "== llama.cpp warm-up (the driver compiling the kernels' PTX)"
for f in "${models[@]}"; do
  /usr/bin/time -f "%e s" bash -c "$(declare -f llama llama_cpp); LLP='$LLP' llama -m '$f' -p 16 -n 4 -r 1 -fa on" \
    2>&1 | grep -E '^\| [a-z]| s$|error'
done
for round in $(seq 1 "${ROUNDS:-2}"); do
  for f in "${models[@]}"; do
    echo "== $(basename "$f") round $round"
    llama -m "$f" -p "${PP:-512}" -n "${TG:-128}" -r "${REPS:-3}" -fa on 2>&1 | grep -E '^\| [a-z]|error'
    /tmp/kd/kiln bench "$f" -p "${PP:-512}" -n "${TG:-128}" -r "${REPS:-3}" 2>&1 |
      grep -E '^\| [a-zQ]|GB/s|error'
  done
done
