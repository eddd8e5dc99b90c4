#!/usr/bin/env bash
# SIGKILL test: a child (ckpt-kill-child) checkpoints on the real disk; this script kills it
# with SIGKILL at random moments and at named kill points of the commit protocol, and after
# every kill starts a verifying child that checks the ORACLE: LATEST loads, bit-identical, at
# the last step a killed child acknowledged ("ack N" on its stdout, flushed) or later, and so
# does every listed checkpoint (the saves are differential: retention deletes checkpoints whose
# data files kept ones hard-link).
#
#   tests/kill_test.sh path/to/ckpt-kill-child
#   env: KILLS (300), MAX_DELAY_MS (400), WORK (default: a new directory under $PWD, i.e. the
#        real disk rather than tmpfs), NAMED_EVERY (every Nth kill uses a named kill point: 4)
# Prints: sigkill: kills N (random R, named M), lost acknowledged checkpoints 0
set -uo pipefail

bin=$1
kills=${KILLS:-300}
max_delay=${MAX_DELAY_MS:-400}
named_every=${NAMED_EVERY:-4}
work=${WORK:-$(mktemp -d "$PWD/ckpt-kill-test.XXXXXX")}
mkdir -p "$work"
if [[ -z "${WORK:-}" ]]; then trap 'rm -rf "$work"' EXIT; fi
job="$work/job"
points=(after_data_fsync after_commit_marker after_rename after_latest_tmp)

ack=0
lost=0
listed=0
linked=0
random_kills=0
named_kills=0
not_killed=0
echo "sigkill: work dir $work ($(stat -f -c %T "$work"))"
for ((k = 1; k <= kills; k++)); do
  log="$work/run.log"
  if ((named_every > 0 && k % named_every == 0)); then
    point=${points[$((RANDOM % ${#points[@]}))]}:$((RANDOM % 3 + 1))
    # (in the background and waited for, so that bash prints no "Killed" line)
    CKPT_KILL_POINT=$point "$bin" "$job" "$ack" 5 >"$log" 2>&1 &
    wait $! 2>/dev/null
    rc=$?
    if ((rc == 137)); then
      named_kills=$((named_kills + 1))
    else
      not_killed=$((not_killed + 1))
      echo "kill $k: named point $point not reached (exit $rc)"
    fi
  else
    "$bin" "$job" "$ack" 1000000 >"$log" 2>&1 &
    pid=$!
    delay=$(((RANDOM * 32768 + RANDOM) % max_delay))
    sleep "$(printf '%d.%03d' $((delay / 1000)) $((delay % 1000)))"
    kill -9 "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
    random_kills=$((random_kills + 1))
  fi
  if grep -q '^VIOLATION' "$log"; then
    lost=$((lost + 1))
    echo "kill $k: $(grep -m1 '^VIOLATION' "$log")"
  fi
  last=$(grep '^ack ' "$log" | tail -n 1 | cut -d' ' -f2)
  if [[ -n "$last" ]] && ((last > ack)); then ack=$last; fi
  # The oracle, checked by a child that is not killed.
  if ! "$bin" "$job" "$ack" 0 >"$log" 2>&1; then
    lost=$((lost + 1))
    echo "kill $k: after ack $ack: $(tail -n 1 "$log")"
  fi
  # "verified N listed K linked L": K listed checkpoints loaded bit-exact, L of them differential.
  read -r _ _ _ n_listed _ n_linked < <(grep -m1 '^verified ' "$log") || true
  listed=$((listed + ${n_listed:-0}))
  linked=$((linked + ${n_linked:-0}))
done
echo "sigkill: kills $((random_kills + named_kills)) (random $random_kills, named $named_kills," \
  "named points not reached $not_killed), last acknowledged step $ack," \
  "lost acknowledged checkpoints $lost"
echo "sigkill: listed checkpoints loaded after kills $listed (differential $linked)," \
  "failed to load $lost"
((lost == 0))
