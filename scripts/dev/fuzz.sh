#!/usr/bin/env bash
# Bounded fuzzing with libFuzzer (clang) + ASan + UBSan of the config loader, the token-file
# reader, the checkpoint readers and the tokenizer (docs/reliability.md, "Sanitizers and fuzzing").
#   scripts/dev/fuzz.sh              build the targets (build-fuzz), run each FUZZ_SECONDS on a copy of
#                                its seed corpus tests/fuzz/corpus/<target>; any finding fails
#   scripts/dev/fuzz.sh --seeds      regenerate the checkpoint seeds with our own writers, then exit
#   scripts/dev/fuzz.sh TARGET...    only these targets
# Environment: FUZZ_SECONDS (default 30 per target), or FUZZ_RUNS (a fixed number of inputs with
# the fixed seed FUZZ_SEED, default 1: the same inputs on every machine, so a run that passed here
# passes in CI; scripts/test.sh uses this), FUZZ_BUILD_DIR (default build-fuzz),
# JOBS (default: number of cores), FUZZ_ARTIFACTS (where crashing inputs are kept; default
# FUZZ_BUILD_DIR/artifacts). Needs clang (scripts/setup.sh) and data/cache/gpt2
# (scripts/fetch_assets.sh gpt2).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
BUILD_DIR=${FUZZ_BUILD_DIR:-build-fuzz}
JOBS=${JOBS:-$(nproc)}
SECONDS_EACH=${FUZZ_SECONDS:-30}
ARTIFACTS=${FUZZ_ARTIFACTS:-$BUILD_DIR/artifacts}
ALL=(fuzz_config fuzz_token_file fuzz_checkpoint fuzz_tokenizer)

seeds=0
targets=()
for a in "$@"; do
  if [[ "$a" == --seeds ]]; then seeds=1; else targets+=("$a"); fi
done
((${#targets[@]})) || targets=("${ALL[@]}")

SAN="-fsanitize=fuzzer-no-link,address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined"
CC=${FUZZ_CC:-clang} CXX=${FUZZ_CXX:-clang++} cmake -S . -B "$BUILD_DIR" -DSGPT_CUDA=OFF -DSGPT_TESTS=OFF \
  -DSGPT_FUZZ=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_C_FLAGS="$SAN" -DCMAKE_CXX_FLAGS="$SAN" >/dev/null
cmake --build "$BUILD_DIR" -j"$JOBS" --target "${targets[@]}"

if ((seeds)); then
  rm -f tests/fuzz/corpus/fuzz_checkpoint/*.bin
  SGPT_FUZZ_WRITE_SEEDS="$ROOT/tests/fuzz/corpus/fuzz_checkpoint" "$BUILD_DIR/fuzz_checkpoint"
  ls -l tests/fuzz/corpus/fuzz_checkpoint
  exit 0
fi

export ASAN_OPTIONS="halt_on_error=1:detect_leaks=1:print_stacktrace=1${ASAN_OPTIONS:+:$ASAN_OPTIONS}"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1${UBSAN_OPTIONS:+:$UBSAN_OPTIONS}"
mkdir -p "$ARTIFACTS"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
export TMPDIR="$WORK"  # the targets' scratch files
failed=()
for t in "${targets[@]}"; do
  if [[ -n ${FUZZ_RUNS:-} ]]; then what="$FUZZ_RUNS inputs, seed ${FUZZ_SEED:-1}"; else what="${SECONDS_EACH}s"; fi
  echo "== fuzz: $t, $what (seeds: tests/fuzz/corpus/$t) =="
  mkdir -p "$WORK/corpus/$t"
  cp -r tests/fuzz/corpus/"$t"/. "$WORK/corpus/$t/"
  # earlier findings (fixed) run again as part of the corpus
  if [[ $t == fuzz_checkpoint ]]; then cp tests/fuzz/findings/*.bin "$WORK/corpus/$t/"; fi
  # -rss_limit_mb / -malloc_limit_mb: an input that makes a reader allocate more than 2 GB is a
  # finding (the readers must check sizes against the file first); -timeout: a hang is one too.
  if [[ -n ${FUZZ_RUNS:-} ]]; then budget=(-seed="${FUZZ_SEED:-1}" -runs="$FUZZ_RUNS" -max_total_time=600)
  else budget=(-max_total_time="$SECONDS_EACH"); fi
  if ! "$BUILD_DIR/$t" "$WORK/corpus/$t" "${budget[@]}" -timeout=10 \
      -rss_limit_mb=2048 -malloc_limit_mb=2048 -max_len=4096 -print_final_stats=1 \
      -artifact_prefix="$ARTIFACTS/$t-" 2>"$WORK/$t.log"; then
    tail -n 80 "$WORK/$t.log"
    echo "fuzz: $t FAILED (crashing input kept in $ARTIFACTS/)"
    failed+=("$t")
  else
    grep -E '^(stat::number_of_executed_units|stat::new_units_added|#[0-9]+ *DONE)' "$WORK/$t.log" || true
  fi
done
if ((${#failed[@]})); then
  echo "fuzz: findings in ${failed[*]}"
  exit 1
fi
echo "fuzz: ${#targets[@]} targets, no findings"
