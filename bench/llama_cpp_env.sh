# Sourced by the llama.cpp side-by-side scripts on the device machine: kiln
# (.devrun/devrun.txz) unpacked under /tmp/kd, Debian's llama.cpp
# (.devrun/llama.txz, bench/pack_llama_cpp.sh) under /tmp/ll, Qwen3's
# tokenizer files under /tmp/tok for `kiln synth --tokenizer`, and
# llama_cpp TOOL ARGS... to run one of llama.cpp's programs.
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT" /tmp/kd /tmp/ll /tmp/m /tmp/tok
nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.mem --format=csv,noheader 2>/dev/null
tar xJf .devrun/devrun.txz -C /tmp/kd
tar xJf .devrun/llama.txz -C /tmp/ll
export LD_LIBRARY_PATH=/tmp/kd/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
# llama.cpp runs on its own C library (unstable's) and CUDA 12 runtime,
# both in the pack; the loader is told where the device's driver is.
driver=$(ldconfig -p | awk '/libcuda.so.1 /{print $NF; exit}')
LLP=/tmp/ll
[ -n "$driver" ] && LLP=$LLP:$(dirname "$driver")
echo "llama.cpp library path: $LLP"
# The driver compiles the PTX on first use; a cache large enough to keep it.
export CUDA_CACHE_MAXSIZE=4294967296
llama_cpp() {
  local tool=$1
  shift
  /tmp/ll/ld-linux-x86-64.so.2 --library-path "$LLP" "/tmp/ll/$tool" "$@"
}
gunzip -c .devrun/qwen3.tokenizer.json.gz > /tmp/tok/tokenizer.json
cp .devrun/qwen3.tokenizer_config.json /tmp/tok/tokenizer_config.json
