#!/usr/bin/env python3
"""Per-kernel time from an Nsight Compute CSV (`ncu --csv --page raw --metrics
gpu__time_duration.sum,dram__bytes_read.sum`): total and mean time, launches,
and achieved DRAM read bandwidth per kernel name, largest total first."""
import csv
import sys
from collections import defaultdict

rows = list(csv.reader(open(sys.argv[1], errors="replace")))
start = next(i for i, r in enumerate(rows) if "Kernel Name" in r)
head = rows[start]
name_i = head.index("Kernel Name")
t_i = head.index("gpu__time_duration.sum")
b_i = head.index("dram__bytes_read.sum") if "dram__bytes_read.sum" in head else None
units = rows[start + 1]
t_scale = {"nsecond": 1e-3, "usecond": 1.0, "msecond": 1e3}.get(units[t_i], 1.0)
b_scale = {"byte": 1, "Kbyte": 1e3, "Mbyte": 1e6, "Gbyte": 1e9}.get(units[b_i], 1) if b_i else 1
agg = defaultdict(lambda: [0.0, 0, 0.0])
for r in rows[start + 2:]:
    if len(r) <= t_i:
        continue
    try:
        t = float(r[t_i].replace(",", "")) * t_scale
    except ValueError:
        continue
    name = r[name_i].replace("(anonymous namespace)::", "").replace("kiln::cuda::", "")
    name = name.replace("void ", "").replace("(kiln::DType)", "t").split("(")[0][:40]
    a = agg[name]
    a[0] += t
    a[1] += 1
    if b_i:
        a[2] += float(r[b_i].replace(",", "") or 0) * b_scale
total = sum(a[0] for a in agg.values())
print(f"{'kernel':40s} {'total us':>10s} {'share':>6s} {'calls':>6s} {'mean us':>8s} {'GB/s':>7s}")
for name, (t, n, b) in sorted(agg.items(), key=lambda kv: -kv[1][0]):
    print(f"{name:40s} {t:10.1f} {100 * t / total:5.1f}% {n:6d} {t / n:8.2f} {b / (t * 1e-6) / 1e9 if t else 0:7.0f}")
print(f"{'all':40s} {total:10.1f}")
