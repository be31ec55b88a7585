#!/usr/bin/env bash
# Runs the official Sophia trainer (github.com/Liuhong99/Sophia, train_sophiag.py, as a separate
# program: nothing of it is part of sophiagpt) and sophiagpt on the same tokens with the same
# recipe, and records both programs' own metrics side by side (docs/study.md, "Agreement with the
# official trainer"). Needs a machine with a GPU and PyTorch.
#
#   scripts/dev/official_compare.sh OFFICIAL_DIR OUT_DIR RUN...
#
# OFFICIAL_DIR  a checkout of the official repository (commit a7e1572 was used); not read when
#               only ours_* runs are asked for
# OUT_DIR       work folder: the official trainer's copy and data, run folders, logs
# RUN           which runs, each NAME=GPU, run in parallel when their GPUs differ:
#   official_bf16   train_sophiag.py, dtype bfloat16 (autocast, fp32 master weights), compiled
#                   (OFFICIAL_COMPILE=False: not compiled)
#   official_fp32   the same with dtype float32 (TF32 matmuls, as the official trainer allows)
#   official_x8     official_bf16 with --gradient_accumulation_steps=8, as the earlier comparisons
#                   ran it: 8 x 8 = 64 micro-steps, 524,288 tokens per step, bs still 65,536
#   ours_bf16       sophiagpt, bf16 (fp32 gradient accumulation: grad_accum_precision auto)
#   ours_bf16acc    sophiagpt, bf16 with bf16 gradient accumulation
#   ours_fp32       sophiagpt, fp32
#   ours_x8         ours_bf16 set up as official_x8 runs: 524,288 tokens per step, bs 65,536
#                   (micro-batch 64 x 8 micro-steps instead of 8 x 64, for speed: the same mean)
#   official_fp32_eager  dtype float32, not compiled, TF32 off (NVIDIA_TF32_OVERRIDE=0): the official
#                   trainer's numerics taken out
#   official_bf16_fp32att  official_bf16 with the attention scores q k^T computed in fp32 (a patched
#                   copy of the official model.py in OUT_DIR, see make_fp32att)
# NAME@S=GPU runs NAME with seed S: sophiagpt's `seed` = S; the official trainer's fixed seed 2099
# becomes 2099 + S (scripts/dev/official_shim/sitecustomize.py); the run is called NAME_sS.
# Recipe (the study's first comparison): GPT-2 124M (no biases, attention scaled by
# 1/(layer+1)), 8 x 1024 tokens x 8 micro-steps = 65,536 tokens per step, Sophia-G lr 6e-4,
# min_lr 1.5e-5, rho 0.05, weight decay 0.2, betas (0.965, 0.99), k = 10, clip 1.0, warmup 100,
# cosine to step 1000, STEPS steps (default 300), evaluation every 50 steps on 20 x 8 sequences.
# Sophia-G's bs is 65,536 in both (the official `total_bs * block_size` with total_bs = 64).
# Micro-steps: started as one process (no torchrun), the official trainers multiply
# gradient_accumulation_steps by 8 ("simulate 8 gpus", train_sophiag.py and train_adam.py at
# a7e1572), so 8 micro-steps are asked for with --gradient_accumulation_steps=1. The runs before
# 2026-11-30 passed 8, and the official trainer then took 524,288 tokens per step while its
# Sophia-G bs (total_bs * block_size) stayed 65,536: official_x8 / ours_x8 (docs/study.md).
# Logging: --log_interval=10. With 1 the official trainer stops at its first GNB step
# (AttributeError: it calls .item() on the int it initialises hessian_norm to, in the branch that
# logs on GNB steps); with 10 its logging runs in the other branch only (steps 0, 10, 20, ...),
# after the first GNB pass has made hessian_norm a float.
# Data: data/shards/study (scripts/study.sh prepare) as headerless uint16 files, read by random
# windows by both programs (sophiagpt's data.format "nanogpt").
set -uo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
EXE=${SOPHIAGPT:-$ROOT/build/sophiagpt}
STEPS=${STEPS:-300}
die() { echo "official_compare: $*" >&2; exit 2; }
(( $# >= 3 )) || die "usage: scripts/dev/official_compare.sh OFFICIAL_DIR OUT_DIR RUN... (see the top of the script)"
off=$1 out=$2
shift 2
wants_official=0 wants_ours=0
for spec in "$@"; do
  [[ $spec == *=* ]] || die "run '$spec' is not NAME=GPU"
  [[ $spec == official_* ]] && wants_official=1
  [[ $spec == ours_* ]] && wants_ours=1
done
if (( wants_official )) && [[ ! -f $off/train_sophiag.py ]]; then
  die "OFFICIAL_DIR '$off' has no train_sophiag.py (a checkout of github.com/Liuhong99/Sophia)"
fi
if (( wants_ours )) && [[ ! -x $EXE ]]; then
  die "sophiagpt not found at '$EXE' (build it, or set SOPHIAGPT)"
fi
for s in train val; do
  compgen -G "data/shards/study/${s}_*.bin" >/dev/null ||
    die "no data/shards/study/${s}_*.bin: run scripts/study.sh prepare first"
done
mkdir -p "$out"
out=$(cd "$out" && pwd)

# The official trainer reads data/<dataset>/{train,val}.bin relative to its working folder and
# executes configurator.py from there: run it from a copy (an empty folder when only our runs are
# asked for: they read the same token files from it).
if [[ ! -d $out/official ]]; then
  if [[ -f $off/train_sophiag.py ]]; then cp -r "$off" "$out/official"; else mkdir -p "$out/official"; fi
elif (( wants_official )) && [[ ! -f $out/official/train_sophiag.py ]]; then
  die "'$out/official' exists without train_sophiag.py: use another OUT_DIR"
fi
mkdir -p "$out/official/data/study"
for s in train val; do
  f=$out/official/data/study/$s.bin
  [[ -s $f ]] && continue
  # 256 int32 header per shard; written under another name first, so that an interrupted copy is
  # not taken for a finished one next time
  for shard in data/shards/study/${s}_*.bin; do tail -c +1025 "$shard"; done >"$f.part" && mv "$f.part" "$f" ||
    die "could not write $f"
done

# A copy of the official trainer whose attention scores q k^T (and their scaling) are computed in
# fp32 with autocast off; the softmax output then enters P V in bf16 as before. Our attention (cuDNN's
# and ours) forms the scores in fp32 the same way, while the unpatched official model under bf16
# autocast rounds q k^T to bf16 before scaling and softmax. An experiment on the copy in OUT_DIR only.
make_fp32att() {
  [[ -d $out/official_fp32att ]] && return
  cp -r "$out/official" "$out/official_fp32att"
  python3 - "$out/official_fp32att/model.py" <<'PY'
import sys
p = sys.argv[1]; s = open(p).read()
pattern = "(q @ k.transpose(-2, -1))"
assert s.count(pattern) == 2, "official model.py: the attention score expression was not found twice"
s = s.replace(pattern, "_sgpt_scores_fp32(q, k)")
helper = ("\n\ndef _sgpt_scores_fp32(q, k):  # added by sophiagpt's official_compare.sh\n"
          "    with torch.autocast(device_type='cuda', enabled=False):\n"
          "        return q.float() @ k.float().transpose(-2, -1)\n\n")
i = s.index("\nclass ")
s = s[:i] + helper + s[i:]
open(p, "w").write(s)
PY
}

official() {  # TAG DTYPE GPU ACCUM COMPILE TF32 SEED [DIR]
  local tag=$1 dtype=$2 gpu=$3 accum=${4:-1} compile=${5:-${OFFICIAL_COMPILE:-True}} tf32=${6:-} seed=${7:-} dir=${8:-official}
  rm -f "$out/$tag.jsonl"
  (cd "$out/$dir" && CUDA_VISIBLE_DEVICES=$gpu PYTHONPATH=$ROOT/scripts/dev/official_shim SGPT_WANDB_LOG=$out/$tag.jsonl \
    env ${tf32:+NVIDIA_TF32_OVERRIDE=$tf32} ${seed:+SGPT_OFFICIAL_SEED=$seed} \
    python3 train_sophiag.py config/train_gpt2_small_sophiag.py --dataset=study --batch_size=8 \
      --gradient_accumulation_steps="$accum" --total_bs=64 --max_iters="$STEPS" --lr_decay_iters=1000 \
      --warmup_iters=100 --eval_interval=50 --eval_iters=20 --log_interval=10 --compile="$compile" \
      --dtype="$dtype" --wandb_log=True --always_save_checkpoint=False --out_dir="$out/ckpt_$tag") \
    >"$out/$tag.log" 2>&1
  echo "$tag: exit $? ($(grep -c . "$out/$tag.jsonl" 2>/dev/null) records)"
}

ours() {  # TAG GPU key=value...
  local tag=$1 gpu=$2
  shift 2
  local sets=() kv
  for kv in "$@"; do sets+=(--set "$kv"); done
  rm -rf "${out:?}/$tag"
  CUDA_VISIBLE_DEVICES=$gpu "$EXE" train --config configs/study/compare_124m_sophiag.json -q \
    --set "data.train=$out/official/data/study/train.bin" --set "data.val=$out/official/data/study/val.bin" \
    --set schedule.max_steps="$STEPS" "${sets[@]}" --out-dir "$out/$tag" >"$out/$tag.log" 2>&1
  echo "$tag: exit $?"
}

declare -A lanes
for spec in "$@"; do
  name=${spec%=*} gpu=${spec#*=} seed=
  if [[ $name == *@* ]]; then
    seed=${name#*@} name=${name%@*}
    [[ $seed =~ ^[0-9]+$ ]] || die "seed '$seed' in '$spec' is not a number"
  fi
  tag=$name${seed:+_s$seed}
  oseed=${seed:+seed=$seed}
  case $name in
    official_bf16) cmd="official $tag bfloat16 $gpu 1 '' '' $seed" ;;
    official_fp32) cmd="official $tag float32 $gpu 1 '' '' $seed" ;;
    official_fp32_eager) cmd="official $tag float32 $gpu 1 False 0 $seed" ;;
    official_x8) cmd="official $tag bfloat16 $gpu 8 '' '' $seed" ;;
    official_bf16_fp32att) make_fp32att; cmd="official $tag bfloat16 $gpu 1 '' '' '$seed' official_fp32att" ;;
    ours_bf16) cmd="ours $tag $gpu precision=bf16 $oseed" ;;
    ours_bf16acc) cmd="ours $tag $gpu precision=bf16 grad_accum_precision=bf16 $oseed" ;;
    ours_fp32) cmd="ours $tag $gpu precision=fp32 $oseed" ;;
    ours_x8) cmd="ours $tag $gpu precision=bf16 batch.micro_batch_size=64 batch.total_batch_tokens=524288 optimizer.bs=65536 $oseed" ;;
    *) die "unknown run '$name'" ;;
  esac
  lanes[$gpu]+="$cmd;"
done
for gpu in "${!lanes[@]}"; do
  (IFS=';'; for c in ${lanes[$gpu]}; do [[ -n $c ]] && eval "$c"; done) &
done
wait
python3 scripts/dev/official_compare.py "$out"
