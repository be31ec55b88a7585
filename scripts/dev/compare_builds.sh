#!/usr/bin/env bash
# Two builds of sophiagpt side by side, for a change that must not alter results or speed:
#   1. the same fixed fp32 training (configs/tiny_cpu.json on data/shards/sotu: Sophia-G with a GNB
#      pass every 4 steps and AdamW, 24 steps, evaluations, a checkpoint at 12) with each build, on
#      the CPU and, where a GPU is usable, on the GPU: the model and state files must be
#      byte-identical and log.jsonl's losses equal;
#   2. with a GPU and BENCH=1 (default): `bench train` of both builds, interleaved A B A B, on the
#      same GPU ($BENCH_ARGS, default a 124M model at micro-batch 64 x 1024, bf16).
# Usage: scripts/dev/compare_builds.sh OLD_EXE NEW_EXE OUT_DIR
# Exit status: 0 when every pair of runs agrees, 1 otherwise. Prints one line per comparison.
set -uo pipefail
cd "$(dirname "$0")/../.."
old=$1 new=$2 out=$3
mkdir -p "$out"
compgen -G 'data/shards/sotu/train_*.bin' >/dev/null ||
  { echo "compare_builds: data/shards/sotu is missing (scripts/demo.sh prepares it)" >&2; exit 2; }

devices=(cpu)
if command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1; then devices+=(cuda); fi
status=0
for dev in "${devices[@]}"; do
  for opt in sophiag adamw; do
    for side in old new; do
      exe=$old; [[ $side == new ]] && exe=$new
      dir=$out/$dev-$opt-$side
      rm -rf "$dir"
      "$exe" train --config configs/tiny_cpu.json --out-dir "$dir" --quiet \
        --set device="$dev" --set precision=fp32 --set optimizer.name="$opt" \
        --set schedule.max_steps=24 --set optimizer.hessian_interval=4 --set eval.every=8 \
        --set checkpoint.every=12 --set checkpoint.keep=4 >"$dir.out" 2>&1 ||
        { echo "FAIL $dev $opt: the $side build exited $? ($dir.out)"; status=1; continue 2; }
    done
    same=yes
    files=$(cd "$out/$dev-$opt-old" && ls model_*.bin state_*.bin 2>/dev/null)
    [[ $files == "$(cd "$out/$dev-$opt-new" && ls model_*.bin state_*.bin 2>/dev/null)" && -n $files ]] ||
      same="no (different checkpoint files)"
    for f in $files; do cmp -s "$out/$dev-$opt-old/$f" "$out/$dev-$opt-new/$f" || same="no ($f)"; done
    # Losses of every record (train, val, gnb) in order; times and speeds differ by nature.
    losses() { grep -oE '"(loss|val_loss|gnb_loss|grad_norm|gnb_grad_norm|lr|win_rate)":[^,}]*' "$1/log.jsonl"; }
    if ! diff -q <(losses "$out/$dev-$opt-old") <(losses "$out/$dev-$opt-new") >/dev/null; then
      same="no (log.jsonl losses)"
    fi
    n=$(losses "$out/$dev-$opt-new" | wc -l)
    echo "$dev $opt fp32: $(echo $files | wc -w) checkpoint files and $n logged values identical: $same"
    [[ $same == yes ]] || status=1
  done
done

if [[ ${BENCH:-1} == 1 && " ${devices[*]} " == *" cuda "* ]]; then
  args=${BENCH_ARGS:---model 124M --micro-batch 64 --steps 20 --warmup 10}
  for round in 1 2; do
    for side in old new; do
      exe=$old; [[ $side == new ]] && exe=$new
      # shellcheck disable=SC2086
      "$exe" bench train $args >"$out/bench-$side-$round.txt" 2>&1
      echo "bench $side round $round:"
      grep -E '^\| (adamw|sophiag)' "$out/bench-$side-$round.txt" | cut -d'|' -f2-8
    done
  done
fi
exit $status
