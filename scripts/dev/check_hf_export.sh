#!/usr/bin/env bash
# The Hugging Face export against transformers itself (scripts/dev/check_hf_export.py), on a machine
# that has torch, transformers and safetensors (no GPU needed: the checks run on the CPU). Trains
# four tiny models on the CPU (configs/tiny_cpu.json, 60 steps: biases on/off x
# scale_attn_by_inverse_layer_idx on/off), exports each with `export --format hf` (and the last
# one also with --dtype bf16), and checks that transformers loads each folder with no extra
# argument, that its logits equal `sophiagpt logits` within 1e-3 of the logit scale, and that its
# tokenizer encodes and decodes as `sophiagpt tokenize` does. One PASS/FAIL line per check.
#
#   scripts/dev/check_hf_export.sh SOPHIAGPT WORKDIR
#
# Needs data/shards/sotu (scripts/demo.sh prepares it; this script prepares it from
# data/cache/sotu when only that is there) and the GPT-2 vocabulary in data/cache/gpt2
# (scripts/fetch_assets.sh). Exit status 0 when every check passes, 1 otherwise, 2 on bad usage.
set -uo pipefail
usage="usage: scripts/dev/check_hf_export.sh SOPHIAGPT WORKDIR"
bin=$(realpath "${1:?$usage}") || exit 2
work=$(realpath -m "${2:?$usage}") || exit 2
cd "$(dirname "$0")/../.."
[[ -x $bin ]] || { echo "check_hf_export: '$bin' is not an executable" >&2; exit 2; }
python3 -c "import numpy, torch, transformers, safetensors" ||
  { echo "check_hf_export: python3 needs numpy, torch, transformers and safetensors" >&2; exit 2; }

shards=data/shards/sotu
if ! compgen -G "$shards/val_*.bin" >/dev/null; then
  if compgen -G "data/cache/sotu/*.txt" >/dev/null; then
    "$bin" prepare --input data/cache/sotu --output-dir "$shards" --val-fraction 0.05 --seed 1337 --overwrite ||
      { echo "check_hf_export: preparing $shards failed" >&2; exit 2; }
  else
    echo "check_hf_export: no $shards/val_*.bin: run scripts/fetch_assets.sh gpt2 sotu, then scripts/demo.sh" >&2
    exit 2
  fi
fi
val=$(ls "$shards"/val_*.bin | head -1)

mkdir -p "$work"
fail=0
steps=60
for variant in bias0_scale0 bias0_scale1 bias1_scale0 bias1_scale1; do
  case $variant in
    bias0_scale0) bias=false scale=false ;;
    bias0_scale1) bias=false scale=true ;;
    bias1_scale0) bias=true scale=false ;;
    bias1_scale1) bias=true scale=true ;;
  esac
  dir=$work/$variant
  rm -rf "$dir"
  mkdir -p "$dir"
  echo "== $variant: model.bias=$bias model.scale_attn_by_inverse_layer_idx=$scale ($steps steps on the CPU)"
  if ! "$bin" train --config configs/tiny_cpu.json --device cpu --quiet \
      --set model.bias=$bias --set model.scale_attn_by_inverse_layer_idx=$scale \
      --set schedule.max_steps=$steps --set schedule.lr_decay_iters=$steps --set eval.every=0 \
      --set "data.train=$shards/train_*.bin" --set "data.val=$shards/val_*.bin" \
      --out-dir "$dir/run" >"$dir/train.log" 2>&1; then
    echo "FAIL [$variant] train: see $dir/train.log"; fail=1; continue
  fi
  if ! "$bin" export --run "$dir/run" --format hf --out "$dir/hf"; then
    echo "FAIL [$variant] export"; fail=1; continue
  fi
  extra=()
  if [[ $variant == bias1_scale1 ]]; then
    if "$bin" export --run "$dir/run" --format hf --dtype bf16 --out "$dir/hf_bf16"; then
      extra=(--hf-bf16 "$dir/hf_bf16")
    else
      echo "FAIL [$variant] export --dtype bf16"; fail=1
    fi
  fi
  python3 scripts/dev/check_hf_export.py --sophiagpt "$bin" --run "$dir/run" --hf "$dir/hf" --shard "$val" \
    --name "$variant" "${extra[@]}" || fail=1
done
echo "check_hf_export: $([[ $fail == 0 ]] && echo "all checks passed" || echo "FAILURES")"
exit $fail
