#!/bin/bash
# One device call: llama.cpp's llama-server (Debian's build, packed by
# bench/pack_llama_cpp.sh) and `kiln serve` on the same GPU and the same
# files, each loaded by the same client (kiln_http_load: streamed, greedy,
# a prompt of its own per request) with one request and with 32 at once.
# Both servers hold 32 slots of 256 positions. Expects .devrun/llama.txz,
# the tokenizer files beside it, and .devrun/devrun.txz from
# `NO_TEST_CUDA=1 NO_BENCH=1 EXTRA_BINS=build/bench/kiln_http_load
# bench/pack_devrun.sh`; `bench/devrun_tree.sh out all` makes room for them.
#   MODELS="stories260K qwen3-0.6b:q4_k_m" (a file under models/, or a
#   bench/configs name : type to synth), TOKENS (128 a request), ROUNDS
#   (kiln_http_load's rounds, 3), ALTERNATIONS (2).
set -u
source bench/llama_cpp_env.sh
models=()
for m in ${MODELS:-stories260K qwen3-0.6b:q4_k_m qwen3-0.6b:q8_0}; do
  case $m in
    *:*) f=/tmp/m/${m%%:*}-${m##*:}.gguf
         /tmp/kd/kiln synth --config "bench/configs/${m%%:*}.json" --type "${m##*:}" \
           --tokenizer /tmp/tok "$f" 2>&1 | tail -1 ;;
    *) f=models/$m.gguf ;;
  esac
  models+=("$f")
done
PORT=${PORT:-8097}  # the first server's; each next one takes the next port
up() {  # pid -> 0 once /health answers 200, 1 if the server died or took 180 s
  for _ in $(seq 1 360); do
    kill -0 "$1" 2>/dev/null || return 1
    (exec 3<> "/dev/tcp/127.0.0.1/$PORT" && printf 'GET /health HTTP/1.0\r\n\r\n' >&3 &&
      head -1 <&3 | grep -q ' 200') 2> /dev/null && return 0
    sleep 0.5
  done
  return 1
}
serve() {  # name model: the server started on $PORT, its own pid in $pid
  # (exec, so that $! is the server itself and the signal below reaches it)
  if [ "$1" = llama-server ]; then
    (exec /tmp/ll/ld-linux-x86-64.so.2 --library-path "$LLP" /tmp/ll/llama-server -m "$2" \
      --parallel 32 -c $((32 * 256)) -ngl 99 -fa on --host 127.0.0.1 --port $PORT) \
      > "$OUT/server.log" 2>&1 &
  else
    (exec /tmp/kd/kiln serve "$2" --parallel 32 --ctx-size 256 --host 127.0.0.1 --port $PORT) \
      > "$OUT/server.log" 2>&1 &
  fi
  pid=$!
}
for a in $(seq 1 "${ALTERNATIONS:-2}"); do
  for f in "${models[@]}"; do
    for s in llama-server kiln; do
      PORT=$((PORT + 1))
      serve $s "$f"
      start=$(date +%s)
      if ! up "$pid"; then
        echo "== $s $(basename "$f"): did not come up"; tail -5 "$OUT/server.log"
        kill -KILL "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; continue
      fi
      echo "== $s $(basename "$f") alternation $a (up in $(($(date +%s) - start)) s)"
      /tmp/kd/kiln_http_load $PORT 1 1 16 1 > /dev/null  # first request's one-off costs
      for n in 1 32; do
        echo "-- $n stream(s)"
        /tmp/kd/kiln_http_load $PORT $n "${ROUNDS:-3}" "${TOKENS:-128}" 1 2>&1 | tail -"${ROUNDS:-3}"
      done
      kill -0 "$pid" 2>/dev/null || echo "   (the server had exited: see its log)"
      kill -TERM "$pid" 2>/dev/null
      for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
      kill -KILL "$pid" 2>/dev/null; wait "$pid" 2>/dev/null
      cp "$OUT/server.log" "$OUT/server-$s-$(basename "$f" .gguf)-$a.log"
    done
  done
done
rm -f "$OUT/server.log"
(cd "$OUT" && ls | grep -E '^server-' > /tmp/ss-list && tar czf logs.tgz -T /tmp/ss-list && xargs rm -f < /tmp/ss-list)
