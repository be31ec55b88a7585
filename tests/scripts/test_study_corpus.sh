#!/usr/bin/env bash
# Round trip of scripts/study_corpus.sh on a tiny corpus (6 TEI texts + 3 ELTeC-like documents):
# extract, prepare, pack into pieces of a tiny size limit, then unpack them one transfer at a time in
# reverse order, with a piece delivered twice, a damaged piece (detected, not kept, still listed as
# missing) and unpack repeated once complete (nothing changes). Both forms (text: unpack runs
# prepare; tokens: unpack decompresses), each checked byte for byte against the shards prepare wrote.
# reshard checked byte for byte against prepare with --shard-tokens.
#   tests/scripts/test_study_corpus.sh [SOPHIAGPT]      (ctest: study_corpus_test; needs
#                                                        data/cache/gpt2 from scripts/fetch_assets.sh)
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
export SOPHIAGPT; SOPHIAGPT=$(realpath -m "${1:-${SOPHIAGPT:-$ROOT/build/sophiagpt}}")
T=$(mktemp -d) && trap 'rm -rf "$T"' EXIT
export STUDY_CORPUS_WORK=$T/work
sc() { bash "$ROOT/scripts/study_corpus.sh" "$@"; }
fail() { echo "FAIL: $*" >&2; exit 1; }

mkdir -p "$T/xml"
for i in 1 2 3 4 5 6; do
  {
    echo "<ETS><TEMPHEAD>header $i</TEMPHEAD><EEBO><TEXT><BODY><DIV1><HEAD>Book $i</HEAD>"
    for j in $(seq 1 $((20 * i))); do echo "<P>Paragraph $j of book $i, on the $((i * j)) sheep of the parish.</P>"; done
    echo "</DIV1></BODY></TEXT></EEBO></ETS>"
  } >"$T/xml/K00000$i.000.xml"
done
python3 - "$T/eltec.jsonl.xz" <<'EOF'
import json, lzma, sys
with lzma.open(sys.argv[1], "wt") as f:
    for i in range(3):
        f.write(json.dumps({"id": f"ENG{i}", "text": f"A novel, number {i}. " * 300}) + "\n")
EOF
export ELTEC_SHA256; ELTEC_SHA256=$(sha256sum "$T/eltec.jsonl.xz" | cut -d' ' -f1)
sc extract "$T/xml" >/dev/null
sc prepare "$T/eltec.jsonl.xz" >/dev/null
shards=$(cd "$T/work/shards" && ls -- *.bin)
[[ -n $shards ]] || fail "prepare wrote no shards"

roundtrip() {  # FORM PIECE_MIB
  local form=$1 xfer=$T/xfer_$1 dest=$T/dest_$1 arrive=$T/arrive rc out
  sc pack "$xfer" --form "$form" --piece-mib "$2" >/dev/null
  mapfile -t pieces < <(cd "$xfer" && ls study-corpus.[0-9]* | sort -r)
  local n=${#pieces[@]}
  ((n >= 3)) || fail "$form: $n pieces, want at least 3"
  deliver() {  # FILE...: one transfer (a fresh folder holding the files and the manifest)
    rm -rf "$arrive" && mkdir "$arrive" && cp "$@" "$xfer/study-corpus.manifest" "$arrive/"
    set +e; out=$(sc unpack "$arrive" "$dest" 2>&1); rc=$?; set -e
  }
  for ((k = 0; k < n - 1; k++)); do
    deliver "$xfer/${pieces[k]}"
    [[ $rc == 1 && $out == *"missing $((n - k - 1)) of $n"* ]] || fail "$form: piece $k: rc $rc: $out"
  done
  deliver "$xfer/${pieces[0]}"  # again: nothing changes
  [[ $rc == 1 && $out == *"missing 1 of $n: ${pieces[n - 1]}"* ]] || fail "$form: repeat: rc $rc: $out"
  local last=${pieces[n - 1]}
  mkdir -p "$T/bad" && cp "$xfer/$last" "$T/bad/$last"
  printf 'X' | dd of="$T/bad/$last" bs=1 seek=100 conv=notrunc status=none
  deliver "$T/bad/$last"
  [[ $rc == 2 && $out == *"$last is damaged"* && $out == *"missing 1 of $n"* ]] || fail "$form: damaged: rc $rc: $out"
  deliver "$xfer/$last"
  [[ $rc == 0 && $out == *"complete"* ]] || fail "$form: last piece: rc $rc: $out"
  for s in $shards; do cmp "$T/work/shards/$s" "$dest/$s" || fail "$form: $s differs"; done
  local before; before=$(stat -c %Y "$dest"/*.bin)
  deliver "$xfer/$last"
  [[ $rc == 0 && $out == *"complete already"* ]] || fail "$form: unpack again: rc $rc: $out"
  [[ $(stat -c %Y "$dest"/*.bin) == "$before" ]] || fail "$form: unpack again rewrote the shards"
  echo "ok: $form form, $n pieces"
}
roundtrip text 0.4
roundtrip tokens 0.001

# reshard: the training shards are the bytes of prepare with --shard-tokens N over the same text
# (N = 700: several shards, documents cut across them), the validation shards those of the source
# (prepare would cut them too); bad uses refused.
(cd "$T/work" && "$SOPHIAGPT" prepare --input eltec/eltec-eng-00.jsonl.xz $(printf -- '--input %s ' text/*.jsonl.xz) \
  --output-dir "$T/direct" --val-fraction 0.01 --seed 1 --vocab "$ROOT/data/cache/gpt2" --shard-tokens 700 >/dev/null)
sc reshard "$T/work/shards" "$T/resharded" --shard-tokens 700 >/dev/null
want=$(cd "$T/direct" && ls -- train_*.bin; cd "$T/work/shards" && ls -- val_*.bin)
got=$(cd "$T/resharded" && ls -- *.bin)
(($(grep -c train_ <<<"$want") >= 3)) || fail "reshard test: want at least 3 training shards: $want"
[[ $got == "$want" ]] || fail "reshard: files $(echo $got), want $(echo $want)"
for s in $want; do
  if [[ $s == train_* ]]; then ref=$T/direct/$s; else ref=$T/work/shards/$s; fi
  cmp "$ref" "$T/resharded/$s" || fail "reshard: $s differs from $ref"
done
set +e
out=$(sc reshard "$T/work/shards" "$T/resharded" --shard-tokens 700 2>&1); rc=$?
[[ $rc == 2 && $out == *"holds .bin files already"* ]] || fail "reshard into a full folder: rc $rc: $out"
out=$(sc reshard "$T/work/shards" "$T/r2" --shard-tokens 0 2>&1); rc=$?
[[ $rc == 2 && $out == *"--shard-tokens must be"* ]] || fail "reshard --shard-tokens 0: rc $rc: $out"
mkdir -p "$T/badsrc" && cp "$T/work/shards"/*.bin "$T/badsrc/"
printf 'XXXX' | dd of="$T/badsrc/train_000000.bin" bs=1 seek=0 conv=notrunc status=none
out=$(sc reshard "$T/badsrc" "$T/r3" --shard-tokens 700 2>&1); rc=$?
[[ $rc == 2 && $out == *"not an llm.c shard"* ]] || fail "reshard of a bad shard: rc $rc: $out"
! compgen -G "$T/r3/*" >/dev/null || fail "reshard of a bad shard left files: $(ls "$T/r3")"
set -e
echo "ok: reshard"

rm -rf "$T/arrive" && mkdir "$T/arrive" && cp "$T/xfer_text/study-corpus.000" "$T/arrive/"
set +e; out=$(sc unpack "$T/arrive" "$T/dest_new" 2>&1); rc=$?; set -e
[[ $rc == 2 && $out == *"no study-corpus.manifest"* ]] || fail "piece without manifest: rc $rc: $out"
echo "PASS"
