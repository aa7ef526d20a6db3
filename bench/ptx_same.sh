#!/bin/bash
# Whether a CUDA source compiles to the same PTX as at another revision,
# register numbers aside: the check for a change meant to move code without
# changing what runs (a refactor of a kernel), made here without a GPU.
#   bench/ptx_same.sh src/kiln/backend/cuda/matvec_fused.cu [REV]
# REV defaults to HEAD; the working tree's file is compared against it.
# Prints "same PTX" and exits 0, or prints the first differences and exits 1.
# (Names that embed the file's path and hash, line directives and comments
# are left out of the comparison.)
set -euo pipefail
cd "$(dirname "$0")/.."
src=${1:?usage: $0 FILE.cu [REV]}
rev=${2:-HEAD}
arch=${PTX_ARCH:-sm_90a}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/old" "$tmp/new"
name=$(basename "$src")
git show "$rev:$src" > "$tmp/old/$name"
cp "$src" "$tmp/new/$name"
for v in old new; do
  /usr/local/cuda/bin/nvcc -DKILN_HAVE_CUDA=1 -I"$PWD/src" -I"$PWD/include" -O3 -DNDEBUG \
    -arch="$arch" -std=c++20 -ptx -x cu "$tmp/$v/$name" -o "$tmp/$v.ptx" &
done
wait
normalize() {
  sed -E 's/_INTERNAL_[0-9a-f]+_[0-9]+_[A-Za-z0-9_]+_cu_[0-9a-f]+/_FILE_/g;
          s/_GLOBAL__N__[0-9a-f]+_[0-9]+_[A-Za-z0-9_]+_cu_[0-9a-f]+/_ANON_/g;
          s/%(r|rd|f|fd|p|rs|h|hh)[0-9]+/%\1/g' "$1" |
    grep -vE '^\s*//|\.loc|\.file'
}
if diff <(normalize "$tmp/old.ptx") <(normalize "$tmp/new.ptx") > "$tmp/diff"; then
  echo "same PTX ($arch) as $rev"
else
  echo "PTX differs from $rev ($arch), $(grep -c '^[<>]' "$tmp/diff") lines:"
  head -40 "$tmp/diff"
  exit 1
fi
