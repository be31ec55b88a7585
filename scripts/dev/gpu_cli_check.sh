#!/usr/bin/env bash
# End-to-end checks of the command line on a machine with a GPU, with the binaries that
# `scripts/dev/gpu_test.sh pack` packed (scripts/dev/gpu_env.sh; set BIN for another build) and
# data/shards/sotu; logs under $OUT (or ./gpu-logs). Each check
# prints one line starting with PASS or FAIL; the exit status is the number of failures.
#   1. train on the GPU (bf16, 40 steps) with samples and HellaSwag during training: the log's
#      machine record names the GPU and the versions, train records carry tokens/s, MFU and ETA,
#      sample and hellaswag records appear at the configured steps
#   2. `sample` on the GPU and on the CPU from an fp32 model, same seed: the same text
#   3. `eval --hellaswag` on the GPU and on the CPU: the same count of correct examples
#   4. the GPU demo's config (configs/demo_gpu.json) for 200 steps: tokens/s and MFU
#   5. sampling speed at GPT-2 124M, 256 tokens, GPU vs CPU (reported, not a pass/fail)
#   6. with OLD_SOPHIAGPT set: the same on the CPU with a build from before the KV cache
set -uo pipefail
cd "$(dirname "$0")/../.."
out=${OUT:-gpu-logs}
mkdir -p "$out"
source scripts/dev/gpu_env.sh
EXE=$BIN/sophiagpt
d=$(mktemp -d)
fails=0
ok() { echo "PASS $*"; }
bad() { echo "FAIL $*"; fails=$((fails + 1)); }

# A HellaSwag-format file of four examples made from validation text (the scoring, not the
# accuracy, is what is checked here; the official file is the user's: docs/eval.md).
python3 - "$d/hs.jsonl" <<'PY'
import json, sys
ex = [("The president spoke to the nation about", ["the economy and jobs.", "a purple elephant dancing.", "the moon's cheese.", "seven blue spoons."], 0),
      ("Congress passed the bill after", ["a long debate in the Senate.", "the fish sang loudly.", "breakfast on Mars.", "the clock melted."], 0),
      ("We must protect the", ["rights of every citizen.", "orange of the sky blue.", "table chair lamp.", "seventeen."], 0),
      ("The budget for the next year", ["includes new funds for schools.", "is a green frog.", "sleeps under the bridge.", "runs very fast."], 0)]
with open(sys.argv[1], "w") as f:
    for ctx, ends, label in ex:
        f.write(json.dumps({"ctx": ctx, "endings": ends, "label": label}) + "\n")
PY

common=(--config configs/tiny_cpu.json --set "data.train=data/shards/sotu/train_*.bin"
        --set "data.val=data/shards/sotu/val_*.bin" --set schedule.max_steps=40 --set eval.every=20
        --set checkpoint.every=0 -q)
# 1. bf16 training on the GPU with samples and HellaSwag
"$EXE" train "${common[@]}" --device cuda --set precision=bf16 --set sample.every=20 \
  --set eval.hellaswag_every=20 --set "eval.hellaswag_file=$d/hs.jsonl" --out-dir "$d/bf16" >"$d/bf16.log" 2>&1
rc=$?
python3 - "$d/bf16/log.jsonl" "$rc" <<'PY' && ok "train on the GPU: machine record, MFU/ETA, samples, HellaSwag" || bad "train on the GPU (see $out/cli_check.tar.gz)"
import json, sys
if sys.argv[2] != "0":
    print("  exit", sys.argv[2]); sys.exit(1)
r = [json.loads(l) for l in open(sys.argv[1])]
m = [x for x in r if x.get("type") == "machine"]
t = [x for x in r if x.get("type") == "train"]
s = [x for x in r if x.get("type") == "sample"]
h = [x for x in r if x.get("type") == "hellaswag"]
print("  machine:", {k: m[0].get(k) for k in ("device", "cuda_driver", "cuda_runtime", "cudnn", "nccl", "commit")} if m else None)
print("  last train record:", {k: t[-1].get(k) for k in ("tokens_per_s", "mfu", "eta_s")} if t else None)
print("  samples at", [x["step"] for x in s], "hellaswag at", [(x["step"], x["hellaswag"]) for x in h])
okay = bool(m) and m[0].get("device") not in (None, "", "cpu") and bool(t)
okay = okay and all(k in t[-1] for k in ("tokens_per_s", "mfu", "eta_s")) and len(s) >= 2 and len(h) >= 2
sys.exit(0 if okay else 1)
PY

# 2. fp32 model; sampling on the GPU and on the CPU with one seed
"$EXE" train "${common[@]}" --device cuda --set precision=fp32 --out-dir "$d/fp32" >"$d/fp32.log" 2>&1 ||
  bad "fp32 training on the GPU (exit $?)"
for dev in cuda cpu; do
  "$EXE" sample --run "$d/fp32" --device $dev --prompt "The state of the Union" -n 64 --seed 7 \
    --temperature 1.0 --top-k 50 >"$d/sample_$dev.txt" 2>"$d/sample_$dev.err"
done
if cmp -s "$d/sample_cuda.txt" "$d/sample_cpu.txt"; then ok "sample: GPU and CPU text equal (fp32, seed 7, 64 tokens)"
else bad "sample: GPU and CPU text differ (a draw at a rounding boundary, or a bug)"; diff "$d/sample_cuda.txt" "$d/sample_cpu.txt" | head -5; fi
grep -h "tokens/s" "$d"/sample_*.err | sed 's/^/  /'

# 3. HellaSwag on both devices
for dev in cuda cpu; do
  "$EXE" eval --run "$d/fp32" --device $dev --hellaswag "$d/hs.jsonl" >"$d/hs_$dev.txt" 2>&1
done
if [[ -s $d/hs_cuda.txt ]] && diff -q <(grep -o "[0-9]*/[0-9]*\|[0-9]* of [0-9]*" "$d/hs_cuda.txt") \
  <(grep -o "[0-9]*/[0-9]*\|[0-9]* of [0-9]*" "$d/hs_cpu.txt") >/dev/null; then
  ok "eval --hellaswag: GPU and CPU agree ($(tail -1 "$d/hs_cuda.txt"))"
else bad "eval --hellaswag: GPU '$(tail -1 "$d/hs_cuda.txt")' vs CPU '$(tail -1 "$d/hs_cpu.txt")'"; fi

# 4. the GPU demo's config (scripts/demo.sh trains it when a GPU is usable), 200 steps
"$EXE" train --config configs/demo_gpu.json --device cuda --set schedule.max_steps=200 --set checkpoint.every=0 \
  --set eval.every=100 -q --out-dir "$d/demo" >"$d/demo.log" 2>&1
rc=$?
python3 - "$d/demo/log.jsonl" "$rc" <<'PY' && ok "configs/demo_gpu.json on the GPU" || bad "configs/demo_gpu.json (see the tar)"
import json, sys
if sys.argv[2] != "0":
    print("  exit", sys.argv[2]); sys.exit(1)
t = [json.loads(l) for l in open(sys.argv[1])]
t = [x for x in t if x.get("type") == "train"][20:]
print("  %.0f tokens/s, MFU %s" % (sum(x["tokens_per_s"] for x in t) / len(t), t[-1].get("mfu")))
PY
# 5. sampling speed at 124M: 256 tokens with the KV cache on the GPU and on the CPU (the CPU path
#    before the KV cache recomputed the whole prefix for every token, so it was slower still)
"$EXE" train --config configs/gpt2_125m_sophiag.json --device cuda --set schedule.max_steps=1 \
  --set schedule.warmup_iters=1 --set batch.total_batch_tokens=8192 --set "data.train=data/shards/sotu/train_*.bin" \
  --set data.val= --set eval.every=0 -q --out-dir "$d/m124" >"$d/m124.log" 2>&1 || bad "124M model for sampling (exit $?)"
for dev in cuda cpu; do
  "$EXE" sample --run "$d/m124" --device $dev --prompt "The state of the Union" -n 256 \
    --seed 1 >"$d/s124_$dev.txt" 2>"$d/s124_$dev.err"
  echo "  124M, 256 tokens, $dev: $(grep -h "tokens/s" "$d/s124_$dev.err" | tail -1)"
done
# 6. optional: the same with the sample command as it was before the KV cache (a CPU build of an
#    older commit, given as OLD_SOPHIAGPT; it recomputes the context for every token), timed here
if [[ -n ${OLD_SOPHIAGPT:-} ]]; then
  t0=$(date +%s.%N)
  "$OLD_SOPHIAGPT" sample -c configs/gpt2_125m_sophiag.json -m "$(ls "$d"/m124/model_*.bin | tail -1)" \
    --prompt "The state of the Union" -n 256 --seed 1 >"$d/s124_old.txt" 2>"$d/s124_old.err"
  rc=$?
  t1=$(date +%s.%N)
  echo "  124M, 256 tokens, cpu without KV cache ($OLD_SOPHIAGPT, exit $rc): $(python3 -c "print('%.1f s, %.2f tokens/s' % ($t1 - $t0, 256 / ($t1 - $t0)))")"
fi

tar czf "$out/cli_check.tar.gz" -C "$d" --exclude='*.bin' . 2>/dev/null
echo "gpu_cli_check: $fails failure(s)"
exit $fails
