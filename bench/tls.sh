#!/usr/bin/env bash
# bench/tls.sh: HTTPS serving of hot registry files, gf-registry against nginx with TLS on the
# same certificate, in the same run. Not part of CI. See bench/README.md ("HTTPS").
#
#   bench/tls.sh [--runs N] [--seconds S] [--conns C] [--bin PATH]
#
# Generates the 1,000-module registry of bench/run.sh and a test CA and certificate (openssl,
# P-256), starts nginx (2 workers, ssl, keep-alive, open_file_cache) and gf-registry (its
# defaults, --tls-cert/--tls-key) on free 127.0.0.1 ports, and runs wrk over HTTPS with
# bench/paths.lua against both, alternating which goes first. wrk speaks HTTP/1.1 over TLS
# (OpenSSL), so both serve the same protocol; keep-alive connections, so the figure is the
# serving rate with TLS records, not handshakes. Everything it starts is stopped on exit.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
cd "$HERE/.."

RUNS=3 SECONDS_=10 CONNS=64 BIN=""
while [[ $# -gt 0 ]]; do
  case $1 in
    --runs) RUNS=$2; shift 2 ;;
    --seconds) SECONDS_=$2; shift 2 ;;
    --conns) CONNS=$2; shift 2 ;;
    --bin) BIN=$2; shift 2 ;;
    *) echo "bench/tls.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
log() { printf '[tls-bench %s] %s\n' "$(date +%T)" "$*" >&2; }
for tool in nginx wrk openssl python3 curl; do
  command -v "$tool" >/dev/null || { echo "bench/tls.sh: $tool is needed" >&2; exit 1; }
done
if [[ -z $BIN ]]; then
  cargo build --release --locked --bin gf-registry
  BIN="${CARGO_TARGET_DIR:-target}/release/gf-registry"
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/gf-tls-bench.XXXXXX")
chmod 755 "$WORK"
mkdir -p "$WORK"/{logs,run,nginx,data,policy,tls}
PIDS=()
cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do
    timeout 10 tail --pid="$pid" -f /dev/null 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
  done
  rm -rf "$WORK/reg" "$WORK/data"
  log "logs and results kept in $WORK"
}
trap cleanup EXIT INT TERM

log "generating the registry (1,000 modules x 5 versions) and the certificate"
python3 "$HERE/gen_registry.py" --out "$WORK/reg" --modules 1000 --versions 5 \
  --paths "$WORK/run/hot.paths" --missing "$WORK/run/missing.paths" --missing-count 10 >/dev/null
(
  cd "$WORK/tls"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -subj "/CN=bench CA" -keyout ca-key.pem -out ca.pem 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' >ext.cnf
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=127.0.0.1" \
    -keyout key.pem -out s.csr 2>/dev/null
  openssl x509 -req -in s.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial -days 2 \
    -extfile ext.cnf -out cert.pem 2>/dev/null
)
read -r GF NG <<<"$(python3 -c '
import socket
s = [socket.socket() for _ in range(2)]
for x in s: x.bind(("127.0.0.1", 0))
print(*(x.getsockname()[1] for x in s))')"

user_line=""
((EUID == 0)) && user_line="user root;"
cat >"$WORK/nginx/tls.conf" <<EOF
$user_line
worker_processes 2;
daemon off;
pid $WORK/nginx/tls.pid;
error_log $WORK/logs/nginx-error.log warn;
events { worker_connections 1024; }
http {
    default_type application/octet-stream;
    access_log off;
    log_not_found off;
    sendfile on;
    tcp_nodelay on;
    keepalive_timeout 65;
    keepalive_requests 1000000;
    open_file_cache max=50000 inactive=60s;
    open_file_cache_valid 60s;
    ssl_certificate $WORK/tls/cert.pem;
    ssl_certificate_key $WORK/tls/key.pem;
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_session_cache shared:bench:10m;
    client_body_temp_path $WORK/nginx/client_body;
    proxy_temp_path $WORK/nginx/proxy_temp;
    fastcgi_temp_path $WORK/nginx/fastcgi;
    uwsgi_temp_path $WORK/nginx/uwsgi;
    scgi_temp_path $WORK/nginx/scgi;
    server { listen 127.0.0.1:$NG ssl; root $WORK/reg; }
}
EOF
NGINX=$(command -v nginx)
"$NGINX" -p "$WORK/nginx" -e "$WORK/logs/nginx-error.log" -c "$WORK/nginx/tls.conf" &
PIDS+=($!)
GF_REGISTRY_ACCESS_LOG=false "$BIN" serve --listen "127.0.0.1:$GF" --registry "$WORK/reg" \
  --data "$WORK/data" --mirror-policy "$WORK/policy" \
  --tls-cert "$WORK/tls/cert.pem" --tls-key "$WORK/tls/key.pem" >"$WORK/logs/gf-registry.log" 2>&1 &
PIDS+=($!)
for port in "$GF" "$NG"; do
  for ((i = 0; i < 300; i++)); do
    curl -fsS --max-time 2 --cacert "$WORK/tls/ca.pem" -o /dev/null \
      "https://127.0.0.1:$port/bazel_registry.json" 2>/dev/null && break
    sleep 0.1
  done
  ((i < 300)) || { echo "port $port did not answer over TLS; see $WORK/logs" >&2; exit 1; }
done
p=$(sed -n 1p "$WORK/run/hot.paths")
cmp -s <(curl -fsS --cacert "$WORK/tls/ca.pem" "https://127.0.0.1:$GF$p") \
  <(curl -fsS --cacert "$WORK/tls/ca.pem" "https://127.0.0.1:$NG$p") ||
  { echo "the two servers disagree on $p" >&2; exit 1; }

run_wrk() { # name port
  timeout $((SECONDS_ + 60)) wrk -t2 -c"$CONNS" -d"${SECONDS_}s" --latency -s "$HERE/paths.lua" \
    "https://127.0.0.1:$2" -- "$WORK/run/hot.paths" >"$WORK/logs/wrk-$1-$run.txt" 2>&1
  local rps p99
  rps=$(awk '/^Requests\/sec/ {print $2}' "$WORK/logs/wrk-$1-$run.txt")
  p99=$(awk '$1 == "99%" {print $2}' "$WORK/logs/wrk-$1-$run.txt")
  echo "{\"run\":$run,\"server\":\"$1\",\"rps\":$rps,\"p99\":\"$p99\"}" | tee -a "$WORK/results.jsonl"
}
log "measuring: $RUNS runs of ${SECONDS_} s at $CONNS connections each"
for ((run = 0; run < RUNS; run++)); do
  if ((run % 2 == 0)); then run_wrk gf-registry "$GF"; run_wrk nginx "$NG"
  else run_wrk nginx "$NG"; run_wrk gf-registry "$GF"; fi
done
python3 - "$WORK/results.jsonl" <<'EOF'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
med = {s: statistics.median(r["rps"] for r in rows if r["server"] == s) for s in ("gf-registry", "nginx")}
print(f"medians: gf-registry {med['gf-registry']:,.0f} req/s, nginx {med['nginx']:,.0f} req/s, "
      f"ratio {med['gf-registry'] / med['nginx']:.2f}")
EOF
