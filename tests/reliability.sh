#!/usr/bin/env bash
# The reliability suite with CI-sized parameters (RELIABILITY.md): runs every reliability test,
# prints one table of their figures and exits non-zero on any failure or violation.
#
#   tests/reliability.sh [BUILD_DIR]     (default: build/release; needs ckpt-tests and
#                                         ckpt-kill-child built there)
#   env: MUTATIONS (100000), CRASH_ROUNDS (10), CRASH_SAMPLES (128), KILLS (300),
#        MPI_KILLS (20: random SIGKILLs of one of 4 MPI ranks mid-save, besides the 8 named
#        points; skipped without ckpt-mpi-shard-test and mpirun),
#        FUZZ_SECONDS (0: skip; needs the `fuzz` preset's build in build/fuzz)
# Runtime on 2 cores: about 9 minutes in .ci/run on 2026-12-01 (corruption 342 s, up from 95 s
# before the simdjson index parser: not yet profiled; SIGKILL ~85 s, crash states ~60 s).
set -uo pipefail

here=$(cd "$(dirname "$0")" && pwd)
build=$(cd "${1:-$here/../build/release}" && pwd)
tests=$build/bin/ckpt-tests
child=$build/bin/ckpt-kill-child
logs=$(mktemp -d "${TMPDIR:-/tmp}/ckpt-reliability.XXXXXX")
status=0
rows=()

# run NAME COMMAND... : runs, keeps the log, records pass/fail.
run() {
  local name=$1
  shift
  local t0=$SECONDS
  if "$@" >"$logs/$name.log" 2>&1; then
    echo "[pass] $name ($((SECONDS - t0)) s)"
  else
    echo "[FAIL] $name ($((SECONDS - t0)) s): see $logs/$name.log"
    tail -n 30 "$logs/$name.log"
    status=1
  fi
}
# figure NAME PATTERN: the last matching line of NAME's log (or "missing").
figure() {
  local line
  line=$(grep -E "$2" "$logs/$1.log" 2>/dev/null | tail -n 1)
  rows+=("${line:-$1: figure missing}")
  [[ -n "$line" ]] || status=1
}

run corruption env CKPT_MUTATIONS="${MUTATIONS:-100000}" "$tests" '[corrupt]'
figure corruption '^corruption: mutations'
figure corruption '^corruption: damage'

run crash env CKPT_CRASH_ROUNDS="${CRASH_ROUNDS:-10}" CKPT_CRASH_SAMPLES="${CRASH_SAMPLES:-128}" \
  "$tests" 'every crash state*'
figure crash '^crash states:'
figure crash '^crash states checked by kind'
run plant "$tests" '[plant]'
figure plant '^planted bugs caught:'

# On the real disk (the build tree), not tmpfs.
run sigkill env KILLS="${KILLS:-300}" WORK="$logs/kill-work" "$here/kill_test.sh" "$child"
rm -rf "$build/reliability-kill"
figure sigkill '^sigkill: kills'
figure sigkill '^sigkill: listed'

mpi_test=$build/bin/ckpt-mpi-shard-test
if [[ -x "$mpi_test" ]] && command -v mpirun >/dev/null; then
  run mpi_sigkill env RANDOM_KILLS="${MPI_KILLS:-20}" WORK="$logs/mpi-kill-work" \
    "$here/mpi_shard_test.sh" "$mpi_test" "$(command -v mpirun)" kill
  rm -rf "$build/reliability-mpi-kill"
  figure mpi_sigkill '^mpi kill:'
fi

run enospc_simulated "$tests" 'persistent ENOSPC*'
figure enospc_simulated '^enospc \(simulated'
run enospc_real "$tests" '[.enospc]'
figure enospc_real '^enospc: '

run faults "$tests" '[faults]'
figure faults '^(All tests passed|test cases)'
rows[-1]="EIO/ENOSPC at op k [faults]: ${rows[-1]}"

run hostile "$tests" '[hostile]'
figure hostile '^hostile \(loader\): traversal'
figure hostile '^hostile \(loader\): symlinked'
figure hostile '^hostile \(loader\): 1 TiB'
figure hostile '^hostile \(loader\): 10\^7'
run format "$tests" '[format]'
figure format '^(All tests passed|test cases)'
rows[-1]="hostile index (parser cases, test_format.cpp [format]): ${rows[-1]}"

run preemption "$tests" '[preempt]'
figure preemption '^(All tests passed|test cases)'
rows[-1]="preemption [preempt]: ${rows[-1]}"

if [[ -n "${FUZZ_SECONDS:-}" && "${FUZZ_SECONDS}" != 0 ]]; then
  run fuzz "$here/fuzz/run.sh" "$FUZZ_SECONDS"
  while read -r l; do rows+=("$l"); done < <(grep -E '^fuzz ' "$logs/fuzz.log")
fi

echo
echo "| reliability figure |"
echo "| --- |"
for r in "${rows[@]}"; do echo "| $r |"; done
echo
if ((status == 0)); then echo "reliability: all passed (logs in $logs)"; else echo "reliability: FAILED (logs in $logs)"; fi
exit $status
