#!/usr/bin/env python3
"""Keeps one target's device code in a shared library's CUDA fat binaries.

    bench/fatbin_keep.py IN.so OUT.so [--ptx 90]

Debian's libggml-cuda.so carries PTX for six virtual architectures and
SASS for two real ones (~560 MB); a device call carries at most 64 MiB.
The GPU runs one of them (on an H100, the compute_90 PTX, compiled by the
driver), so the others' payloads are zeroed in place: the file keeps its
size and layout (every header and offset as it was) and compresses to a
fraction. The driver reads only the image it picks; the zeroed ones are
never loaded.

The layout read (the fat binary container nvcc writes into .nv_fatbin): a
16-byte header (magic 0xBA55ED50, version, header size, payload size),
then entries, each a header (kind at 0: 1 PTX, 2 ELF; header size at 4;
padded payload size at 8; the architecture at 28) and its payload.
"""
import argparse
import struct
import sys

FATBIN_MAGIC = 0xBA55ED50
KIND_NAMES = {1: "ptx", 2: "elf"}


def section(data, wanted):
    """(offset, size) of the ELF64 section named `wanted`."""
    shoff = struct.unpack_from("<Q", data, 0x28)[0]
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
    heads = [struct.unpack_from("<IIQQQQ", data, shoff + i * shentsize) for i in range(shnum)]
    names_at = heads[shstrndx][4]
    for name, _type, _flags, _addr, off, size in heads:
        end = data.index(b"\0", names_at + name)
        if data[names_at + name:end].decode() == wanted:
            return off, size
    sys.exit(f"no {wanted} section")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("src")
    ap.add_argument("dst")
    ap.add_argument("--ptx", type=int, default=90, help="the PTX architecture to keep (default 90)")
    a = ap.parse_args()
    data = bytearray(open(a.src, "rb").read())
    off, size = section(data, ".nv_fatbin")
    kept = zeroed = 0
    p, end = off, off + size
    while p + 16 <= end:
        magic, _ver, head, body = struct.unpack_from("<IHHQ", data, p)
        if magic != FATBIN_MAGIC:
            p += 8  # fat binaries are 8-byte aligned, with padding between
            continue
        q, stop = p + head, p + head + body
        while q < stop:
            kind, _ev, ehead, padded = struct.unpack_from("<HHIQ", data, q)
            arch = struct.unpack_from("<I", data, q + 28)[0]
            if kind == 1 and arch == a.ptx:
                kept += padded
            else:
                data[q + ehead:q + ehead + padded] = bytes(padded)
                zeroed += padded
            q += ehead + padded
        p = stop
    if kept == 0:
        sys.exit(f"{a.src}: no compute_{a.ptx} PTX to keep")
    open(a.dst, "wb").write(data)
    print(f"{a.dst}: kept {kept / 1e6:.1f} MB of compute_{a.ptx} PTX, zeroed {zeroed / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
