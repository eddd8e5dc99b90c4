#!/usr/bin/env bash
# Kill/resume check of the example trainer: an uninterrupted run prints the final parameters'
# hash; then, KILLS times in a fresh directory, the same command is started, killed with
# SIGKILL at a random moment after its first committed checkpoint, and started again. Every
# resumed run must end with the same hash.
#
#   tests/kill_resume.sh path/to/ckpt-train [extra ckpt-train flags...]
#   env: STEPS (300), EVERY (10), KILLS (3), KEEP (2), WORK (a temporary directory),
#        JOB_DIR (the job's directory under --dir, for the LATEST report: examples/train/mlp)
set -euo pipefail

bin=$1
shift
steps=${STEPS:-300}
every=${EVERY:-10}
kills=${KILLS:-3}
keep=${KEEP:-2}
work=${WORK:-$(mktemp -d "${TMPDIR:-/tmp}/ckpt-kill-resume.XXXXXX")}
mkdir -p "$work"
if [[ -z "${WORK:-}" ]]; then trap 'rm -rf "$work"' EXIT; fi
args=(--steps "$steps" --ckpt-every "$every" --keep "$keep" "$@")

now_ms() { date +%s%3N; }
hash_of() { tail -n 1 "$1" | sed -n 's/^params-xxh3 \([0-9a-f]\{16\}\)$/\1/p'; }

# Reference: one uninterrupted run.
t0=$(now_ms)
"$bin" --dir "$work/A" "${args[@]}" >"$work/A.log" 2>&1
t_ref=$(($(now_ms) - t0))
ref=$(hash_of "$work/A.log")
if [[ -z "$ref" ]]; then
  echo "FAIL: reference run printed no hash"; tail -n 5 "$work/A.log"; exit 1
fi
echo "reference: params-xxh3 $ref (${t_ref} ms)"

fails=0
for k in $(seq 1 "$kills"); do
  dir="$work/B$k"
  log="$work/B$k.run1.log"
  # A run that ends before its kill (it ran faster than the reference, which shared the machine
  # with other tests) is no kill: it is started again with half the span, three tries at most.
  scale=1
  for try in 1 2 3; do
    rm -rf "$dir"
    t0=$(now_ms)
    "$bin" --dir "$dir" "${args[@]}" >"$log" 2>&1 &
    pid=$!
    # Wait for the first committed checkpoint.
    until grep -q ' committed:' "$log" 2>/dev/null; do
      if ! kill -0 "$pid" 2>/dev/null; then break; fi
      sleep 0.02
    done
    t_first=$(($(now_ms) - t0))
    # A random moment in the first 70 % of what remains of a run.
    span=$(((t_ref - t_first) * 7 / 10 / scale))
    ((span < 1)) && span=1
    delay=$((RANDOM * 32768 + RANDOM))
    delay=$((delay % span))
    sleep "$(printf '%d.%03d' $((delay / 1000)) $((delay % 1000)))"
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    grep -q '^params-xxh3' "$log" || break
    echo "run $k finished before its kill (delay ${delay} ms, try $try)"
    scale=$((scale * 2))
  done
  killed_at=$(grep -c '^step ' "$log" || true)
  if grep -q '^params-xxh3' "$log"; then
    echo "FAIL: run $k finished before it was killed, three times"; fails=$((fails + 1))
    continue
  fi
  latest=$(cat "$dir/${JOB_DIR:-examples/train/mlp}/LATEST" 2>/dev/null || echo none)
  # Resume.
  log2="$work/B$k.run2.log"
  "$bin" --dir "$dir" "${args[@]}" >"$log2" 2>&1 || true
  got=$(hash_of "$log2")
  resumed=$(grep -m1 '^resumed from' "$log2" || echo "no resume line")
  if [[ "$got" == "$ref" ]] && grep -q '^resumed from' "$log2"; then
    echo "kill $k: SIGKILL ${delay} ms after the first commit (${killed_at} progress lines," \
      "LATEST=$latest); $resumed; params-xxh3 $got: equal"
  else
    echo "FAIL: kill $k: LATEST=$latest; $resumed; params-xxh3 '${got}' != '$ref'"
    tail -n 5 "$log2"
    fails=$((fails + 1))
  fi
done
if ((fails > 0)); then
  echo "kill/resume: $fails of $kills runs FAILED"; exit 1
fi
echo "kill/resume: $kills of $kills resumed runs ended with params-xxh3 $ref"
