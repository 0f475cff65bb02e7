#!/usr/bin/env bash
# The crash-consistency harness with more rounds than CI runs (issue 21): start, load, SIGKILL,
# restart, check, ROUNDS times (default 100), on a release build. Prints the test's summary
# line (rounds, acknowledged writes, losses, partial state, leftovers, verify failures).
#
#   bench/crash.sh [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-100}
[[ $rounds =~ ^[0-9]+$ ]] && ((rounds >= 1 && rounds <= 1000)) || {
  echo "usage: bench/crash.sh [ROUNDS], ROUNDS from 1 to 1000" >&2
  exit 2
}
GF_CRASH_ROUNDS=$rounds cargo test --release --locked --test it \
  crash::sigkill_during_publishes_and_fills_loses_nothing -- --exact --nocapture 2>&1 |
  grep -E '^crash: (rounds=|warning)|test result|panicked|FAILED'
