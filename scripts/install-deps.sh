#!/usr/bin/env bash
# Installs the Debian packages kiln builds against, and only those that are missing.
# Every dependency comes from Debian's archive; nothing is downloaded by hand.
set -euo pipefail

packages=(
  build-essential cmake ninja-build pkg-config ccache
  nlohmann-json3-dev     # JSON: config.json, tokenizer.json, CLI output
  libgtest-dev libgmock-dev  # unit and golden tests
  libbenchmark-dev       # kernel micro-benchmarks in bench/
  libicu-dev             # Unicode categories for the BPE pre-tokenizers
  libcpp-httplib-dev     # HTTP server for `kiln serve`
  libjpeg-dev libpng-dev libwebp-dev  # image decoding for the vision models (Pillow's decoders)
  libavformat-dev libavcodec-dev libswscale-dev libavutil-dev  # video files (optional at configure)
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if ((${#missing[@]})); then
  echo "kiln: installing missing packages: ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
