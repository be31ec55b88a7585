#!/usr/bin/env bash
# Reference check of the GPT-2 tokenizer and of `prepare`: encodes the demo corpus (233 State of
# the Union addresses, ~10.8 MB) plus 300 random Unicode documents with `sophiagpt prepare` and
# requires every token to equal what the independent npm encoder gpt-tokenizer@3.4.0 produces.
#
#   scripts/dev/check_tokenizer.sh [PATH/TO/sophiagpt] [EXTRA_INPUT...]
#
# Default executable: build/sophiagpt. EXTRA_INPUTs (a .txt, a directory of .txt, a .jsonl[.xz])
# are checked too. Fetches the assets it needs (scripts/fetch_assets.sh gpt2 sotu reference).
# Exit status 0 only when all tokens are equal.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
EXE=${1:-$ROOT/build/sophiagpt}
shift || true
[[ -x "$EXE" ]] || { echo "check_tokenizer: $EXE is not an executable (build first, or pass its path)" >&2; exit 1; }
"$ROOT/scripts/fetch_assets.sh" gpt2 sotu reference
CACHE=${SGPT_CACHE_DIR:-$ROOT/data/cache}
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
node "$ROOT/scripts/dev/check_tokenizer.mjs" gen "$TMP/random" 300 20240520
inputs=("$CACHE/sotu" "$TMP/random" "$@")
"$EXE" prepare --vocab "$CACHE/gpt2" --input "${inputs[@]}" --output-dir "$TMP/out" \
  --format nanogpt --val-fraction 0 >/dev/null
node "$ROOT/scripts/dev/check_tokenizer.mjs" compare "$TMP/out/train.bin" "${inputs[@]}"
