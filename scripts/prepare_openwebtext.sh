#!/usr/bin/env bash
# Tokenizes OpenWebText (Gokaslan & Cohen, 2019) into training shards with one command.
#
#   scripts/prepare_openwebtext.sh [ARCHIVE_OR_DIR] [--format llmc|nanogpt] [--out DIR]
#                                  [--threads N] [--overwrite]
#
# Where to put it: download OpenWebText as its authors distribute it, the single archive
# openwebtext.tar.xz (about 12 GB; inside: openwebtext/urlsf_subset*_data.xz, each an
# xz-compressed tar of .txt documents), and put it at data/openwebtext/openwebtext.tar.xz, or pass
# its path. A folder holding that archive, the urlsf_subset*.tar parts it is sometimes split into,
# or the unpacked urlsf_subset*_data.xz files works too. Nothing needs unpacking by hand.
#
# What you get (the defaults follow nanoGPT's OpenWebText preparation: 0.05% of the documents, seed
# 2357, as validation; the split itself is sophiagpt's, by document):
#   --format llmc     data/shards/openwebtext/{val,train}_NNNNNN.bin, llm.c shards of 100M tokens,
#                     for configs/gpt2_*.json (data.train = "data/shards/openwebtext/train_*.bin")
#   --format nanogpt  data/shards/openwebtext/{train,val}.bin, headerless, as the official Sophia
#                     trainer reads them
#   plus manifest.json with document and token counts.
# Expected size: about 8.0M documents and 9.04B tokens in all: about 9.0B train tokens (~18 GB of
# shards) and 4.4M validation tokens (nanoGPT reports 9,035,582,198 train and 4,434,897 val tokens
# for the same fraction). Reading the nested xz archives is one thread; tokenizing uses every core.
set -euo pipefail
SELF=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/$(basename "${BASH_SOURCE[0]}")
ROOT=$(dirname "$(dirname "$SELF")")
cd "$ROOT"

INPUT=data/openwebtext/openwebtext.tar.xz FORMAT=llmc OUT=data/shards/openwebtext THREADS=0 EXTRA=()
input_set=0
while (($#)); do
  case "$1" in
    --format) FORMAT=$2; shift ;;
    --out) OUT=$2; shift ;;
    --threads) THREADS=$2; shift ;;
    --overwrite) EXTRA+=(--overwrite) ;;
    -h|--help) sed -n '2,26p' "$SELF" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "prepare_openwebtext: unknown option '$1' (see --help)" >&2; exit 2 ;;
    *) ((input_set)) && { echo "prepare_openwebtext: one input only" >&2; exit 2; }; INPUT=$1; input_set=1 ;;
  esac
  shift
done
if [[ ! -e "$INPUT" && "$INPUT" == data/openwebtext/openwebtext.tar.xz && -d data/openwebtext ]]; then
  INPUT=data/openwebtext  # the parts, or the unpacked members, in the default folder
fi
if [[ ! -e "$INPUT" ]]; then
  echo "prepare_openwebtext: $INPUT not found." >&2
  echo "Download OpenWebText's openwebtext.tar.xz and put it at data/openwebtext/openwebtext.tar.xz," >&2
  echo "or pass its path: scripts/prepare_openwebtext.sh /path/to/openwebtext.tar.xz (see --help)." >&2
  exit 2
fi

EXE=${SOPHIAGPT:-build/sophiagpt}
if [[ ! -x "$EXE" ]]; then
  bash scripts/setup.sh
  cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
  cmake --build build --target sophiagpt -j"$(nproc)"
  EXE=build/sophiagpt
fi
bash scripts/fetch_assets.sh gpt2

echo "prepare_openwebtext: $INPUT -> $OUT ($FORMAT); expect about 9.0B train tokens"
"$EXE" prepare --input "$INPUT" --output-dir "$OUT" --format "$FORMAT" --val-fraction 0.0005 --seed 2357 \
  --shard-tokens 100000000 --threads "$THREADS" "${EXTRA[@]}"
