#!/usr/bin/env bash
# Sharded checkpoints over MPI (ctest label mpi). Drives tests/mpi_shard_test.cpp through
# `mpirun --oversubscribe --allow-run-as-root -np N`.
#
#   tests/mpi_shard_test.sh BIN MPIRUN reshard|fail|kill
#
#   reshard  save with 4 ranks; load with 2, 3 and 1 ranks in another slicing: bit-exact; then
#            one process loads the global arrays (the check oracle).
#   fail     rank 2's writes fail: every rank gets the error naming rank 2; nothing visible.
#   kill     SIGKILL one of 4 ranks in the middle of a save, at every named point of the
#            protocol (local and rank 0's) and at RANDOM_KILLS (6) random times: no new
#            checkpoint becomes visible uncommitted, LATEST names the last acknowledged step
#            (or a later committed one), which loads bit-exact; a restart's cleanup removes the
#            leftovers and the next save succeeds.
# env: WORK (default: a new directory under $PWD, the real disk), RANDOM_KILLS, MAX_DELAY_MS.
set -uo pipefail

bin=$1
mpirun=$2
mode=$3
work=${WORK:-$(mktemp -d "$PWD/ckpt-mpi-test.XXXXXX")}
mkdir -p "$work"
if [[ -z "${WORK:-}" ]]; then trap 'rm -rf "$work"' EXIT; fi
job="$work/job"
# Every mpirun under a timeout: after a rank is SIGKILLed, Open MPI's mpirun has been seen to
# hang with all ranks gone (the other ranks exited, their processes zombies) instead of
# returning; the test then goes on with mpirun's failure, as for any killed save.
mpi=(timeout -k 10 "${MPI_TIMEOUT_S:-90}" "$mpirun" --oversubscribe --allow-run-as-root)
failures=0

run() {  # run NP ARGS...: one MPI job; its output indented
  local np=$1
  shift
  "${mpi[@]}" -np "$np" "$bin" "$@" 2>&1 | sed 's/^/    /'
  return "${PIPESTATUS[0]}"
}
expect_ok() {
  if ! "$@"; then
    echo "FAILED: $*"
    failures=$((failures + 1))
  fi
}

case "$mode" in
  reshard)
    expect_ok run 4 save "$job" 10
    for np in 2 3 1; do
      expect_ok run "$np" load "$job" 10
    done
    expect_ok run 4 load "$job" 10
    expect_ok "$bin" check "$job" 10
    ;;
  fail)
    expect_ok run 4 save "$job" 10
    expect_ok run 4 fail "$job" 20
    expect_ok "$bin" check "$job" 10
    ;;
  kill)
    ack=0
    step=10
    save_step() {  # the next step; updates ack when acknowledged
      local log="$work/save.log"
      "${mpi[@]}" -np 4 "$bin" save "$job" "$step" >"$log" 2>&1
      local rc=$?
      local got
      got=$(grep '^ack ' "$log" | tail -n 1 | cut -d' ' -f2)
      if [[ -n "$got" ]]; then ack=$got; fi
      step=$((step + 10))
      return $rc
    }
    expect_ok save_step
    # Named points: [rank:]point. Local points fire inside a rank's own save (any rank); the
    # shard_* points are the protocol's; rank 0's are around the global commit.
    points=(1:shard_after_plan 3:after_data_fsync 2:after_commit_marker 1:after_rename
            2:shard_after_local_commit 0:shard_after_local_commit 0:shard_before_commit_marker
            0:shard_after_commit_marker)
    named=0
    for p in "${points[@]}"; do
      rank=${p%%:*}
      point=${p#*:}
      before=$ack
      KILL_RANK=$rank CKPT_KILL_POINT=$point save_step
      rc=$?
      if ((rc == 0)); then
        echo "FAILED: kill of rank $rank at $point: the save succeeded"
        failures=$((failures + 1))
      fi
      if ((ack != before)); then
        echo "FAILED: kill of rank $rank at $point: a killed save was acknowledged"
        failures=$((failures + 1))
      fi
      # No new checkpoint visible: LATEST still names the acknowledged step, which loads.
      if ! "$bin" check "$job" "$ack" | sed 's/^/    /'; then
        echo "FAILED: oracle after killing rank $rank at $point"
        failures=$((failures + 1))
      fi
      latest=$(cat "$job/LATEST")
      if [[ "$latest" != "step_$ack" ]]; then
        echo "FAILED: after killing rank $rank at $point LATEST is $latest, not step_$ack"
        failures=$((failures + 1))
      fi
      named=$((named + 1))
      echo "kill rank $rank at $point: LATEST $latest"
    done
    # Random times: one random rank killed while saves run back to back.
    random=${RANDOM_KILLS:-6}
    max_delay=${MAX_DELAY_MS:-500}
    interrupted=0
    for ((k = 1; k <= random; k++)); do
      pids="$work/pids"
      rm -rf "$pids"
      mkdir -p "$pids"
      victim=$((RANDOM % 4))
      delay=$((RANDOM % max_delay))
      log="$work/save.log"
      PID_DIR=$pids "${mpi[@]}" -np 4 "$bin" save "$job" "$step" >"$log" 2>&1 &
      job_pid=$!
      sleep "$(printf '%d.%03d' $((delay / 1000)) $((delay % 1000)))"
      if [[ -f "$pids/rank-$victim" ]]; then kill -9 "$(cat "$pids/rank-$victim")" 2>/dev/null; fi
      wait "$job_pid" 2>/dev/null
      got=$(grep '^ack ' "$log" | tail -n 1 | cut -d' ' -f2)
      outcome="the save had finished"
      if [[ -n "$got" ]]; then
        ack=$got
      else
        interrupted=$((interrupted + 1))
        outcome="the save was interrupted"
      fi
      if ! "$bin" check "$job" "$ack" | sed 's/^/    /'; then
        echo "FAILED: oracle after a random kill of rank $victim at ${delay} ms"
        failures=$((failures + 1))
      fi
      echo "random kill of rank $victim at ${delay} ms ($outcome): LATEST $(cat "$job/LATEST")," \
           "ack $ack"
      step=$((step + 10))
    done
    # A restarted job cleans up the temporary directories and saves again.
    expect_ok "$bin" cleanup "$job"
    leftovers=$(find "$job" -maxdepth 1 -name '.*' ! -name . | wc -l)
    if ((leftovers != 0)); then
      echo "FAILED: $leftovers temporary directories left after cleanup"
      failures=$((failures + 1))
    fi
    expect_ok save_step
    expect_ok "$bin" check "$job" "$ack"
    echo "mpi kill: named kills $named, random kills $random ($interrupted interrupted a save)," \
         "oracle failures $failures"
    ;;
  *)
    echo "unknown mode $mode"
    exit 2
    ;;
esac
if ((failures > 0)); then
  echo "mpi $mode: $failures failures"
  exit 1
fi
echo "mpi $mode: ok"
