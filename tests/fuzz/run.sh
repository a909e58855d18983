#!/usr/bin/env bash
# Runs every libFuzzer harness of build-fuzz/ for FUZZ_SECONDS each (make fuzz; docs/archives.md,
# "Fuzzing"). Seeds: tests/fuzz/seeds/<target>/ (committed, read only); working corpus:
# build-fuzz/corpus/<target>/ (kept between runs, not committed). A crashing input is minimised
# and kept as tests/fuzz/corpus/<target>/crash-<sha1>, which lake_tests "[fuzz]" replays.
#   tests/fuzz/run.sh [build-fuzz] [seconds] [target ...]
# FUZZ_RUNS=N (environment) also ends a target after N executions, whichever comes first
# (the campaigns of docs/archives.md ran each target to 1 million executions or 30 minutes).
set -uo pipefail
BUILD=${1:-build-fuzz}; shift || true
SECONDS_EACH=${1:-60}; shift || true
TARGETS=("$@")
[ ${#TARGETS[@]} -eq 0 ] && TARGETS=(png_jpeg pickle zip_archive safetensors lake_file tokenizer vocabulary key_values)
HERE=$(cd "$(dirname "$0")" && pwd)
declare -A MAX_LEN=([png_jpeg]=65536 [pickle]=16384 [zip_archive]=65536 [safetensors]=16384
                    [lake_file]=32768 [tokenizer]=4096 [vocabulary]=65536 [key_values]=4096)
export ASAN_OPTIONS=${ASAN_OPTIONS:-halt_on_error=1:detect_leaks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}
export LSAN_OPTIONS=${LSAN_OPTIONS:-suppressions=$HERE/../sanitizers/lsan.supp:print_suppressions=0}
export CUDA_VISIBLE_DEVICES=
status=0
printf '%-12s %10s %6s %8s %8s %8s\n' target execs time_s exec/s rss_mb crashes > "$BUILD/fuzz_summary.txt"
for t in "${TARGETS[@]}"; do
  exe=$BUILD/tests/fuzz/fuzz_$t
  corpus=$BUILD/corpus/$t; crashes=$BUILD/crashes/$t; log=$BUILD/fuzz_$t.log
  rm -rf "$crashes"; mkdir -p "$corpus" "$crashes"  # this run's findings only (kept ones: tests/fuzz/corpus)
  echo "fuzz: $t for ${SECONDS_EACH}s (log: $log)"
  start=$(date +%s)
  seeds=("$HERE/seeds/$t"); [ -d "$BUILD/seeds/$t" ] && seeds+=("$BUILD/seeds/$t")  # generated archive seeds
  [ -d "$HERE/seeds/$t" ] || seeds=("${seeds[@]:1}")
  "$exe" "$corpus" "${seeds[@]}" -max_total_time="$SECONDS_EACH" -rss_limit_mb=2048 -timeout=30 \
    -max_len="${MAX_LEN[$t]}" ${FUZZ_RUNS:+-runs="$FUZZ_RUNS"} -print_final_stats=1 -artifact_prefix="$crashes/" > "$log" 2>&1
  rc=$?
  secs=$(( $(date +%s) - start ))
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  eps=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  rss=$(sed -n 's/^stat::peak_rss_mb: *//p' "$log" | tail -1)
  found=0
  for c in "$crashes"/crash-* "$crashes"/leak-* "$crashes"/oom-* "$crashes"/timeout-*; do
    [ -f "$c" ] || continue
    found=$((found + 1))
    keep=$HERE/corpus/$t/$(basename "$c")
    mkdir -p "$HERE/corpus/$t"
    [ -f "$keep" ] && continue
    echo "fuzz: $t found $(basename "$c"); minimising into $keep"
    "$exe" -minimize_crash=1 -max_total_time=60 -rss_limit_mb=2048 -exact_artifact_path="$keep" "$c" \
      > "$BUILD/fuzz_${t}_minimize.log" 2>&1 || true
    [ -f "$keep" ] || cp "$c" "$keep"
  done
  [ $rc -ne 0 ] && [ $found -eq 0 ] && { echo "fuzz: $t exited $rc without an artifact:"; tail -20 "$log"; status=1; }
  [ $found -gt 0 ] && { echo "fuzz: $t: $found finding(s); tail of $log:"; grep -m5 -E "ERROR|runtime error|SUMMARY" "$log"; status=1; }
  printf '%-12s %10s %6s %8s %8s %8s\n' "$t" "${execs:-?}" "$secs" "${eps:-?}" "${rss:-?}" "$found" | tee -a "$BUILD/fuzz_summary.txt"
done
# Input folders of harness processes that ended in a finding (libFuzzer leaves with _Exit, so
# targets.cpp could not remove them).
for d in /dev/shm/lake-fuzz-* "${TMPDIR:-/tmp}"/lake-fuzz-*; do
  [ -d "$d" ] && [ ! -d "/proc/${d##*-}" ] || continue
  find "$d" -maxdepth 1 -type f -delete; rmdir "$d" 2>/dev/null
done
echo; cat "$BUILD/fuzz_summary.txt"
exit $status
