#!/usr/bin/env bash
# The AdamW vs Sophia-G study (docs/study.md): data, the grid of runs, the table.
#
#   scripts/study.sh prepare [CORPUS_DIR]
#       Checks the corpora (SHA256SUMS in CORPUS_DIR) and tokenizes ELTeC-eng and ECCO-TCP parts 0
#       and 4 into data/shards/study/{train,val}_*.bin with a fixed held-out validation split (3% of
#       the documents, seed 1337). CORPUS_DIR defaults to data/cache/corpora.
#   scripts/study.sh run PLAN [--gpus N] [--per-gpu M] [--runs DIR] [--deadline SECONDS] [--kept KDIR]...
#       Runs every line of PLAN (configs/study/*.plan: `NAME CONFIG [key=value ...]`) that is not
#       complete yet (DIR/NAME/done, or KDIR/NAME/done for a --kept folder: the finished runs kept
#       in docs/study/runs*, so that a fresh host does not run them again), M runs per GPU at a time (default 1; small models leave a GPU mostly idle, and
#       runs sharing a GPU give the same bits as alone, docs/study.md), N GPUs (default: the GPUs
#       nvidia-smi lists, 1 without it). Runs left unfinished (the deadline: SIGTERM, the trainer writes a checkpoint) resume
#       from their newest checkpoint the next time. Run directories: DIR/NAME (default runs/study).
#   scripts/study.sh next PLAN_OUT [--runs DIR]
#       Writes the second phase (warmup variant and two more seeds of the best setting of each
#       optimizer) from the finished lr/rho sweep in DIR (scripts/study_table.py --next); each line
#       starts from the best run's own DIR/NAME/config.json, so it works for any model size. An
#       optimizer whose best learning rate is the highest or lowest it tried gets one more learning
#       rate beyond it instead (run that, then `next` again).
#   scripts/study.sh keep DEST [--runs DIR] [--every N]
#       Copies each finished run of DIR not yet in DEST into DEST/NAME as the study keeps them
#       (docs/study/runs*): config.json, `done`, and log.jsonl with every N-th train record (default
#       20) and every other record whole (scripts/study_keep.py). Run it before the host's folders
#       are lost; then commit DEST.
#   scripts/study.sh table [--runs DIR]
#       The results table (scripts/study_table.py), markdown on stdout.
#   scripts/study.sh plots OUT_DIR [--runs DIR]
#       OUT_DIR/lr_sweep.png (final validation loss against lr, per optimizer and rho) and
#       OUT_DIR/best_curves.png (validation loss against tokens of each optimizer's best runs),
#       with gnuplot.
set -uo pipefail
cd "$(dirname "$0")/.."
EXE=${SOPHIAGPT:-build/sophiagpt}
RUNS=runs/study
cmd=${1:-}
shift || true

case "$cmd" in
prepare)
  set -e
  src=${1:-data/cache/corpora}
  (cd "$src" && sha256sum -c SHA256SUMS)
  "$EXE" prepare --input "$src/eltec-eng-00.jsonl.xz" --input "$src/ecco-tcp-00.jsonl.xz" \
    --input "$src/ecco-tcp-04.jsonl.xz" --output-dir data/shards/study --val-fraction 0.03 --seed 1337 \
    --overwrite
  exit 0
  ;;
run) ;;
next)
  out=$1; shift
  [[ ${1:-} == --runs ]] && RUNS=$2
  python3 scripts/study_table.py --runs "$RUNS" --next >"$out"
  exit $?
  ;;
keep)
  python3 scripts/study_keep.py "$@"
  exit $?
  ;;
table)
  [[ ${1:-} == --runs ]] && RUNS=$2
  python3 scripts/study_table.py --runs "$RUNS"
  exit $?
  ;;
plots)
  set -e
  od=$1; shift
  [[ ${1:-} == --runs ]] && RUNS=$2
  mkdir -p "$od"
  dat=$(mktemp)
  python3 scripts/study_table.py --runs "$RUNS" --sweep-dat "$dat"
  model=$(sed -n 's/^# model: //p' "$dat")
  series=$(awk '!/^#/ {print $1 "_" $2}' "$dat" | sort -u)
  plot="" pts=(7 6 5 4 9 8 11 10) i=0
  for s in $series; do
    opt=${s%_*} rho=${s#*_}
    case $opt in  # study_table.py's optimizer: name, "+hbc" for h bias-corrected
      adamw) label="AdamW" ;;
      sophiag) label="Sophia-G rho $rho" ;;
      sophiag+hbc) label="Sophia-G, h bias-corrected, rho $rho" ;;
      sophiah) label="Sophia-H" ;;
      *) label=$opt ;;
    esac
    # a point type per series (filled, open, ...), so series that meet stay told apart
    plot+="${plot:+, }'$dat' using (strcol(1) eq '$opt' && \$2 == $rho ? \$3 : 1/0):4 with linespoints lw 2 pt ${pts[i++ % 8]} ps 1.3 title '$label'"
  done
  gnuplot <<GP
set terminal pngcairo size 900,600 font ',11'
set output '$od/lr_sweep.png'
set logscale x
set format x '%.0e'
set xlabel 'peak learning rate'
set ylabel 'final validation loss (unfinished or diverged runs left out)'
set title 'GPT-2 $model: final validation loss against the learning rate'
set key below
set offsets 0, 0, graph 0.05, graph 0.05
set grid
plot $plot
GP
  rm -f "$dat"
  mapfile -t best < <(python3 scripts/study_table.py --runs "$RUNS" --best-dirs)
  python3 scripts/plot.py "${best[@]}" --x tokens --no-train -o "$od/best_curves.png" \
    --title "Validation loss of the best setting of each optimizer (all seeds)"
  exit 0
  ;;
*) awk 'NR > 1 && !/^#/ {exit} NR > 1 {sub(/^# ?/, ""); print}' "$0"; exit 2 ;;  # the header
esac

plan=$1; shift
source scripts/lib/gpus.sh
NGPU=$(sgpt_gpu_count)
((NGPU > 0)) || NGPU=1
DEADLINE=0
PER_GPU=1
KEPT=()
while (($#)); do
  case "$1" in
    --gpus) NGPU=$2; shift ;;
    --per-gpu) PER_GPU=$2; shift ;;
    --runs) RUNS=$2; shift ;;
    --deadline) DEADLINE=$2; shift ;;
    --kept) [[ -d ${2:-} ]] || { echo "study.sh: --kept: no folder '${2:-}'" >&2; exit 2; }
            KEPT+=("$2"); shift ;;
    *) echo "study.sh: unknown option '$1'" >&2; exit 2 ;;
  esac
  shift
done
[[ -f $plan ]] || { echo "study.sh: no plan file '$plan'" >&2; exit 2; }
mkdir -p "$RUNS"
START=$SECONDS

# complete NAME: the run wrote its final record (a checkpoint at max_steps), here or in a --kept
# folder.
complete() {
  [[ -f $RUNS/$1/done ]] && return 0
  local k
  for k in "${KEPT[@]}"; do [[ -f $k/$1/done ]] && return 0; done
  return 1
}

run_one() {  # GPU NAME CONFIG [key=value ...]
  local gpu=$1 name=$2 config=$3; shift 3
  local dir=$RUNS/$name sets=() kv
  for kv in "$@"; do sets+=(--set "$kv"); done
  local resume=()
  [[ -f $dir/config.json ]] && resume=(--resume)
  echo "[gpu $gpu] $name: start ($(date +%H:%M:%S))"
  CUDA_VISIBLE_DEVICES=$gpu "$EXE" train --config "$config" "${sets[@]}" --out-dir "$dir" -q "${resume[@]}" \
    </dev/null >>"$dir.out" 2>&1 &
  local pid=$!
  while kill -0 $pid 2>/dev/null; do
    if ((DEADLINE > 0 && SECONDS - START > DEADLINE)); then kill -TERM $pid; wait $pid; break; fi
    sleep 2
  done
  wait $pid
  local rc=$?
  # exit 0: finished; anything else: left to resume (5: stopped by the signal) or failed
  if ((rc == 0)); then touch "$dir/done"; fi
  echo "[gpu $gpu] $name: exit $rc ($(date +%H:%M:%S))"
}

queue() {  # SLOT: runs lines i with i % (NGPU * PER_GPU) == SLOT, on GPU SLOT % NGPU
  local slot=$1 gpu=$(($1 % NGPU)) i=0 line
  while IFS= read -r line; do
    [[ -z $line || $line == \#* ]] && continue
    if ((i++ % (NGPU * PER_GPU) == slot)); then
      # shellcheck disable=SC2086
      set -- $line
      complete "$1" && { echo "[gpu $gpu] $1: complete"; continue; }
      ((DEADLINE > 0 && SECONDS - START > DEADLINE)) && { echo "[gpu $gpu] $1: not started (deadline)"; continue; }
      run_one "$gpu" "$@"
    fi
  done <"$plan"
}

[[ $PER_GPU =~ ^[1-9][0-9]*$ ]] || { echo "study.sh: --per-gpu takes a whole number >= 1, not '$PER_GPU'" >&2; exit 2; }
for ((s = 0; s < NGPU * PER_GPU; ++s)); do queue $s & done
wait
echo "study.sh: $(grep -cv -e '^#' -e '^$' "$plan") runs in $plan, $(ls "$RUNS"/*/done 2>/dev/null | wc -l) complete in $RUNS"
