#!/usr/bin/env python3
"""Aggregate decode throughput of a running `kiln serve` under N concurrent
streams: each client sends one greedy /v1/completions request with its own
prompt and max_tokens M; tok/s = generated tokens (from usage) / wall time.

  bench/serve_load.py --port 8080 --clients 1 32 --tokens 64
"""
import argparse, json, threading, time, urllib.request

def one(port, prompt, tokens, out, i):
    body = json.dumps({"prompt": prompt, "max_tokens": tokens, "temperature": 0}).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/completions", body,
                                 {"Content-Type": "application/json"})
    t0 = time.time()
    with urllib.request.urlopen(req, timeout=3600) as r:
        j = json.load(r)
    out[i] = (j["usage"]["completion_tokens"], time.time() - t0)

def run(port, clients, tokens):
    out = [None] * clients
    threads = [threading.Thread(target=one, args=(port, f"Story {i}: once upon a time", tokens, out, i))
               for i in range(clients)]
    t0 = time.time()
    for t in threads: t.start()
    for t in threads: t.join()
    wall = time.time() - t0
    total = sum(n for n, _ in out)
    return total, wall

if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=8080)
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 32])
    ap.add_argument("--tokens", type=int, default=64)
    a = ap.parse_args()
    run(a.port, 1, 4)  # warm-up
    for c in a.clients:
        total, wall = run(a.port, c, a.tokens)
        print(f"{c:3d} streams: {total} tokens in {wall:.2f} s = {total / wall:.1f} tok/s aggregate, "
              f"{total / wall / c:.1f} tok/s per stream", flush=True)
