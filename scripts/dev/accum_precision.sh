#!/usr/bin/env bash
# bf16 vs fp32 gradient accumulation at the 125M recipe's 60 micro-steps (docs/decisions.md,
# "Gradient accumulation precision"). On a machine with two GPUs, with the binaries that
# `scripts/dev/gpu_test.sh pack` packed (scripts/dev/gpu_env.sh) and data/shards/study (scripts/study.sh
# prepare):
#   1. the same Sophia-G run (configs/study/accum_124m_sophiag.json: GPT-2 124M, 8 x 1024 tokens x
#      60 micro-steps, official 125M hyperparameters, STEPS steps) twice side by side, GPU 0 with
#      grad_accum_precision bf16 and GPU 1 with fp32: loss, gradient norm, win rate, h, ms/step and
#      memory from both logs;
#   2. at the fp32 run's last checkpoint, one step's gradient, GNB gradient and win rate with bf16
#      accumulation, fp32 accumulation and all-fp32 arithmetic, from the same weights and data
#      (tests/gpu/test_accum_precision.cpp).
set -uo pipefail
cd "$(dirname "$0")/../.."
out=${OUT:-gpu-logs}
mkdir -p "$out"
source scripts/dev/gpu_env.sh
source scripts/lib/gpus.sh
ngpu=$(sgpt_gpu_count)
((ngpu >= 2)) || { echo "accum_precision: needs two GPUs (nvidia-smi lists $ngpu)" >&2; exit 2; }
EXE=$BIN/sophiagpt
STEPS=${STEPS:-120}
d=${ACCUM_DIR:-/tmp/sgpt_accum}
rm -rf "$d"; mkdir -p "$d"
for a in bf16:0 fp32:1; do
  acc=${a%:*} gpu=${a#*:}
  CUDA_VISIBLE_DEVICES=$gpu "$EXE" train --config configs/study/accum_124m_sophiag.json -q \
    --set grad_accum_precision=$acc --set schedule.max_steps=$STEPS --out-dir "$d/$acc" >"$d/$acc.log" 2>&1 &
done
wait
SGPT_ACCUM_RUN=$d/fp32 CUDA_VISIBLE_DEVICES=0 "$BIN/gpu_tests" --gtest_also_run_disabled_tests \
  --gtest_filter='AccumPrecision.*' 2>&1 | tee "$d/direct.log" | grep -E "ACCUM|FAIL|rror"
python3 - "$d" <<'PY'
import json, sys, statistics as st
d = sys.argv[1]
logs = {}
for acc in ("bf16", "fp32"):
    recs = [json.loads(l) for l in open(f"{d}/{acc}/log.jsonl")]
    logs[acc] = recs
def by(recs, t):
    return {r["step"]: r for r in recs if r.get("type") == t}
tr = {a: by(r, "train") for a, r in logs.items()}
gn = {a: by(r, "gnb") for a, r in logs.items()}
ev = {a: by(r, "eval") for a, r in logs.items()}
n = min(len(tr["bf16"]), len(tr["fp32"]))
print(f"steps: {n}")
for w in range(0, n, 20):
    s = [k for k in range(w, min(w + 20, n))]
    m = {a: st.mean(tr[a][k]["loss"] for k in s if k in tr[a]) for a in tr}
    g = {a: st.mean(tr[a][k]["grad_norm"] for k in s if k in tr[a]) for a in tr}
    print(f"steps {w:4d}-{s[-1]:4d}: loss bf16-acc {m['bf16']:.4f} fp32-acc {m['fp32']:.4f} (diff {m['bf16']-m['fp32']:+.4f}); "
          f"grad norm {g['bf16']:.4f} / {g['fp32']:.4f}")
for k in sorted(set(gn["bf16"]) & set(gn["fp32"])):
    a, b = gn["bf16"][k], gn["fp32"][k]
    print(f"GNB step {k:4d}: win rate {a['win_rate']:.4f} / {b['win_rate']:.4f}; h_l1 {a['h_l1']:.4g} / {b['h_l1']:.4g}; "
          f"GNB grad norm {a['gnb_grad_norm']:.4g} / {b['gnb_grad_norm']:.4g}")
for k in sorted(set(ev["bf16"]) & set(ev["fp32"])):
    print(f"eval step {k:4d}: val bf16-acc {ev['bf16'][k]['val_loss']:.4f} fp32-acc {ev['fp32'][k]['val_loss']:.4f}")
for a in tr:
    ms = [tr[a][k]["ms"] for k in sorted(tr[a]) if k >= 5 and k % 10 != 9]
    ms_g = [tr[a][k]["ms"] for k in sorted(tr[a]) if k >= 5 and k % 10 == 9]
    first = tr[a][min(tr[a])]
    print(f"{a}-acc: {st.mean(ms):.1f} ms/step without GNB, {st.mean(ms_g) if ms_g else float('nan'):.1f} ms with; "
          f"device memory {first.get('device_mib', float('nan')):.0f} MiB")
PY
tar czf "$out/accum_logs.tar.gz" -C "$d" bf16.log fp32.log direct.log bf16/log.jsonl fp32/log.jsonl
