#!/usr/bin/env bash
# bench/grpc.sh: the gRPC door (Remote Asset API) against the HTTP /cas path, same server,
# same run. Not part of CI. See bench/README.md ("The gRPC door").
#
#   bench/grpc.sh [--runs N] [--size-mb M] [--hits N] [--concurrency N] [--window-mib W]
#
# Builds the release binary and examples/grpc_bench.rs, generates an M MiB blob (default 100),
# serves it from a Python upstream on 127.0.0.1, starts gf-registry with a policy allowing
# it, and runs the load client: it pins the blob with FetchBlob, then per run measures
# FetchBlob + ByteStream/Read against GET /cas/sha256/{hex} (alternating which goes first)
# and the latency of FetchBlob hits at N concurrent streams on one connection. Everything it
# starts is stopped on exit; every wait is bounded.
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=5 SIZE_MB=100 HITS=1000 CONC=64 EXTRA=()
while [[ $# -gt 0 ]]; do
  case $1 in
    --runs) RUNS=$2; shift 2 ;;
    --size-mb) SIZE_MB=$2; shift 2 ;;
    --hits) HITS=$2; shift 2 ;;
    --concurrency) CONC=$2; shift 2 ;;
    --window-mib) EXTRA=(--window-mib "$2"); shift 2 ;;
    *) echo "bench/grpc.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done

log() { printf '[grpc-bench %s] %s\n' "$(date +%T)" "$*" >&2; }

cargo build --release --locked --bin gf-registry --example grpc_bench
target=${CARGO_TARGET_DIR:-target}
BIN="$target/release/gf-registry" CLIENT="$target/release/examples/grpc_bench"

base=${BENCH_TMPDIR:-}
if [[ -z $base ]]; then
  base=${TMPDIR:-/tmp}
  if avail=$(df -Pk /dev/shm 2>/dev/null | awk 'NR==2{print $4}') && ((avail > SIZE_MB * 3 * 1024 + 262144)); then
    base=/dev/shm
  fi
fi
WORK=$(mktemp -d "$base/gf-grpc-bench.XXXXXX")
mkdir -p "$WORK"/{up,data,policy,tmp,logs}
PIDS=()
cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do
    kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in "${PIDS[@]}"; do
    timeout 10 tail --pid="$pid" -f /dev/null 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
  done
  rm -rf "$WORK/up" "$WORK/data" "$WORK/tmp"
  log "logs kept in $WORK/logs"
}
trap cleanup EXIT INT TERM

read -r UP GF <<<"$(python3 - <<'EOF'
import socket
socks = [socket.socket() for _ in range(2)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))
EOF
)"

log "generating a ${SIZE_MB} MiB blob"
head -c "$((SIZE_MB << 20))" /dev/urandom >"$WORK/up/big.bin"
SRI="sha256-$(openssl dgst -sha256 -binary "$WORK/up/big.bin" | base64 -w0)"
printf '[[upstream]]\nprefix = "http://127.0.0.1:%s/"\nallow_private = true\n' "$UP" >"$WORK/policy/policy.toml"

python3 -m http.server "$UP" --bind 127.0.0.1 --directory "$WORK/up" >"$WORK/logs/upstream.log" 2>&1 &
PIDS+=($!)
GF_REGISTRY_ACCESS_LOG=false TMPDIR="$WORK/tmp" "$BIN" serve --listen "127.0.0.1:$GF" \
  --registry registry --data "$WORK/data" --mirror-policy "$WORK/policy" \
  >"$WORK/logs/gf-registry.log" 2>&1 &
PIDS+=($!)
for ((i = 0; i < 300; i++)); do
  curl -fsS --max-time 2 -o /dev/null "http://127.0.0.1:$GF/readyz" 2>/dev/null &&
    curl -fsS --max-time 2 -o /dev/null "http://127.0.0.1:$UP/big.bin" -r 0-0 2>/dev/null && break
  sleep 0.1
done
((i < 300)) || { echo "servers did not start; see $WORK/logs" >&2; exit 1; }

log "measuring: $RUNS runs, $HITS FetchBlob hits at $CONC streams"
timeout 900 "$CLIENT" --server "http://127.0.0.1:$GF" --uri "http://127.0.0.1:$UP/big.bin" \
  --sri "$SRI" --runs "$RUNS" --hits "$HITS" --concurrency "$CONC" "${EXTRA[@]}" | tee "$WORK/logs/results.jsonl"
