#!/usr/bin/env bash
# Trains one of the Sophia paper's GPT-2 runs on OpenWebText (Liu et al. 2023, arXiv 2305.14342).
#
#   scripts/reproduce_paper.sh SIZE OPTIMIZER [--dry-run] [extra `sophiagpt train` args...]
#
#   SIZE        125m | 355m | 770m
#   OPTIMIZER   sophiag | adamw
#   --dry-run   print the command (and any problem found) without running it
#   extra args  passed to `sophiagpt train` as they are, e.g. --set eval.every=500, --device cpu
#
# What it runs: configs/gpt2_SIZE_OPTIMIZER.json (100K steps of 491,520 tokens) on the shards that
# scripts/prepare_openwebtext.sh writes (data/shards/openwebtext/train_*.bin), into the run
# directory runs/paper/SIZE_OPTIMIZER. When that directory already has a checkpoint or a log it
# adds --resume, so the same command continues from the newest checkpoint: run it in job-sized
# pieces (stop it with Ctrl-C / SIGTERM, which writes a checkpoint after the current step, or let
# the job scheduler's time limit send SIGTERM) and start it again.
#
# GPUs are counted with `nvidia-smi -L`: none -> an error unless --device cpu is among the extra
# args; one -> `sophiagpt train`; N > 1 -> `mpirun -np N --bind-to none` (plus
# --allow-run-as-root when run as root), one process per GPU (docs/multi_gpu.md; the counting and
# the mpirun line are scripts/lib/gpus.sh's).
#
# Environment: SGPT_EXE  the executable (default build/sophiagpt; built with CMake when missing)
#              SGPT_NUM_GPUS  use this GPU count instead of asking nvidia-smi
# Exit codes: 2 for bad arguments or missing inputs, otherwise the training's own exit code.
set -euo pipefail
SELF=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/$(basename "${BASH_SOURCE[0]}")
ROOT=$(dirname "$(dirname "$SELF")")
cd "$ROOT"
source scripts/lib/gpus.sh

usage() { awk 'NR > 1 && !/^#/ {exit} NR > 1' "$SELF" | sed 's/^# \{0,1\}//'; }
err() { echo "reproduce_paper: error: $*" >&2; }

if (($# >= 1)) && [[ "$1" == -h || "$1" == --help ]]; then usage; exit 0; fi
if (($# < 2)); then
  err "expected SIZE and OPTIMIZER, e.g. scripts/reproduce_paper.sh 125m sophiag (see --help)"
  exit 2
fi
SIZE=$1 OPT=$2
shift 2
case "$SIZE" in
  125m|355m|770m) ;;
  *) err "SIZE must be 125m, 355m or 770m, not '$SIZE'"; exit 2 ;;
esac
case "$OPT" in
  sophiag|adamw) ;;
  *) err "OPTIMIZER must be sophiag or adamw, not '$OPT'"; exit 2 ;;
esac

DRY=0 CPU=0 HAS_RESUME=0 OWN_DATA=0 EXTRA=()
prev=""
for a in "$@"; do
  case "$a" in
    --dry-run) DRY=1; prev=$a; continue ;;
    --config|--config=*|-c|--out-dir|--out-dir=*|-o)
      err "'$a' is set by this script (config configs/gpt2_${SIZE}_${OPT}.json, run dir runs/paper/${SIZE}_${OPT});"
      err "change single keys with --set KEY=VALUE, or call build/sophiagpt train yourself"
      exit 2 ;;
    --resume) HAS_RESUME=1 ;;
    --device=cpu) CPU=1 ;;
    data.train=*) [[ "$prev" == --set || "$prev" == -s ]] && OWN_DATA=1 ;;
    --set=data.train=*) OWN_DATA=1 ;;
  esac
  if [[ "$prev" == --device || "$prev" == -d ]] && [[ "$a" == cpu ]]; then CPU=1; fi
  EXTRA+=("$a")
  prev=$a
done

CONFIG=configs/gpt2_${SIZE}_${OPT}.json
RUN=runs/paper/${SIZE}_${OPT}
PROBLEMS=0
# problem MSG...: an error (exit 2), or in a dry run a warning, after which the command is still shown.
problem() {
  if ((DRY)); then
    echo "reproduce_paper: warning (dry run): $*" >&2; PROBLEMS=1
  else
    err "$*"; exit 2
  fi
}

[[ -f "$CONFIG" ]] || { err "$CONFIG not found"; exit 2; }

if ((!OWN_DATA)); then
  shopt -s nullglob
  shards=(data/shards/openwebtext/train_*.bin)
  vals=(data/shards/openwebtext/val_*.bin)
  shopt -u nullglob
  if ((${#shards[@]} == 0 || ${#vals[@]} == 0)); then
    problem "no OpenWebText shards in data/shards/openwebtext/ (train_*.bin and val_*.bin)." \
      "Prepare them first: put openwebtext.tar.xz in data/openwebtext/ and run scripts/prepare_openwebtext.sh" \
      "(about 9B tokens, ~18 GB of shards; see scripts/prepare_openwebtext.sh --help)"
  fi
fi

# GPUs
if [[ -n "${SGPT_NUM_GPUS:-}" ]]; then
  [[ "$SGPT_NUM_GPUS" =~ ^[0-9]+$ ]] || { err "SGPT_NUM_GPUS must be a number, not '$SGPT_NUM_GPUS'"; exit 2; }
  NGPU=$SGPT_NUM_GPUS
else
  NGPU=$(sgpt_gpu_count)
fi
if ((CPU)); then
  NGPU=0  # --device cpu: one CPU process (for several, call mpirun yourself: docs/multi_gpu.md)
elif ((NGPU == 0)); then
  problem "no GPU found (nvidia-smi -L lists none): these runs need a GPU." \
    "Add --device cpu to train on the CPU anyway (far too slow for these models except as a test)."
fi

# Executable
EXE=${SGPT_EXE:-build/sophiagpt}
if [[ ! -x "$EXE" ]]; then
  if [[ -n "${SGPT_EXE:-}" ]]; then
    err "SGPT_EXE=$SGPT_EXE is not an executable file"; exit 2
  elif ((DRY)); then
    echo "reproduce_paper: note (dry run): $EXE is missing; a real run would build it with CMake first" >&2
  else
    echo "reproduce_paper: $EXE not found, building it (cmake -S . -B build -DCMAKE_BUILD_TYPE=Release)"
    cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
    cmake --build build --target sophiagpt -j"$(nproc)"
  fi
fi

# Resume when the run directory has been used
RESUME=()
if ((!HAS_RESUME)) && [[ -d "$RUN" ]]; then
  if [[ -f "$RUN/log.jsonl" ]] || compgen -G "$RUN/model_*.bin" >/dev/null || compgen -G "$RUN/state_*.bin" >/dev/null; then
    RESUME=(--resume)
    newest=$(ls "$RUN"/model_*.bin 2>/dev/null | sed 's/.*model_\([0-9]*\)\.bin/\1/' | sort -n | tail -1 || true)
    [[ -n "$newest" ]] && newest="step $((10#$newest))"
    echo "reproduce_paper: $RUN exists: resuming (newest checkpoint: ${newest:-none, starts at step 0})"
  fi
fi

CMD=("$EXE" train --config "$CONFIG" --out-dir "$RUN" "${RESUME[@]}" "${EXTRA[@]}")
if ((NGPU > 1)); then
  if ! command -v mpirun >/dev/null 2>&1; then
    problem "$NGPU GPUs found but no mpirun on PATH (install Open MPI, or set SGPT_NUM_GPUS=1 for one GPU)"
  fi
  # Each optimizer step must split into whole micro-batches on every GPU (docs/multi_gpu.md).
  if ! msg=$(python3 - "$CONFIG" "$NGPU" "${EXTRA[@]}" <<'PY'
import json, sys
cfg, n, extra = json.load(open(sys.argv[1])), int(sys.argv[2]), sys.argv[3:]
mb, total, T = cfg["batch"]["micro_batch_size"], cfg["batch"]["total_batch_tokens"], cfg["model"]["block_size"]
for i, a in enumerate(extra):
    kv = a[len("--set="):] if a.startswith("--set=") else (a if i and extra[i - 1] in ("--set", "-s") else "")
    k, _, v = kv.partition("=")
    try:
        if k == "batch.micro_batch_size": mb = int(v)
        elif k == "batch.total_batch_tokens": total = int(v)
        elif k == "model.block_size": T = int(v)
    except ValueError:
        pass
seqs = total // T
if total % T or seqs % (n * mb):
    ok = [b for b in range(1, mb * 2 + 1) if seqs % (n * b) == 0]
    print(f"{total} tokens per step = {seqs} sequences of {T}, not a multiple of {n} GPUs x micro-batch {mb}; "
          f"pick another micro-batch with --set batch.micro_batch_size=B (B in {ok or 'none'})")
    sys.exit(1)
PY
  ); then
    problem "$msg"
  fi
  sgpt_mpirun "$NGPU"
  CMD=("${SGPT_MPIRUN[@]}" "${CMD[@]}")
fi

echo "reproduce_paper: $SIZE $OPT, ${NGPU} GPU(s)$( ((CPU)) && echo ', --device cpu'), run dir $RUN"
printf '+'; printf ' %q' "${CMD[@]}"; printf '\n'
if ((DRY)); then
  ((PROBLEMS)) && echo "reproduce_paper: dry run: the problems above would stop a real run (exit 2)" >&2
  exit 0
fi
mkdir -p "$(dirname "$RUN")"
exec "${CMD[@]}"
