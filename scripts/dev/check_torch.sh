#!/usr/bin/env bash
# End-to-end check against PyTorch (scripts/dev/check_torch.py), on a machine with a GPU and PyTorch:
# trains three small models on the demo shards with the GPU backend (the demo config as it is: no biases,
# scaled attention, head size 32; with biases and no layer scaling; head size 64), evaluates each
# with sophiagpt (GPU fp32, CPU fp32, GPU bf16 with each attention implementation) and compares
# every figure with PyTorch's float64 loss of the same model file on the same batches.
#
#   scripts/dev/check_torch.sh SOPHIAGPT [OUT]     (default OUT: check-torch)
#
# Needs data/shards/sotu (scripts/demo.sh prepares it). Tolerances on the mean loss: fp32 1e-5
# relative (the same model in float32 vs float64: rounding only); bf16 2^-9 ~ 2e-3 relative, one
# bf16 rounding of the loss itself (weights and activations are each rounded to bf16 once per
# stored value; their errors have random signs and average out over the 8,192 positions).
set -uo pipefail
cd "$(dirname "$0")/../.."
bin=${1:?usage: scripts/dev/check_torch.sh SOPHIAGPT [OUT]}
out=${2:-check-torch}
mkdir -p "$out"
fail=0
val=data/shards/sotu/val_000000.bin
B=8 batches=8

check() {  # name, rtol, sophiagpt eval arguments...
  local name=$1 rtol=$2; shift 2
  local line loss
  line=$("$bin" eval "$@" --batches $batches 2>&1 | grep "^val loss")
  loss=$(awk '{print $3}' <<<"$line")
  echo "== $name: sophiagpt $line"
  if [[ -z $loss ]]; then echo "   no loss printed"; fail=1; return; fi
  python3 scripts/dev/check_torch.py --model "$model" --shard $val --B $B --batches $batches \
    --expect "$loss" --rtol "$rtol" | sed 's/^/   /' || fail=1
}

for variant in demo bias_noscale hs64; do
  run=$out/$variant
  case $variant in
    demo) sets=() ;;
    bias_noscale) sets=(--set model.bias=true --set model.scale_attn_by_inverse_layer_idx=false) ;;
    hs64) sets=(--set model.n_head=2) ;;
  esac
  rm -rf "$run"
  "$bin" train --config configs/demo.json --device cuda --quiet "${sets[@]}" \
    --set schedule.max_steps=200 --set schedule.lr_decay_iters=200 --out-dir "$run" >/dev/null ||
    { echo "train $variant failed"; fail=1; continue; }
  model=$(ls "$run"/model_*.bin | tail -1)
  check "$variant gpu fp32" 1e-5 --run "$run" --device cuda
  check "$variant cpu fp32" 1e-5 --run "$run" --device cpu
  check "$variant gpu bf16 own attention" 2e-3 --run "$run" --device cuda \
    --set precision='"bf16"' --set attention='"own"'
  check "$variant gpu bf16 cuDNN attention" 2e-3 --run "$run" --device cuda \
    --set precision='"bf16"' --set attention='"cudnn"'
done
echo "check_torch: $([[ $fail == 0 ]] && echo all within tolerance || echo FAILURES)"
exit $fail
