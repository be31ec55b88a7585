#!/usr/bin/env bash
# Per-kernel GPU time of a command under Nsight Compute, on a GPU host where `ncu` reads the
# hardware counters: every kernel launch (CUDA graph nodes included) is timed on its own, with the
# clocks left as they are (--clock-control none), and scripts/dev/ncu_summary.py sums the time by
# kernel name. ncu serializes and replays the launches, so the figures are each kernel's own time,
# without the gaps between launches; compare them with the command's wall-clock figures.
#
#   scripts/dev/profile_kernels.sh OUT [--skip N] [--count M] -- COMMAND [ARGS...]
#
# OUT.csv: ncu's rows; OUT.md: the summary table (neither may exist yet: nothing is overwritten). --skip: launches not profiled first (warm-up);
# --count: launches profiled after them (default 2000). Examples (the GPT-2 124M decoder at
# batch 1 in bf16, a few tokens after the prompt; one 124M training step at micro-batch 64):
#   scripts/dev/profile_kernels.sh /tmp/sample --skip 3000 --count 1500 -- build/sophiagpt bench sample \
#     --models 124M --batches 1 --precisions bf16 --tokens 32 --reps 1 --no-baseline
#   scripts/dev/profile_kernels.sh /tmp/step --skip 2000 --count 1000 -- build/sophiagpt bench train \
#     --model 124M --micro-batch 64 --steps 2 --warmup 1 --k 10 --optimizers adamw
set -euo pipefail
die() { echo "profile_kernels: $*" >&2; exit 2; }
OUT=${1:-}; [[ -n $OUT && $OUT != -* ]] || die "usage: profile_kernels.sh OUT [--skip N] [--count M] -- COMMAND..."
shift
SKIP=0 COUNT=2000
while (($#)); do
  case "$1" in
    --skip) [[ ${2:-} =~ ^[0-9]+$ ]] || die "--skip needs a number"; SKIP=$2; shift 2 ;;
    --count) [[ ${2:-} =~ ^[0-9]+$ ]] || die "--count needs a number"; COUNT=$2; shift 2 ;;
    --) shift; break ;;
    *) die "unexpected argument '$1' (the command goes after --)" ;;
  esac
done
(($#)) || die "no command given after --"
for f in "$OUT.csv" "$OUT.md"; do
  [[ ! -e $f ]] || die "$f exists already (give another OUT, or remove it): it is not overwritten"
done
command -v ncu > /dev/null || die "ncu (Nsight Compute) is not on the PATH"
here=$(dirname "${BASH_SOURCE[0]}")
# ncu's report goes to OUT.csv (--log-file); the command's own output stays on the terminal.
ncu --csv --print-units base --clock-control none --metrics gpu__time_duration.sum \
  --launch-skip "$SKIP" --launch-count "$COUNT" --log-file "$OUT.csv" "$@"
python3 "$here/ncu_summary.py" "$OUT.csv" | tee "$OUT.md"
