#!/usr/bin/env bash
# The long-horizon study's corpus (docs/study_corpus.md): ECCO-TCP (all its texts that parse, 3,097
# of 3,101) + ELTeC-eng, tokenized into llm.c shards, and moved to a training host through
# size-limited transfers.
#
#   scripts/study_corpus.sh extract SRC
#       SRC: a git repository of Text-Creation-Partnership/ECCO-TCP (bare or not) or a folder of
#       its TEI .xml files -> WORK/text/ecco-tcp-full-NN.jsonl.xz + SHA256SUMS (tei_to_jsonl.py;
#       a text that does not parse is reported and skipped).
#   scripts/study_corpus.sh prepare [ELTEC]
#       `sophiagpt prepare` over ELTEC (default data/cache/corpora/eltec-eng-00.jsonl.xz, sha256
#       checked) and the ECCO-TCP parts -> WORK/shards/{train,val}_NNNNNN.bin + manifest.json,
#       a document-level validation split (--val-fraction 0.01 --seed 1).
#   scripts/study_corpus.sh pack DIR [--form tokens|text] [--piece-mib N]
#       Writes DIR/study-corpus.NNN (pieces of at most N MiB, default 56) and
#       DIR/study-corpus.manifest (each piece's size and sha256, the whole payload's, and the sha256
#       of every shard unpack must produce). tokens (the default, the denser form as measured): the
#       shards, xz -9; text: the xz JSON Lines parts + the GPT-2 vocabulary, tokenized by unpack.
#   scripts/study_corpus.sh unpack DIR DEST
#       On the training host, once per arriving piece (any order; calling it again is harmless):
#       checks each piece in DIR against the manifest (DIR must hold study-corpus.manifest, or an
#       earlier call must have seen it), keeps the good ones in DEST/.incoming and says which are
#       still missing; once all are there, it rebuilds the payload, writes the shards into DEST
#       (text form: `sophiagpt prepare`, same options) and checks their sha256.
#       Exit 0: DEST complete; 1: pieces still missing; 2: an error (a damaged piece, ...).
#   scripts/study_corpus.sh reshard SRC OUT --shard-tokens N
#       The training tokens of SRC (a complete shard folder: DEST of unpack, or WORK/shards) cut
#       into OUT/train_NNNNNN.bin of N tokens each (the last one shorter): the same bytes as
#       prepare's training shards with --shard-tokens N over the same text (prepare cuts its token
#       stream every N tokens), without needing the text. The validation shards are copied
#       unchanged (the same validation set). Smaller shards let a run train on a part of the
#       split (a glob of some of them: the repetition check of configs/study/PLAN.md); they do not
#       mix a pass better (docs/study.md, "The data order"). OUT must hold no .bin.
#   scripts/study_corpus.sh measure
#       The candidate forms' sizes: xz text payload; xz -9 and zstd -19 --long of the shards.
#
# WORK: $STUDY_CORPUS_WORK, default data/cache/study_corpus. SOPHIAGPT: the binary (default
# build/sophiagpt). ELTEC_SHA256 overrides the pinned checksum (for tests).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WORK=$(realpath -m "${STUDY_CORPUS_WORK:-$ROOT/data/cache/study_corpus}")
EXE=${SOPHIAGPT:-$ROOT/build/sophiagpt}
[[ $EXE != */* ]] || EXE=$(realpath -m "$EXE")
ELTEC_SHA256=${ELTEC_SHA256:-50c4b411a50b3408a10c2b728eabb65a3b3529c11805139be643f74f9e2f2ec2}
PREPARE_OPTS=(--val-fraction 0.01 --seed 1)
NAME=study-corpus
die() { echo "study_corpus: error: $*" >&2; exit 2; }
sha() { sha256sum "$1" | cut -d' ' -f1; }
# xz -9 and xz -d as filters, with Python's lzma (the same liblzma): no xz command needed
xz_c() { python3 -c 'import lzma, shutil, sys
with lzma.open(sys.stdout.buffer, "wb", preset=9) as w: shutil.copyfileobj(sys.stdin.buffer, w)'; }
xz_dc() { python3 -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.stdin.buffer), sys.stdout.buffer)'; }
field() { awk -v k="$1" '$1 == k {print $2}' "$2"; }  # KEY MANIFEST
inputs() { ins=(); for f in "$@"; do ins+=(--input "$f"); done; }  # -> ins: --input F for each F

cmd=${1:-}; shift || true
case "$cmd" in
extract)
  src=${1:?usage: study_corpus.sh extract SRC}
  [[ -e $src ]] || die "$src: not found"
  if git --git-dir "$src" rev-parse -q --verify HEAD >/dev/null 2>&1; then from=(--git-dir "$src")
  elif git -C "$src" rev-parse -q --verify HEAD >/dev/null 2>&1; then from=(--git-dir "$src/.git")
  else from=(--input "$src"); fi
  mkdir -p "$WORK/text"
  python3 "$ROOT/scripts/tei_to_jsonl.py" "${from[@]}" --out "$WORK/text" --prefix ecco-tcp-full \
    --skip-bad --overwrite
  ;;
prepare)
  eltec=${1:-$ROOT/data/cache/corpora/eltec-eng-00.jsonl.xz}
  [[ -f $eltec ]] || die "$eltec: not found"
  [[ $(sha "$eltec") == "$ELTEC_SHA256" ]] || die "$eltec: sha256 is not $ELTEC_SHA256"
  (cd "$WORK/text" && sha256sum --quiet -c SHA256SUMS) || die "$WORK/text: run extract first"
  mkdir -p "$WORK/eltec" && cp -f "$eltec" "$WORK/eltec/eltec-eng-00.jsonl.xz"
  cd "$WORK"  # relative paths in manifest.json
  inputs eltec/eltec-eng-00.jsonl.xz text/*.jsonl.xz
  "$EXE" prepare "${ins[@]}" --output-dir shards "${PREPARE_OPTS[@]}" --vocab "$ROOT/data/cache/gpt2" \
    --overwrite
  ;;
pack)
  out=${1:?usage: study_corpus.sh pack DIR [--form tokens|text] [--piece-mib N]}; shift
  form=tokens mib=56
  while (($#)); do
    case $1 in
      --form) form=${2:-}; shift 2 ;;
      --piece-mib) mib=${2:-}; shift 2 ;;
      *) die "pack: unknown option $1" ;;
    esac
  done
  [[ $form == text || $form == tokens ]] || die "--form must be text or tokens"
  piece=$(awk -v m="$mib" 'BEGIN { b = int(m * 1048576); print (b > 0 ? b : "") }')
  [[ -n $piece ]] || die "--piece-mib must be a positive number"
  [[ -f $WORK/shards/manifest.json ]] || die "$WORK/shards: run prepare first"
  mkdir -p "$out" && rm -f "$out/$NAME".*
  stage=$(mktemp -d) && trap 'rm -rf "$stage"' EXIT
  tarc=(tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 -c)
  if [[ $form == text ]]; then
    mkdir "$stage/p" "$stage/p/gpt2"
    cp "$WORK"/eltec/*.jsonl.xz "$WORK"/text/*.jsonl.xz "$stage/p/"
    cp "$ROOT"/data/cache/gpt2/{encoder.json,vocab.bpe} "$stage/p/gpt2/"
    "${tarc[@]}" -f "$stage/payload" -C "$stage/p" .
  else
    (cd "$WORK/shards" && "${tarc[@]}" -f - manifest.json ./*.bin) | xz_c >"$stage/payload"
  fi
  split -b "$piece" -d -a 3 "$stage/payload" "$out/$NAME."
  {
    echo "# $NAME: scripts/study_corpus.sh unpack DIR DEST reassembles these pieces"
    echo "form $form"
    echo "payload_bytes $(stat -c %s "$stage/payload")"
    echo "payload_sha256 $(sha "$stage/payload")"
    echo "prepare ${PREPARE_OPTS[*]}"
    for f in "$out/$NAME".[0-9]*; do echo "piece $(basename "$f") $(stat -c %s "$f") $(sha "$f")"; done
    for f in "$WORK"/shards/*.bin; do echo "shard $(basename "$f") $(stat -c %s "$f") $(sha "$f")"; done
  } >"$out/$NAME.manifest"
  grep -E '^(form|payload_bytes|piece)' "$out/$NAME.manifest"
  ;;
unpack)
  in=${1:?usage: study_corpus.sh unpack DIR DEST}; dest=${2:?usage: study_corpus.sh unpack DIR DEST}
  [[ -d $in ]] || die "$in: not a folder"
  inc=$dest/.incoming; mkdir -p "$inc"
  check_shards() { (cd "$dest" && awk '$1 == "shard" {print $4 "  " $2}' "$m" | sha256sum --quiet -c); }
  if [[ -f $in/$NAME.manifest ]] && ! cmp -s "$in/$NAME.manifest" "$inc/$NAME.manifest"; then
    [[ ! -f $inc/$NAME.manifest ]] || echo "study_corpus: a new manifest: earlier pieces dropped"
    rm -rf "$inc" "$dest/.complete" && mkdir -p "$inc" && cp "$in/$NAME.manifest" "$inc/"
  fi
  m=$(cd "$inc" && pwd)/$NAME.manifest  # absolute: check_shards reads it from inside $dest
  [[ -f $m ]] || die "no $NAME.manifest in $in (give it with the pieces)"
  if [[ -f $dest/.complete ]] && [[ $(cat "$dest/.complete") == "$(field payload_sha256 "$m")" ]]; then
    check_shards || die "$dest: shards changed since they were unpacked"
    echo "study_corpus: $dest complete already ($(grep -c '^shard' "$m") shards verified)"; exit 0
  fi
  bad=0
  while read -r _ p size sum; do
    [[ -f $in/$p && ! -f $inc/$p ]] || continue
    if [[ $(stat -c %s "$in/$p") == "$size" && $(sha "$in/$p") == "$sum" ]]; then
      cp "$in/$p" "$inc/$p.tmp" && mv "$inc/$p.tmp" "$inc/$p" && echo "study_corpus: $p ok"
    else
      echo "study_corpus: error: $in/$p is damaged (size or sha256 differ from the manifest)" >&2; bad=1
    fi
  done < <(grep '^piece ' "$m")
  missing=$(grep '^piece ' "$m" | while read -r _ p _ _; do [[ -f $inc/$p ]] || echo "$p"; done)
  if [[ -n $missing ]]; then
    echo "study_corpus: missing $(wc -l <<<"$missing") of $(grep -c '^piece ' "$m"): $(tr '\n' ' ' <<<"$missing")"
    exit $((bad ? 2 : 1))
  fi
  payload=$inc/payload
  grep '^piece ' "$m" | while read -r _ p _ _; do cat "$inc/$p"; done >"$payload"
  [[ $(sha "$payload") == "$(field payload_sha256 "$m")" ]] || die "the joined payload's sha256 differs"
  rm -rf "$inc/p" && mkdir "$inc/p"
  if [[ $(field form "$m") == text ]]; then
    tar -x -f "$payload" -C "$inc/p"
    inputs "$inc/p/eltec-eng-00.jsonl.xz" "$inc"/p/ecco-tcp-full-*.jsonl.xz
    read -ra opts <<<"$(grep '^prepare ' "$m" | cut -d' ' -f2-)"
    "$EXE" prepare "${ins[@]}" --output-dir "$dest" "${opts[@]}" --vocab "$inc/p/gpt2" --overwrite
  else
    xz_dc <"$payload" | tar -x -m -C "$dest"
  fi
  check_shards || die "$dest: the shards differ from the manifest"
  field payload_sha256 "$m" >"$dest/.complete"
  rm -rf "$inc/p" "$payload" "$inc"/"$NAME".[0-9]*
  echo "study_corpus: $dest complete: $(grep -c '^shard' "$m") shards verified"
  ;;
reshard)
  src=${1:?usage: study_corpus.sh reshard SRC OUT --shard-tokens N}
  out=${2:?usage: study_corpus.sh reshard SRC OUT --shard-tokens N}; shift 2
  n=""
  while (($#)); do
    case $1 in
      --shard-tokens) n=${2:-}; shift 2 ;;
      *) die "reshard: unknown option $1" ;;
    esac
  done
  [[ $n =~ ^[1-9][0-9]*$ ]] && ((n <= 2147483647)) || die "reshard: --shard-tokens must be in [1, 2^31-1]"
  [[ -d $src ]] || die "$src: not a folder"
  compgen -G "$src/train_*.bin" >/dev/null || die "$src: no train_*.bin"
  ! compgen -G "$out/*.bin" >/dev/null || die "$out: holds .bin files already (nothing is overwritten)"
  mkdir -p "$out"
  python3 - "$src" "$out" "$n" <<'EOF' || die "reshard: failed (nothing written to $out)"
import glob, os, shutil, struct, sys
src, out, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
MAGIC, VERSION, HEADER = 20240520, 1, 1024
written = []
def header(count):
    return struct.pack("<3i", MAGIC, VERSION, count) + bytes(HEADER - 12)
def shard(path):  # the token bytes of an llm.c shard, its header checked
    with open(path, "rb") as f:
        h = f.read(HEADER)
        if len(h) < HEADER: sys.exit(f"study_corpus: error: {path}: shorter than the llm.c header")
        magic, version, count = struct.unpack("<3i", h[:12])
        if magic != MAGIC or version != VERSION: sys.exit(f"study_corpus: error: {path}: not an llm.c shard")
        body = f.read()
        if len(body) != 2 * count: sys.exit(f"study_corpus: error: {path}: {len(body)} token bytes, header says {count} tokens")
        return body
try:
    buf, k = bytearray(), 0
    def flush(part):
        global k
        path = os.path.join(out, f"train_{k:06d}.bin")
        with open(path + ".tmp", "wb") as f:
            f.write(header(len(part) // 2)); f.write(part)
        written.append(path); k += 1
    for p in sorted(glob.glob(os.path.join(src, "train_*.bin"))):
        buf += shard(p)
        while len(buf) >= 2 * n:
            flush(bytes(buf[:2 * n])); del buf[:2 * n]
    if buf: flush(bytes(buf))
    for p in sorted(glob.glob(os.path.join(src, "val_*.bin"))):
        dst = os.path.join(out, os.path.basename(p))
        shard(p)  # checked, then copied byte for byte
        shutil.copyfile(p, dst + ".tmp")
        written.append(dst)
    for p in written: os.replace(p + ".tmp", p)
    print(f"study_corpus: {out}: {k} training shards of at most {n} tokens, "
          f"{len(written) - k} validation shard(s) copied")
except BaseException:
    for p in written:
        for q in (p, p + ".tmp"):
            if os.path.exists(q): os.remove(q)
    raise
EOF
  ;;
measure)
  t=$(mktemp -d) && trap 'rm -rf "$t"' EXIT
  echo "text, xz JSON Lines (no vocabulary, no tar): $(cat "$WORK"/{eltec,text}/*.jsonl.xz | wc -c) bytes"
  cat "$WORK"/shards/*.bin >"$t/tokens"
  echo "tokens raw: $(stat -c %s "$t/tokens") bytes"
  TIMEFORMAT='  %R s'
  time (echo "tokens xz -9: $(xz_c <"$t/tokens" | wc -c) bytes")
  if command -v zstd >/dev/null; then
    time (echo "tokens zstd -19 --long=27: $(zstd -19 --long=27 -T1 -q -c "$t/tokens" | wc -c) bytes")
  else echo "tokens zstd: no zstd command (apt-get install zstd)"; fi
  ;;
*)
  sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
  [[ -z $cmd ]] || die "unknown command '$cmd'"
  ;;
esac
