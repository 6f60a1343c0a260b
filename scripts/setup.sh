#!/usr/bin/env bash
# Installs every Debian package vlmcheck's build and tests need. Idempotent: packages already
# present are left alone, and apt is only touched when something is missing.
set -euo pipefail

PKGS=(
  cmake ninja-build ccache pkg-config g++ clang libclang-rt-14-dev
  libturbojpeg0-dev libjpeg62-turbo-dev libpng-dev libwebp-dev libheif-dev libtiff-dev libgif-dev
  libexif-dev libexiv2-dev exiv2
  nlohmann-json3-dev libsimdjson-dev libpcre2-dev libutf8proc-dev
  libcli11-dev libfmt-dev libtomlplusplus-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  python3-pil python3-numpy python3-jinja2 python3-regex
  nodejs npm
  chromium  # the real-browser test of reports/results.html (tests/unit/test_cli_browser.cpp)
)

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

# nodejs/npm may come from a non-Debian install (the machine image ships node 20); accept that.
if command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1; then
  filtered=()
  for p in "${missing[@]}"; do
    [[ "$p" == nodejs || "$p" == npm ]] || filtered+=("$p")
  done
  missing=("${filtered[@]+"${filtered[@]}"}")
fi

if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  SUDO=""
  [[ $(id -u) -ne 0 ]] && SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y --no-install-recommends "${missing[@]}"
else
  echo "setup: all packages present"
fi
