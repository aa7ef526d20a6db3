#!/usr/bin/env bash
# Installs the Debian packages kiln builds against, and only those that are missing.
# Every dependency comes from Debian's archive; nothing is downloaded by hand (the one
# exception, optional, is the npm package of the OpenAI client test, at the end).
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

# Optional: the official OpenAI client (npm's `openai`, pinned in
# tests/e2e/node/package-lock.json) for the client test in tests/e2e. Only
# where npm is already installed; offline, the build goes on and that test
# is skipped.
node_dir="$(cd "$(dirname "$0")/.." && pwd)/tests/e2e/node"
if command -v npm >/dev/null 2>&1 && [ ! -d "$node_dir/node_modules/openai" ]; then
  echo "kiln: installing the openai npm package for the client test (npm ci)"
  npm ci --prefix "$node_dir" --no-audit --no-fund ||
    echo "kiln: warning: npm ci failed; the OpenAI client test will be skipped" >&2
fi
