#!/usr/bin/env bash
# Multi-GPU tests and benchmarks, on a machine with two or more GPUs, with the binaries that
# `scripts/dev/gpu_test.sh pack` packed (gpu-pack/gpu.tar.xz, see scripts/dev/gpu_env.sh) and the demo
# shards data/shards/sotu. Logs under $OUT (or ./gpu-logs). docs/multi_gpu.md lists what each part shows; docs/performance.md has the figures.
#   scripts/dev/gpu_dist_test.sh tests    the DistTrain tests over NCCL (fp32 1 vs 2 GPUs, ZeRO-1 on/off,
#                                     resume across GPU counts, failing ranks, bf16 tracking and
#                                     bit-reproducibility), then launches without mpirun: the TCP
#                                     and file rendezvous (the same bits as under mpirun) and a rank
#                                     killed mid-run (the other stops at dist.timeout_s)
#   scripts/dev/gpu_dist_test.sh launch   the launches without mpirun alone
#   scripts/dev/gpu_dist_test.sh bench [SECTION...]
#                                     GPT-2 training steps on 1 and 2 GPUs; sections: nvlink
#                                     (124M, AdamW and Sophia-G, ZeRO-1 on), sockets (NCCL over
#                                     TCP sockets, with and without overlap, on all GPUs), sizes
#                                     (355M and 774M, ZeRO-1 on and off), scale and scale774 (124M
#                                     and 774M on 1, 2, 4, 8 GPUs up to the machine's count: AdamW
#                                     and Sophia-G f = 1 and 0.5, ZeRO-1 on and off; on 4 H200s
#                                     about 5 and 8 minutes, estimated from the 1- and 2-GPU runs)
set -uo pipefail
cd "$(dirname "$0")/../.."
out=${OUT:-gpu-logs}
mkdir -p "$out"
source scripts/dev/gpu_env.sh
source scripts/lib/gpus.sh
EXE=$BIN/sophiagpt
FAULT_EXE=$BIN/sophiagpt_faults  # the failure tests' build: SGPT_TEST_FAULT (tests/faults/)
NGPU=$(sgpt_gpu_count)
sgpt_mpirun 2  # SGPT_MPIRUN: two processes
SHARDS=data/shards/sotu

tests() {
  echo "==== DistTrain tests over NCCL ($NGPU GPUs)"
  SGPT_EXE=$EXE SGPT_FAULT_EXE=$FAULT_EXE SGPT_DIST_DEVICE=cuda SGPT_DIST_MAX_RANKS=$NGPU "$BIN/cpu_tests" --gtest_filter='DistTrain*' \
    >"$out/dist_tests.log" 2>&1
  echo "exit $?"
  grep -E "^\[  (FAILED|PASSED|SKIPPED|     OK) |Failure|bf16, 2 GPUs" "$out/dist_tests.log" | head -40
  resume_bf16
  launch
}

# bf16 on 2 GPUs, 30 steps straight vs 15 steps + resume to 30 (ZeRO-1 on, Sophia-G with its GNB
# passes on both sides of the cut, fp32 and bf16 gradient accumulation): the final model and state
# files must be byte-identical.
resume_bf16() {
  echo "==== bf16 resume on 2 GPUs"
  local d=/tmp/sgpt_resume2; rm -rf $d; mkdir -p $d
  local acc
  for acc in fp32 bf16; do
    local cfg=(--config configs/tiny_cpu.json --device cuda --set precision=bf16 --set schedule.max_steps=30
               --set schedule.lr_decay_iters=30 --set batch.total_batch_tokens=1024 --set grad_accum_precision=$acc
               --set "data.train=$SHARDS/train_*.bin" --set data.val= --set eval.every=0
               --set checkpoint.every=0 -q)
    "${SGPT_MPIRUN[@]}" "$EXE" train "${cfg[@]}" --out-dir $d/straight_$acc >$d/straight_$acc.log 2>&1
    local a=$?
    "${SGPT_MPIRUN[@]}" "$EXE" train "${cfg[@]}" --set schedule.max_steps=15 --out-dir $d/cut_$acc >$d/cut_$acc.log 2>&1
    local b=$?
    "${SGPT_MPIRUN[@]}" "$EXE" train "${cfg[@]}" --resume --out-dir $d/cut_$acc >>$d/cut_$acc.log 2>&1
    local c=$?
    local same=1 f
    for f in model_00000030.bin state_00000030.bin; do cmp -s $d/straight_$acc/$f $d/cut_$acc/$f || same=0; done
    echo "bf16 2 GPUs, $acc accumulation: exits $a $b $c; 15 + resume to 30 vs 30 straight: $( ((same)) && echo "model and state byte-identical" || echo "FILES DIFFER")"
  done
}

launch() {
  echo "==== launches without mpirun"
  local d=/tmp/sgpt_launch; rm -rf $d; mkdir -p $d
  local cfg=(--config configs/tiny_cpu.json --device cuda --set precision=bf16 --set schedule.max_steps=30
             --set batch.total_batch_tokens=512
             --set "data.train=$SHARDS/train_*.bin" --set "data.val=$SHARDS/val_*.bin" --set eval.every=10
             --set checkpoint.every=0 --set dist.timeout_s=20 -q)
  "${SGPT_MPIRUN[@]}" "$EXE" train "${cfg[@]}" --out-dir $d/mpi >$d/mpi.log 2>&1; echo "mpirun: exit $?"
  # torchrun-style variables, TCP rendezvous on MASTER_ADDR:MASTER_PORT
  for r in 0 1; do
    RANK=$r WORLD_SIZE=2 LOCAL_RANK=$r MASTER_ADDR=127.0.0.1 MASTER_PORT=29611 \
      "$EXE" train "${cfg[@]}" --out-dir $d/tcp >$d/tcp$r.log 2>&1 &
  done
  wait -n; a=$?; wait -n; b=$?; echo "tcp: exits $a $b"
  # file rendezvous
  for r in 0 1; do
    RANK=$r WORLD_SIZE=2 LOCAL_RANK=$r "$EXE" train "${cfg[@]}" --set dist.init=file://$d/rdv \
      --out-dir $d/file >$d/file$r.log 2>&1 &
  done
  wait -n; a=$?; wait -n; b=$?; echo "file: exits $a $b; rendezvous file left: $(ls $d | grep -c rdv)"
  for m in tcp file; do
    cmp -s $d/mpi/model_00000030.bin $d/$m/model_00000030.bin && echo "$m: model bits equal mpirun's" ||
      echo "$m: MODEL DIFFERS from mpirun's"
  done
  # a rank killed mid-run (TCP launch: no mpirun to stop the others), on every GPU: each other rank
  # must stop by itself within dist.timeout_s
  local t0=$SECONDS pids=() r
  for ((r = 0; r < NGPU; ++r)); do
    local fault=(); ((r == 1)) && fault=(SGPT_TEST_FAULT=1:12:kill)
    env RANK=$r WORLD_SIZE=$NGPU LOCAL_RANK=$r MASTER_PORT=29612 "${fault[@]}" "$FAULT_EXE" train "${cfg[@]}" \
      --set batch.total_batch_tokens=$((256 * NGPU)) --out-dir $d/kill >$d/kill$r.log 2>&1 &
    pids+=($!)
  done
  for ((r = 0; r < NGPU; ++r)); do
    ((r == 1)) && { wait "${pids[1]}"; echo "killed rank 1: exit $?"; continue; }
    wait "${pids[r]}"
    echo "  rank $r of $NGPU: exit $? after $((SECONDS - t0)) s (dist.timeout_s 20): $(tail -1 $d/kill$r.log)"
  done
  # a rank that throws (TCP launch)
  t0=$SECONDS
  RANK=0 WORLD_SIZE=2 LOCAL_RANK=0 MASTER_PORT=29613 "$EXE" train "${cfg[@]}" --out-dir $d/throw >$d/throw0.log 2>&1 &
  p0=$!
  RANK=1 WORLD_SIZE=2 LOCAL_RANK=1 MASTER_PORT=29613 SGPT_TEST_FAULT=1:12:throw "$FAULT_EXE" train "${cfg[@]}" \
    --out-dir $d/throw >$d/throw1.log 2>&1 &
  local p1=$!
  wait $p1; echo "throwing rank 1: exit $? ($(tail -1 $d/throw1.log))"
  wait $p0; echo "  rank 0: exit $? after $((SECONDS - t0)) s: $(tail -1 $d/throw0.log)"
  tar czf "$out/launch_logs.tar.gz" -C $d $(cd $d && ls *.log)
}

# run NAME NP CONFIG [--set ...]: one `train` of 30 steps; prints the mean ms of steps 10-29,
# tokens/s and the memory record of the first step.
run() {
  local name=$1 np=$2 config=$3; shift 3
  local dir=/dev/shm/sgpt_bench/$name; rm -rf /dev/shm/sgpt_bench  # the final checkpoint goes to memory
  local cmd=("$EXE" train --config "$config" --out-dir "$dir" -q --set "data.train=$SHARDS/train_*.bin"
             --set data.val= --set eval.every=0 --set checkpoint.every=0 --set schedule.max_steps=30 "$@")
  if ((np > 1)); then
    local SGPT_MPIRUN
    sgpt_mpirun "$np" "${ENVS[@]}"
    "${SGPT_MPIRUN[@]}" "${cmd[@]}" >"$out/bench_$name.log" 2>&1
  else env "${ENVS[@]}" CUDA_VISIBLE_DEVICES=0 "${cmd[@]}" >"$out/bench_$name.log" 2>&1; fi
  local rc=$?
  python3 - "$dir/log.jsonl" "$name" "$rc" <<'PY'
import json, sys
recs = [json.loads(l) for l in open(sys.argv[1])] if sys.argv[3] == "0" else []
tr = [r for r in recs if r["type"] == "train"]
if len(tr) < 30:
    print(f"{sys.argv[2]:32s} FAILED (exit {sys.argv[3]})"); sys.exit()
ms = sum(r["ms"] for r in tr[10:30]) / 20
tok = tr[10]["tokens_per_s"] * tr[10]["ms"] / 1e3
first = tr[0]
print(f"{sys.argv[2]:32s} {ms:9.1f} ms/step {tok / ms * 1e3:10.0f} tok/s  state {first['state_mib']:8.0f} MiB"
      f"  device {first.get('device_mib', -1):8.0f} MiB  loss {tr[-1]['loss']:.3f}")
PY
}

bench() {
  local S=configs/gpt2_125m_sophiag.json A=configs/gpt2_125m_adamw.json
  local mb=(--set batch.micro_batch_size=64)
  ENVS=()
  for section in "${@:-nvlink sockets sizes}"; do
  for sec in $section; do
    case $sec in
    nvlink)
      echo "==== 124M bf16, micro-batch 64 x 1024, 524288 tokens/step (8 micro-steps on 1 GPU, 4 on 2)"
      for np in 1 2; do
        run "adamw_${np}gpu" $np $A "${mb[@]}" --set batch.total_batch_tokens=524288
        run "sophiag_f1_${np}gpu" $np $S "${mb[@]}" --set batch.total_batch_tokens=524288
        run "sophiag_f05_${np}gpu" $np $S "${mb[@]}" --set batch.total_batch_tokens=524288 \
          --set optimizer.hessian_batch_fraction=0.5
      done
      echo "==== 124M, 131072 tokens/step (2 micro-steps on 1 GPU, 1 on 2: no accumulation to hide behind)"
      for np in 1 2; do run "adamw_131k_${np}gpu" $np $A "${mb[@]}" --set batch.total_batch_tokens=131072; done
      ;;
    sockets)
      # on all GPUs (131072 tokens/step is one micro-step per GPU on 2; 524288 divides for 1-8)
      local n=$NGPU small=$((65536 * NGPU))
      echo "==== NVLink without overlap (the whole gradient reduced after the backward), $small tokens/step, $n GPUs"
      ENVS=(SGPT_DIST_OVERLAP=0)
      run "adamw_${small}_${n}gpu_no_overlap" $n $A "${mb[@]}" --set batch.total_batch_tokens=$small
      echo "==== NCCL over sockets (NCCL_P2P_DISABLE=1 NCCL_SHM_DISABLE=1), 124M AdamW, $n GPUs"
      ENVS=(NCCL_P2P_DISABLE=1 NCCL_SHM_DISABLE=1)
      for tok in $small 524288; do
        run "sock_adamw_${tok}_${n}gpu_overlap" $n $A "${mb[@]}" --set batch.total_batch_tokens=$tok
        ENVS+=(SGPT_DIST_OVERLAP=0)
        run "sock_adamw_${tok}_${n}gpu_no_overlap" $n $A "${mb[@]}" --set batch.total_batch_tokens=$tok
        ENVS=(NCCL_P2P_DISABLE=1 NCCL_SHM_DISABLE=1)
      done
      run "sock_sophiag_f1_524288_${n}gpu_overlap" $n $S "${mb[@]}" --set batch.total_batch_tokens=524288
      ENVS=()
      ;;
    scale)
      local nps=(1) g
      for g in 2 4 8; do ((g <= NGPU)) && nps+=($g); done
      echo "==== 124M bf16, micro-batch 64 x 1024, 524288 tokens/step, on ${nps[*]} GPUs"
      for g in "${nps[@]}"; do
        local tok=(--set batch.total_batch_tokens=524288)
        run "adamw_${g}gpu" $g $A "${mb[@]}" "${tok[@]}"
        run "sophiag_f1_${g}gpu" $g $S "${mb[@]}" "${tok[@]}"
        run "sophiag_f05_${g}gpu" $g $S "${mb[@]}" "${tok[@]}" --set optimizer.hessian_batch_fraction=0.5
        if ((g > 1)); then
          run "adamw_${g}gpu_zero0" $g $A "${mb[@]}" "${tok[@]}" --set dist.zero=0
          run "sophiag_f1_${g}gpu_zero0" $g $S "${mb[@]}" "${tok[@]}" --set dist.zero=0
        fi
      done
      ;;
    scale774)
      local nps=(1) g
      for g in 2 4 8; do ((g <= NGPU)) && nps+=($g); done
      echo "==== 774M bf16, micro-batch 16 x 1024, 131072 tokens/step, on ${nps[*]} GPUs"
      local big=configs/gpt2_770m
      for g in "${nps[@]}"; do
        local m16=(--set batch.micro_batch_size=16 --set batch.total_batch_tokens=131072)
        run "774m_adamw_${g}gpu" $g ${big}_adamw.json "${m16[@]}"
        run "774m_sophiag_f1_${g}gpu" $g ${big}_sophiag.json "${m16[@]}"
        run "774m_sophiag_f05_${g}gpu" $g ${big}_sophiag.json "${m16[@]}" --set optimizer.hessian_batch_fraction=0.5
        ((g > 1)) && run "774m_sophiag_f1_${g}gpu_zero0" $g ${big}_sophiag.json "${m16[@]}" --set dist.zero=0
      done
      ;;
    sizes)
      echo "==== 355M and 774M bf16, micro-batch 16 x 1024, 131072 tokens/step, Sophia-G k=10"
      for size in 355m 770m; do
        local c=configs/gpt2_${size}_sophiag.json
        run "sophiag_${size}_1gpu" 1 $c --set batch.micro_batch_size=16 --set batch.total_batch_tokens=131072
        run "sophiag_${size}_2gpu_zero1" 2 $c --set batch.micro_batch_size=16 --set batch.total_batch_tokens=131072
        run "sophiag_${size}_2gpu_zero0" 2 $c --set batch.micro_batch_size=16 --set batch.total_batch_tokens=131072 \
          --set dist.zero=0
      done
      ;;
    esac
  done
  done
}

sgpt_gpu_info | tee "$out/gpu.txt"
"$EXE" --version; mpirun --version | head -1
case ${1:-tests} in
tests) tests ;;
launch) launch ;;
resume) resume_bf16 ;;
bench) shift; bench "$@" ;;
*) echo "usage: $0 tests | launch | resume | bench [nvlink|sockets|sizes|scale|scale774]..." >&2; exit 2 ;;
esac
