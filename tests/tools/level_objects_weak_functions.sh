#!/bin/sh
# The per-instruction-set kernel files (gemm_<level>.cpp, ternary_<level>.cpp,
# built with their own -m flags) must define no code the linker may share
# with other files: a weak function there (an out-of-line standard-library
# template, an inline function) is kept once for every caller, so code built
# for AVX-512 could run on a machine without it. Prints each such function
# and fails if there is any. (Weak or unique data, such as a shared constant
# table or the exception tables' personality reference, holds no
# instructions and is allowed.)
# Arguments: object files, or ;-separated lists of them (CMake's
# $<TARGET_OBJECTS:...>); those not of a level file are skipped.
status=0
checked=0
for list in "$@"; do
  old_ifs=$IFS
  IFS=';'
  for obj in $list; do
    IFS=$old_ifs
    # By the level files' names (CMakeLists.txt gives each its flags), so
    # that a new level file is checked without being listed here too.
    case $(basename "$obj") in
      gemm_avx*.cpp.o | gemm_amx*.cpp.o | ternary_avx*.cpp.o) ;;
      *) continue ;;
    esac
    checked=$((checked + 1))
    weak=$(nm -C --defined-only "$obj" | awk '$2 == "W"')
    if [ -n "$weak" ]; then
      echo "$(basename "$obj") defines functions the linker may share with other files:"
      echo "$weak"
      status=1
    fi
  done
  IFS=$old_ifs
done
if [ "$checked" -eq 0 ]; then
  echo "no level object among the arguments"
  exit 1
fi
echo "$checked level objects checked"
exit $status
