#!/usr/bin/env bash
# Runs every fuzz target for a bounded time, one after the other, and prints a Markdown table
# of the figures of each run's final libFuzzer lines (see docs/fuzzing.md).
#
#   fuzz/run-all.sh [SECONDS] [TARGET...]     (default: 60 seconds, every target)
#
# Builds once (`cargo +nightly fuzz build`), then runs the built binaries directly, so a source
# edit made while it runs cannot trigger a rebuild inside a timed run. The options are those of
# `cargo fuzz run`. Logs go to fuzz/target/logs/<target>.log, crash inputs to
# fuzz/artifacts/<target>/, new corpus entries to fuzz/corpus/<target>/ (git ignores them).
# Temp trees of the archive, patch and policy targets go to TMPDIR (default here: /dev/shm).
set -uo pipefail
cd "$(dirname "$0")/.."
secs="${1:-60}"
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(cargo +nightly fuzz list)
fi
export TMPDIR="${TMPDIR:-/dev/shm}"
mkdir -p fuzz/target/logs
cargo +nightly fuzz build >fuzz/target/logs/build.log 2>&1 || {
  echo "cargo fuzz build failed: see fuzz/target/logs/build.log" >&2
  exit 1
}
bin_dir=fuzz/target/x86_64-unknown-linux-gnu/release
echo "Built from $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src || echo ' + uncommitted src/ changes'), $(date -u +%Y-%m-%dT%H:%MZ)"
echo
echo "| target | seconds | execs | execs/s | coverage (cov) | features (ft) | corpus | findings |"
echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |"
for t in "${targets[@]}"; do
  log="fuzz/target/logs/$t.log"
  mkdir -p "fuzz/artifacts/$t" "fuzz/corpus/$t"
  start=$(date +%s)
  "$bin_dir/$t" -artifact_prefix="fuzz/artifacts/$t/" -max_total_time="$secs" \
    -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 "fuzz/corpus/$t" >"$log" 2>&1
  rc=$?
  end=$(date +%s)
  last=$(grep -E '^#[0-9]+' "$log" | tail -1)
  execs=$(grep -oE 'stat::number_of_executed_units: *[0-9]+' "$log" | grep -oE '[0-9]+$')
  [ -n "$execs" ] || execs=$(sed -nE 's/^#([0-9]+).*/\1/p' <<<"$last")
  rate=$(grep -oE 'stat::average_exec_per_sec: *[0-9]+' "$log" | grep -oE '[0-9]+$')
  cov=$(grep -oE 'cov: [0-9]+' <<<"$last" | grep -oE '[0-9]+')
  ft=$(grep -oE 'ft: [0-9]+' <<<"$last" | grep -oE '[0-9]+')
  corp=$(grep -oE 'corp: [0-9]+' <<<"$last" | grep -oE '[0-9]+')
  ran=$(grep -oE 'Done [0-9]+ runs in [0-9]+ second' "$log" | grep -oE 'in [0-9]+' | grep -oE '[0-9]+')
  if [ "$rc" -eq 0 ]; then
    finding="none"
  else
    what=$(grep -m1 -oE "ERROR: libFuzzer: [a-z-]+|panicked at [^ ]+|ERROR: AddressSanitizer: [a-z-]+" "$log")
    artifact=$(grep -m1 -oE 'fuzz/artifacts/[^ ]+' "$log")
    finding="${what:-exit $rc}; ${artifact:-no artifact}"
  fi
  echo "| $t | ${ran:-$((end - start))} | ${execs:-?} | ${rate:-?} | ${cov:-?} | ${ft:-?} | ${corp:-?} | $finding |"
done
