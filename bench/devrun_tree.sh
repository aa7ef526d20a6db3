#!/bin/bash
# Makes the working tree fit a device call (the device tool sends the tree,
# at most 64 MiB, beside the archive of bench/pack_devrun.sh) and puts it
# back after:
#   bench/devrun_tree.sh out        moves the fixtures no device test reads
#                                   (tests/data/quant, tokenizers, chat)
#   bench/devrun_tree.sh out more   also tests/data/vision, hf_shapes and the
#                                   vision models' video references
#                                   (tests/data/hf/*/ref_video.safetensors),
#                                   for a call shipping two kiln builds (then
#                                   run test_cuda with GTEST_ARGS='--gtest_filter=
#                                   -*HybridShapes*:*VideoPrompt*')
#   bench/devrun_tree.sh out all    moves every fixture out (a call that
#                                   runs no test)
#   bench/devrun_tree.sh in         moves them back and checks that git sees
#                                   no file missing
# `out` prints what the call will send (tracked files present plus the
# files at .devrun's top level, which a call carries) against the limit.
set -euo pipefail
cd "$(dirname "$0")/.."
park=${DEVRUN_PARK:-/tmp/kiln-devrun-parked}
case "${1:-}" in
  out)
    dirs="quant tokenizers chat"
    [ "${2:-}" = more ] && dirs="$dirs vision hf_shapes"
    # all: every fixture, for a call that runs no test (the llama.cpp side
    # by side, bench/llama_cpp_side_by_side.sh).
    [ "${2:-}" = all ] && dirs=$(cd tests/data && ls)
    mkdir -p "$park"
    for d in $dirs; do
      [ -e "tests/data/$d" ] || continue
      [ -e "$park/$d" ] && { echo "$park/$d exists: run '$0 in' first" >&2; exit 1; }
      mv "tests/data/$d" "$park/"
    done
    if [ "${2:-}" = more ]; then  # single files, kept under their own path
      for f in tests/data/hf/*/ref_video.safetensors; do
        [ -e "$f" ] || continue
        mkdir -p "$park/files/$(dirname "$f")"
        mv "$f" "$park/files/$f"
      done
    fi
    # (du fails on the files moved out: they are not sent, and not counted.)
    tracked=$( (git ls-files -z | xargs -0 du -cb 2>/dev/null || true) | tail -1 | cut -f1)
    # The files beside the archive that a call may carry (.devrun's top level).
    archive=$( (find .devrun -maxdepth 1 -type f -print0 | xargs -0 -r du -cb || echo 0) | tail -1 | cut -f1)
    total=$((tracked + archive))
    limit=$((64 * 1024 * 1024))
    echo "tree $((tracked / 1048576)) MiB + .devrun's files $((archive / 1048576)) MiB = $((total / 1048576)) MiB of 64"
    [ $total -le $limit ] || echo "over the limit: '$0 in', then '$0 out more' or a smaller archive" >&2
    ;;
  in)
    if [ -d "$park" ]; then
      if [ -d "$park/files" ]; then
        (cd "$park/files" && find . -type f) | while read -r f; do
          mv "$park/files/$f" "$f"
        done
        rm -rf "$park/files"
      fi
      for d in "$park"/*; do [ -e "$d" ] && mv "$d" tests/data/; done
      rmdir "$park" 2>/dev/null || true
    fi
    missing=$(git status --short | grep -c '^ D' || true)
    [ "$missing" = 0 ] || { echo "$missing tracked files still missing" >&2; exit 1; }
    echo "tree complete"
    ;;
  *) echo "usage: $0 out [more|all] | in" >&2; exit 2 ;;
esac
