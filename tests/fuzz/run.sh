#!/usr/bin/env bash
# Runs each libFuzzer target for SECONDS from its seed corpus (tests/fuzz/corpus/<target>/; new
# inputs go to a scratch copy, the seeds stay as they are) and prints one line per target:
#   fuzz <target>: execs N, crashes 0
# Exits non-zero when a target crashed (its reproducer is kept and named).
#
#   tests/fuzz/run.sh SECONDS [BUILD_DIR]     (BUILD_DIR: the `fuzz` preset's, build/fuzz)
#   cmake --preset fuzz && cmake --build build/fuzz     (clang-14)
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
secs=${1:-60}
build=$(realpath -m "${2:-$here/../../build/fuzz}")  # absolute: each target runs in $work
work=$(mktemp -d "${TMPDIR:-/tmp}/ckpt-fuzz.XXXXXX")
status=0
for t in fuzz_index fuzz_chunk fuzz_load; do
  bin=$build/bin/$t
  if [[ ! -x $bin ]]; then
    echo "fuzz $t: not built ($bin); configure with: cmake --preset fuzz"
    status=1
    continue
  fi
  mkdir -p "$work/$t"
  cp "$here/corpus/$t/"* "$work/$t/" 2>/dev/null
  (cd "$work" && ASAN_OPTIONS=detect_leaks=0 "$bin" -max_total_time="$secs" -print_final_stats=1 \
    -artifact_prefix="$work/$t-" "$work/$t" >"$work/$t.log" 2>&1)
  rc=$?
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$work/$t.log" | tail -n 1)
  crashes=0
  if ((rc != 0)); then
    crashes=1
    status=1
  fi
  echo "fuzz $t: execs ${execs:-?}, crashes $crashes"
  if ((crashes > 0)); then
    grep -m3 -E 'ERROR|SUMMARY' "$work/$t.log"
    echo "  reproducer: $(ls "$work/$t-"* 2>/dev/null | head -n 1); log: $work/$t.log"
  fi
done
if ((status == 0)); then rm -rf "$work"; fi
exit $status
