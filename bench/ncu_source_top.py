#!/usr/bin/env python3
"""Where a kernel's instructions and stalls go, from Nsight Compute's SASS
source page (`ncu -i REP --page source --print-source sass --csv`): the
lines with the most warp-stall samples and the most executed instructions,
and executed instructions by opcode."""
import csv
import sys
from collections import defaultdict

rows = list(csv.reader(open(sys.argv[1], errors="replace")))
start = next(i for i, r in enumerate(rows) if any("Source" == c for c in r))
head = rows[start]


def col(pred):
    return next((i for i, c in enumerate(head) if pred(c)), None)


src = head.index("Source")
addr = col(lambda c: c == "Address")
execd = col(lambda c: c.startswith("Instructions Executed"))
stall = col(lambda c: c.startswith("Warp Stall Sampling (All"))


def num(r, i):
    try:
        return float(r[i].replace(",", "")) if i is not None and i < len(r) else 0.0
    except ValueError:
        return 0.0


lines = [r for r in rows[start + 1:] if len(r) > src and r[src].strip()]
tot_e = sum(num(r, execd) for r in lines)
tot_s = sum(num(r, stall) for r in lines)
print("instructions executed %.0f, stall samples %.0f, %d SASS lines" % (tot_e, tot_s, len(lines)))
by_op = defaultdict(float)
for r in lines:
    op = r[src].strip().split()
    op = op[1] if op and op[0].startswith("@") and len(op) > 1 else (op[0] if op else "?")
    by_op[op.split(".")[0]] += num(r, execd)
print("by opcode:", ", ".join("%s %.1f%%" % (k, 100 * v / tot_e) for k, v in
                             sorted(by_op.items(), key=lambda kv: -kv[1])[:24]))
n = int(sys.argv[2]) if len(sys.argv) > 2 else 30
print("\nmost stall samples:")
for r in sorted(lines, key=lambda r: -num(r, stall))[:n]:
    print("  %5.1f%% stall %5.1f%% exec  %s  %s" % (100 * num(r, stall) / max(tot_s, 1),
          100 * num(r, execd) / max(tot_e, 1), r[addr] if addr is not None else "", r[src].strip()[:90]))
