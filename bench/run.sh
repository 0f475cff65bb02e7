#!/usr/bin/env bash
# bench/run.sh: gf-registry against nginx, side by side, on loopback. See bench/README.md.
#
#   bench/run.sh [--quick] [--scenario N[,N...]] [--runs K] [--bin PATH] [--keep]
#
# Installs nginx and wrk when missing (apt), builds the server (`cargo build --release
# --locked`), generates every input under a fresh temp dir, starts gf-registry and nginx on
# 127.0.0.1, runs each scenario K times against both, and prints a Markdown table of medians
# (also written to WORKDIR/results.md, with the raw values in WORKDIR/results.jsonl).
# Everything it starts is stopped on exit; large generated data is removed unless --keep.
set -Eeuo pipefail

usage() {
  cat <<'EOF'
usage: bench/run.sh [--quick] [--scenario N[,N...]] [--runs K] [--bin PATH] [--keep]

  --quick          short runs: 3 s per measurement, 1,000 tiny blobs, a 256 MB hashing blob
  --scenario LIST  only these scenarios (1-6, comma separated); default all
  --runs K         runs per scenario; every figure is the median (default 3)
  --bin PATH       use this gf-registry binary instead of building one
  --keep           keep the generated data (registries, blobs, mirror data) after the run

Scenarios: 1 registry hot path, 2 unknown-module 404s, 3 blob serving, 4 cold pull-through,
5 scale (50,000 files + 10,000 pinned blobs), 6 hashing / ingest. See bench/README.md.
EOF
}

QUICK=0 SCENARIOS="1,2,3,4,5,6" RUNS=3 BIN="" KEEP=0
while (($#)); do
  case $1 in
    --quick) QUICK=1 ;;
    --scenario) SCENARIOS=${2:?--scenario needs a value}; shift ;;
    --runs) RUNS=${2:?--runs needs a value}; shift ;;
    --bin) BIN=${2:?--bin needs a value}; shift ;;
    --keep) KEEP=1 ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; exit 2 ;;
  esac
  shift
done
[[ $RUNS =~ ^[1-9][0-9]*$ ]] || { echo "--runs: a positive integer" >&2; exit 2; }
[[ $SCENARIOS =~ ^[1-6](,[1-6])*$ ]] || { echo "--scenario: numbers 1-6, comma separated" >&2; exit 2; }
has() { [[ ",$SCENARIOS," == *",$1,"* ]]; }

if ((QUICK)); then
  DUR=3 WARM=1 TINY=1000 HASH_MB=256
else
  DUR=10 WARM=2 TINY=10000 HASH_MB=1024
fi
COLD_MB=50         # scenario 4 blob
BLOB_MB=100        # scenario 3 blob
SLOW_RATE=20m      # scenario 4 "internet-like" upstream: nginx limit_rate per connection

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
LIB="$HERE/benchlib.py"
START_SECONDS=$SECONDS

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# --- tools ---------------------------------------------------------------------------------
missing=()
command -v nginx >/dev/null || [[ -x /usr/sbin/nginx ]] || missing+=(nginx)
command -v wrk >/dev/null || missing+=(wrk)
command -v curl >/dev/null || missing+=(curl)
command -v openssl >/dev/null || missing+=(openssl)
if ((${#missing[@]})); then
  sudo=""
  ((EUID == 0)) || sudo=sudo
  log "installing ${missing[*]} (apt)"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
command -v python3 >/dev/null || die "python3 is needed"

# --- build ---------------------------------------------------------------------------------
if [[ -z $BIN ]]; then
  log "cargo build --release --locked"
  (cd "$ROOT" && cargo build --release --locked) || die "build failed"
  target=${CARGO_TARGET_DIR:-$ROOT/target}
  [[ $target == /* ]] || target="$ROOT/$target"
  BIN="$target/release/gf-registry"
fi
[[ -x $BIN ]] || die "no gf-registry binary at $BIN"

# --- work dir, process bookkeeping, cleanup ------------------------------------------------
# The work dir goes on tmpfs (/dev/shm) when it has room: the figures then measure CPU and the
# network stack rather than a shared disk, for both servers alike (and creating and deleting
# 60,000 small files takes seconds, not minutes). BENCH_TMPDIR overrides.
need_gb=$((QUICK ? 3 : 8))
base=${BENCH_TMPDIR:-}
if [[ -z $base ]]; then
  base=${TMPDIR:-/tmp}
  if [[ -d /dev/shm && -w /dev/shm ]] &&
    (($(df -P -k /dev/shm | awk 'NR == 2 { print $4 }') > need_gb * 1048576)); then
    base=/dev/shm
  fi
fi
WORK=$(mktemp -d "$base/gf-bench.XXXXXX")
chmod 755 "$WORK"
mkdir -p "$WORK"/{logs,run,nginx,upstream/tiny,policy,tmp}
RESULTS="$WORK/results.jsonl" NOTES="$WORK/notes.txt" REPORT="$WORK/results.md"
: >"$RESULTS"
: >"$NOTES"
log "work dir: $WORK"

PROCS=() # "supervisor_pid:server_pidfile" for every server started (nginx, gf-registry)

alive() { # pid: running and not a zombie
  [[ -r /proc/$1/stat ]] && [[ $(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1) != Z ]]
}
stop_pid() { # pid: TERM, up to 10 s, then KILL; reaps it when it is our child
  local pid=$1 i
  alive "$pid" || { wait "$pid" 2>/dev/null || true; return 0; }
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 100; i++)); do alive "$pid" || break; sleep 0.1; done
  alive "$pid" && kill -KILL "$pid" 2>/dev/null
  wait "$pid" 2>/dev/null || true
}
stop_entry() { # "supervisor:pidfile": the server first, then its supervisor
  local sup=${1%%:*} pidfile=${1#*:}
  [[ -s $pidfile ]] && stop_pid "$(<"$pidfile")"
  stop_pid "$sup"
}
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  local e
  for e in "${PROCS[@]}"; do stop_entry "$e"; done
  if ((!KEEP)); then
    rm -rf "$WORK"/{upstream,reg,scale,data-a,data-b,data-one,nginx/cache,run,tmp}
  fi
  ((rc == 0)) || log "failed (exit $rc); logs in $WORK/logs"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

note() { echo "$*" >>"$NOTES"; log "note: $*"; }
record() { # scenario metric server(gf|base) run value
  [[ $5 =~ ^[0-9.eE+-]+$ ]] || die "bad value for $1/$2/$3: '$5'"
  printf '{"scenario":"%s","metric":"%s","server":"%s","run":%d,"value":%s}\n' "$1" "$2" "$3" "$4" "$5" >>"$RESULTS"
}
calc() { python3 -c "print($1)"; }
now_ns() { date +%s%N; }
sha256_of() { openssl dgst -sha256 -r "$1" | cut -d' ' -f1; }
# Replace the first 32 bytes with random ones: new content (a new digest) without rewriting the
# file, so every run of scenarios 4 and 6 is a genuine cold miss.
mutate() { head -c 32 /dev/urandom | dd of="$1" bs=32 count=1 conv=notrunc status=none; }

# launch NAME READY_URL CMD...: start a server under the benchlib supervisor; sets READY to the
# seconds from process start to the first 200 on READY_URL, and SERVER_PID.
launch() {
  local name=$1 url=$2 i
  shift 2
  rm -f "$WORK/run/$name.ready" "$WORK/run/$name.pid"
  python3 "$LIB" launch --pidfile "$WORK/run/$name.pid" --ready-url "$url" \
    --ready-out "$WORK/run/$name.ready" --log "$WORK/logs/$name.log" --timeout 120 -- "$@" &
  LAST_ENTRY="$!:$WORK/run/$name.pid"
  PROCS+=("$LAST_ENTRY")
  for ((i = 0; i < 1300; i++)); do [[ -e $WORK/run/$name.ready ]] && break; sleep 0.1; done
  READY=$(cat "$WORK/run/$name.ready" 2>/dev/null || echo timeout)
  [[ $READY =~ ^[0-9.]+$ ]] || die "$name did not become ready ($READY); see $WORK/logs/$name.log"
  SERVER_PID=$(<"$WORK/run/$name.pid")
}

# --- data ----------------------------------------------------------------------------------
log "generating the registry (1,000 modules x 5 versions)"
python3 "$HERE/gen_registry.py" --out "$WORK/reg" --modules 1000 --versions 5 \
  --paths "$WORK/run/hot.paths" --missing "$WORK/run/missing.paths" --missing-count 10000
echo "ok" >"$WORK/upstream/ready.txt"
if has 3; then head -c "${BLOB_MB}M" /dev/urandom >"$WORK/upstream/big100.bin"; fi
if has 4; then head -c "${COLD_MB}M" /dev/urandom >"$WORK/upstream/cold50.bin"; fi
if has 6; then
  log "generating the ${HASH_MB} MB hashing blob"
  head -c "${HASH_MB}M" /dev/urandom >"$WORK/upstream/hash.bin"
fi
if has 5; then
  log "generating the scale registry (5,000 modules, 50,000 files) and $TINY tiny upstream files"
  python3 "$HERE/gen_registry.py" --out "$WORK/scale" --modules 5000 --versions 4-5 --seed 11 \
    --paths "$WORK/run/scale.paths"
  python3 - "$WORK/upstream/tiny" "$TINY" <<'EOF'
import os, sys
d, n = sys.argv[1], int(sys.argv[2])
for i in range(n):  # distinct content (distinct digests), 64-200 bytes
    with open(os.path.join(d, f"t{i:05d}.bin"), "wb") as f:
        f.write(f"tiny {i}\n".encode() + os.urandom(56 + i % 137))
EOF
fi

# --- ports, policy, configs ----------------------------------------------------------------
read -r GF_A GF_B NG_REG NG_BLOB NG_PROXY NG_SCALE UP GF_ONE NG_ONE <<<"$(python3 "$LIB" ports 9)"

cat >"$WORK/policy/policy.toml" <<EOF
# The local upstream only (loopback, hence allow_private).
[[upstream]]
prefix = "http://127.0.0.1:$UP/"
allow_private = true

[retention]
cached_max_bytes = "100GiB"
cached_max_age = "30d"

[limits]
max_blob_bytes = "4GiB"
EOF

user_line=""
((EUID == 0)) && user_line="user root;" # workers must read the 0700-born temp dir
# Descriptors: open_file_cache keeps one per cached file, so it must fit the worker's limit
# (the hard limit cannot be raised here; a worker that runs out also fails accept()).
nofile=$(ulimit -Hn)
[[ $nofile == unlimited ]] && nofile=262144
((nofile > 262144)) && nofile=262144
ofc_max=$((nofile - 2048))
((ofc_max >= 256)) || ofc_max=256
mime_types="types { text/plain bazel; application/json json; }"
[[ -r /etc/nginx/mime.types ]] && mime_types="include /etc/nginx/mime.types;"
# Settings shared by the nginx baselines. Documented (and argued) in bench/README.md.
# open_file_cache only when the tree fits in it: with more files than entries, wrk's cyclic
# walk over the paths evicts every entry before its reuse, and the cache is pure overhead.
nginx_http_common() { # root
  local files
  files=$(find "$1" -type f | wc -l)
  if ((files <= ofc_max)); then
    cat <<EOF
    open_file_cache max=$ofc_max inactive=60s;
    open_file_cache_valid 60s;
    open_file_cache_errors on;
EOF
  else
    echo "    open_file_cache off; # $files files > $ofc_max descriptors available"
    note "nginx: open_file_cache off for $1 ($files files, room for $ofc_max descriptors)"
  fi
  cat <<EOF
    $mime_types
    default_type application/octet-stream;
    access_log off;
    log_not_found off;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_timeout 65;
    keepalive_requests 1000000;
    client_body_temp_path $WORK/nginx/client_body;
    proxy_temp_path $WORK/nginx/proxy_temp;
    fastcgi_temp_path $WORK/nginx/fastcgi;
    uwsgi_temp_path $WORK/nginx/uwsgi;
    scgi_temp_path $WORK/nginx/scgi;
EOF
}
nginx_head() { # name workers
  cat <<EOF
$user_line
worker_processes $2;
worker_rlimit_nofile $nofile;
daemon off;
pid $WORK/nginx/$1.pid;
error_log $WORK/logs/nginx-$1-error.log warn;
events { worker_connections 1024; }
EOF
}

# The baseline nginx: registry tree, blob via sendfile, proxy_cache in front of the upstream.
{
  nginx_head baseline 2
  echo "http {"
  nginx_http_common "$WORK/reg"
  cat <<EOF
    proxy_cache_path $WORK/nginx/cache levels=1:2 keys_zone=bench:16m max_size=20g
                     inactive=1h use_temp_path=off;
    server { listen 127.0.0.1:$NG_REG;  root $WORK/reg; }
    server { listen 127.0.0.1:$NG_BLOB; root $WORK/upstream; }
    server {
        listen 127.0.0.1:$NG_PROXY;
        location / {
            proxy_pass http://127.0.0.1:$UP;
            proxy_http_version 1.1;
            proxy_cache bench;
            proxy_cache_valid 200 1h;
            proxy_cache_lock on;           # one upstream fetch per key at a time
            proxy_cache_lock_timeout 120s; # waiters never fall back to their own fetch
            proxy_cache_lock_age 120s;
        }
    }
}
EOF
} >"$WORK/nginx/baseline.conf"

# nginx_static NAME WORKERS PORT ROOT [SIZED_BY]: WORKDIR/nginx/NAME.conf, the baseline's
# settings serving ROOT on PORT (the descriptor cache sized by the tree SIZED_BY, default ROOT).
nginx_static() {
  {
    nginx_head "$1" "$2"
    echo "http {"
    nginx_http_common "${5:-$4}"
    echo "    server { listen 127.0.0.1:$3; root $4; }"
    echo "}"
  } >"$WORK/nginx/$1.conf"
}
# The same baseline for the scale registry (its own process: scenario 5 measures start-up);
# without scenario 5 its tree is not generated.
if has 5; then nginx_static scale 2 "$NG_SCALE" "$WORK/scale"; else nginx_static scale 2 "$NG_SCALE" "$WORK/scale" "$WORK/reg"; fi
# Scenarios 1 and 2 also run with one worker on each side (nginx here, gf-registry with
# server.workers = 1): wrk takes the other core, so neither server's worker shares a core with
# a busy client thread. See bench/README.md.
nginx_static one 1 "$NG_ONE" "$WORK/reg"

# The upstream: a separate nginx (not a contender) that logs every request so fetches can be
# counted. /slow/ is the same files at an internet-like rate.
{
  nginx_head upstream 1
  cat <<EOF
http {
    default_type application/octet-stream;
    log_format fetch '\$request_uri \$status \$body_bytes_sent';
    access_log $WORK/logs/upstream-access.log fetch;
    sendfile on;
    tcp_nopush on;
    client_body_temp_path $WORK/nginx/up_client_body;
    proxy_temp_path $WORK/nginx/up_proxy_temp;
    fastcgi_temp_path $WORK/nginx/up_fastcgi;
    uwsgi_temp_path $WORK/nginx/up_uwsgi;
    scgi_temp_path $WORK/nginx/up_scgi;
    server {
        listen 127.0.0.1:$UP;
        root $WORK/upstream;
        location /slow/ { alias $WORK/upstream/; limit_rate $SLOW_RATE; }
    }
}
EOF
} >"$WORK/nginx/upstream.conf"
mkdir -p "$WORK/nginx/cache"

# --- servers -------------------------------------------------------------------------------
log "starting the upstream, nginx and gf-registry"
launch upstream "http://127.0.0.1:$UP/ready.txt" \
  "$NGINX" -p "$WORK/nginx" -e "$WORK/logs/nginx-upstream-error.log" -c "$WORK/nginx/upstream.conf"
launch nginx "http://127.0.0.1:$NG_REG/bazel_registry.json" \
  "$NGINX" -p "$WORK/nginx" -e "$WORK/logs/nginx-baseline-error.log" -c "$WORK/nginx/baseline.conf"
launch_gf() { # name port registry data [workers] (TMPDIR: the pull-through spool, in the work dir)
  local env=(env -u GF_REGISTRY_WORKERS) # the server's default: one worker per core
  [[ -z ${5:-} ]] || env=(env "GF_REGISTRY_WORKERS=$5")
  # No access log, as the baseline nginx has `access_log off` (binaries from before the
  # setting existed refuse the unknown variable, and have no access log anyway).
  if "$BIN" config show 2>/dev/null | grep -q '^server.access_log'; then
    env+=("GF_REGISTRY_ACCESS_LOG=false")
  fi
  TMPDIR="$WORK/tmp" launch "$1" "http://127.0.0.1:$2/readyz" \
    "${env[@]}" "$BIN" serve --listen "127.0.0.1:$2" --registry "$3" --data "$4" --mirror-policy "$WORK/policy"
}
launch_gf gf-a "$GF_A" "$WORK/reg" "$WORK/data-a"
log "gf-registry ready in ${READY}s"

GF_A_PID=$SERVER_PID
if has 1 || has 2; then
  launch nginx-one "http://127.0.0.1:$NG_ONE/bazel_registry.json" \
    "$NGINX" -p "$WORK/nginx" -e "$WORK/logs/nginx-one-error.log" -c "$WORK/nginx/one.conf"
  launch_gf gf-one "$GF_ONE" "$WORK/reg" "$WORK/data-one" 1
fi

# --- measurement helpers -------------------------------------------------------------------
# settle: wait until gf-registry (instance A) is idle, so work left over from a previous step
# (after a pull-through it computes sha384/sha512 of the blob in the background) does not take
# CPU from the next measurement, whichever server that one measures.
settle() {
  local w
  w=$(python3 "$LIB" settle "$GF_A_PID" 60)
  [[ $w == busy ]] && note "gf-registry was still busy after 60 s before: $*"
  return 0
}
# wrk_run OUT URL PATHS CONNS SECONDS: one wrk run with bench/paths.lua; dies if wrk fails.
wrk_run() {
  timeout $(($5 + 90)) wrk -t2 -c"$4" -d"$5s" --timeout 30s --latency \
    -s "$HERE/paths.lua" "$2" -- "$3" >"$1" 2>&1 || die "wrk failed on $2: $(tail -3 "$1")"
}
# rate SCEN RUN WHO URL PATHS EXPECT(ok|404) [SUFFIX]: warm-up, then measure; records
# rps/p50_ms/p99_ms, each metric name followed by SUFFIX (a variant of the scenario).
rate() {
  local s=$1 r=$2 who=$3 url=$4 paths=$5 expect=$6 x=${7:-} out="$WORK/logs/wrk-s$1${7:-}-$3-r$2.txt"
  settle "scenario $s run $r $who"
  ((WARM == 0)) || wrk_run "$out.warm" "$url" "$paths" 64 "$WARM"
  wrk_run "$out" "$url" "$paths" 64 "$DUR"
  local rps p50 p99 bps n st other
  read -r rps p50 p99 bps n st other < <(python3 "$LIB" wrk "$out")
  if [[ $expect == ok && $st != 0 ]]; then note "scenario $s run $r $who: $st of $n responses were >= 400"; fi
  if [[ $expect == 404 && $st != "$n" ]]; then note "scenario $s run $r $who: only $st of $n responses were >= 400"; fi
  ((other == 0)) || note "scenario $s run $r $who: $other socket errors/timeouts"
  ((n > 0)) || note "scenario $s run $r $who: no responses at all (see $out)"
  record "$s" "rps$x" "$who" "$r" "$rps"
  record "$s" "p50_ms$x" "$who" "$r" "$p50"
  record "$s" "p99_ms$x" "$who" "$r" "$p99"
  log "  s$s$x run $r $who: $rps req/s, p50 ${p50} ms, p99 ${p99} ms"
}
# blob_rate RUN METRIC WHO URL_PATH_FILE BASE_URL: 4 connections on one 100 MB blob; MB/s.
blob_rate() {
  local r=$1 m=$2 who=$3 paths=$4 url=$5 out="$WORK/logs/wrk-s3-$2-$3-r$1.txt"
  settle "scenario 3 run $r $who $m"
  wrk_run "$out" "$url" "$paths" 4 "$DUR"
  local rps p50 p99 bps n st other
  read -r rps p50 p99 bps n st other < <(python3 "$LIB" wrk "$out")
  ((st == 0 && other == 0)) || note "scenario 3 run $r $who $m: $st bad statuses, $other socket errors"
  local mbps
  mbps=$(calc "$bps / 1e6")
  record 3 "$m" "$who" "$r" "$mbps"
  log "  s3 run $r $who $m: $mbps MB/s ($n responses)"
}

# --- scenarios 1 and 2 ---------------------------------------------------------------------
if has 1 || has 2; then
  # Sanity: both servers serve the same bytes for a sample path, and 404 an unknown module.
  p=$(head -1 "$WORK/run/hot.paths")
  cmp -s <(curl -sS --max-time 10 "http://127.0.0.1:$GF_A$p") <(curl -sS --max-time 10 "http://127.0.0.1:$NG_REG$p") ||
    die "gf-registry and nginx disagree on $p"
  for port in "$GF_ONE" "$NG_ONE"; do
    cmp -s <(curl -sS --max-time 10 "http://127.0.0.1:$GF_A$p") <(curl -sS --max-time 10 "http://127.0.0.1:$port$p") ||
      die "port $port serves other bytes for $p"
  done
  p=$(head -1 "$WORK/run/missing.paths")
  for port in "$GF_A" "$NG_REG" "$GF_ONE" "$NG_ONE"; do
    c=$(curl -s -o /dev/null --max-time 10 -w '%{http_code}' "http://127.0.0.1:$port$p")
    [[ $c == 404 ]] || die "expected 404 for $p on port $port, got $c"
  done
fi
# Each scenario runs both sides once per run: gf-registry first in odd runs, nginx first in
# even runs, so a slow drift of the shared machine favours neither.
alternate() { # RUN FN_GF FN_BASE
  if (($1 % 2)); then "$2"; "$3"; else "$3"; "$2"; fi
}
s1_gf() { rate 1 "$r" gf "http://127.0.0.1:$GF_A" "$WORK/run/hot.paths" ok; }
s1_base() { rate 1 "$r" base "http://127.0.0.1:$NG_REG" "$WORK/run/hot.paths" ok; }
s2_gf() { rate 2 "$r" gf "http://127.0.0.1:$GF_A" "$WORK/run/missing.paths" 404; }
s2_base() { rate 2 "$r" base "http://127.0.0.1:$NG_REG" "$WORK/run/missing.paths" 404; }
s1_gf1() { rate 1 "$r" gf "http://127.0.0.1:$GF_ONE" "$WORK/run/hot.paths" ok _w1; }
s1_base1() { rate 1 "$r" base "http://127.0.0.1:$NG_ONE" "$WORK/run/hot.paths" ok _w1; }
s2_gf1() { rate 2 "$r" gf "http://127.0.0.1:$GF_ONE" "$WORK/run/missing.paths" 404 _w1; }
s2_base1() { rate 2 "$r" base "http://127.0.0.1:$NG_ONE" "$WORK/run/missing.paths" 404 _w1; }
for ((r = 1; r <= RUNS; r++)); do
  if has 1; then
    log "scenario 1 (registry hot path), run $r/$RUNS"
    alternate "$r" s1_gf s1_base
    alternate "$r" s1_gf1 s1_base1
  fi
  if has 2; then
    log "scenario 2 (unknown-module 404s), run $r/$RUNS"
    alternate "$r" s2_gf s2_base
    alternate "$r" s2_gf1 s2_base1
  fi
done

# --- scenario 3 ----------------------------------------------------------------------------
if has 3; then
  log "scenario 3 (blob serving): pulling the ${BLOB_MB} MB blob through the mirror to pin it"
  hex=$(sha256_of "$WORK/upstream/big100.bin")
  mpath="/mirror/127.0.0.1:$UP/big100.bin"
  got=$(curl -sS --max-time 300 "http://127.0.0.1:$GF_A$mpath" | openssl dgst -sha256 -r | cut -d' ' -f1)
  [[ $got == "$hex" ]] || die "pull-through of big100.bin returned other bytes ($got)"
  c=$(curl -s -o /dev/null --max-time 300 -w '%{http_code}' "http://127.0.0.1:$GF_A/cas/sha256/$hex")
  [[ $c == 200 ]] || die "/cas/sha256/$hex answered $c after the pull-through"
  echo "$mpath" >"$WORK/run/s3-mirror.paths"
  echo "/cas/sha256/$hex" >"$WORK/run/s3-cas.paths"
  echo "/big100.bin" >"$WORK/run/s3-nginx.paths"
  s3_gf() {
    blob_rate "$r" mirror_MBps gf "$WORK/run/s3-mirror.paths" "http://127.0.0.1:$GF_A"
    blob_rate "$r" cas_MBps gf "$WORK/run/s3-cas.paths" "http://127.0.0.1:$GF_A"
  }
  s3_base() {
    blob_rate "$r" mirror_MBps base "$WORK/run/s3-nginx.paths" "http://127.0.0.1:$NG_BLOB"
    # One nginx measurement is the baseline of both gf-registry routes.
    tail -1 "$RESULTS" | sed 's/"mirror_MBps"/"cas_MBps"/' >>"$RESULTS"
  }
  for ((r = 1; r <= RUNS; r++)); do
    log "scenario 3, run $r/$RUNS"
    alternate "$r" s3_gf s3_base
  done
fi

# --- scenario 4 ----------------------------------------------------------------------------
# fan_out TAG URL EXPECT_SHA: 64 concurrent GETs from one curl process (--parallel-immediate,
# so all 64 connections open at once; one process, not 64, so that process start-up is not
# part of the figure). Sets ALL64 (s, wall time until the last one completes) and FETCHES.
fan_out() {
  local tag=$1 url=$2 want=$3 dir="$WORK/run/s4-$1" i t0 t1
  mkdir -p "$dir"
  for ((i = 1; i <= 64; i++)); do
    echo "url = \"$url\""
    if ((i == 1)); then echo "output = \"$dir/body\""; else echo 'output = "/dev/null"'; fi
  done >"$dir/curl.cfg"
  settle "scenario 4 $tag"
  t0=$(now_ns)
  curl -sS --no-progress-meter -Z --parallel-immediate --parallel-max 64 --max-time 300 -K "$dir/curl.cfg" \
    -w '%{http_code} %{size_download} %{time_total}\n' >"$dir/w.txt" 2>"$dir/err.txt" || true
  t1=$(now_ns)
  ALL64=$(calc "($t1 - $t0) / 1e9")
  local ok
  ok=$(awk -v n=$((COLD_MB * 1048576)) '$1 == 200 && $2 == n' "$dir/w.txt" | wc -l)
  ((ok == 64)) || note "scenario 4 $tag: only $ok of 64 transfers completed with 200 and the full size"
  [[ $(sha256_of "$dir/body") == "$want" ]] || note "scenario 4 $tag: a client received other bytes"
  sleep 0.5 # the upstream logs a request when it completes
  FETCHES=$(grep -c -- "via=$tag " "$WORK/logs/upstream-access.log" || true)
  rm -f "$dir/body"
}
# One side of a scenario 4 run (reads the loop's r, mode, pre, m, want and direct).
s4_side() { # who tag url
  fan_out "$2" "$3" "$want"
  record 4 "upstream_fetches$m" "$1" "$r" "$FETCHES"
  record 4 "all64_s$m" "$1" "$r" "$ALL64"
  record 4 "all64_over_direct$m" "$1" "$r" "$(calc "$ALL64 / $direct")"
  log "  s4 $mode run $r $1: $FETCHES upstream fetch(es), all 64 in ${ALL64}s"
}
s4_gf() { s4_side gf "gf-$mode-$r" "http://127.0.0.1:$GF_A/mirror/127.0.0.1:$UP/${pre}cold50.bin?via=gf-$mode-$r"; }
s4_base() { s4_side base "ng-$mode-$r" "http://127.0.0.1:$NG_PROXY/${pre}cold50.bin?via=ng-$mode-$r"; }
if has 4; then
  for ((r = 1; r <= RUNS; r++)); do
    for mode in slow fast; do
      log "scenario 4 (cold pull-through, upstream $mode), run $r/$RUNS"
      mutate "$WORK/upstream/cold50.bin"
      want=$(sha256_of "$WORK/upstream/cold50.bin")
      settle "scenario 4 direct download"
      pre=""
      [[ $mode == slow ]] && pre="slow/"
      read -r direct code < <(curl -sS -o /dev/null --max-time 300 -w '%{time_total} %{http_code}\n' \
        "http://127.0.0.1:$UP/${pre}cold50.bin?via=direct-$mode-$r")
      [[ $code == 200 ]] || die "direct download answered $code"
      m=""
      [[ $mode == fast ]] && m="_fast"
      record 4 "direct_s$m" gf "$r" "$direct"
      record 4 "direct_s$m" base "$r" "$direct"
      log "  s4 $mode run $r: direct download ${direct}s"
      alternate "$r" s4_gf s4_base
    done
  done
fi

# --- scenario 5 ----------------------------------------------------------------------------
if has 5; then
  log "scenario 5 (scale): pulling $TINY tiny files through the mirror to pin them"
  launch_gf gf-b-setup "$GF_B" "$WORK/scale" "$WORK/data-b"
  setup_entry=$LAST_ENTRY
  for ((i = 0; i < TINY; i++)); do
    printf 'url = "http://127.0.0.1:%s/mirror/127.0.0.1:%s/tiny/t%05d.bin"\noutput = "/dev/null"\n' "$GF_B" "$UP" "$i"
  done >"$WORK/run/tiny.cfg"
  t0=$(now_ns)
  curl -sS --no-progress-meter -Z --parallel-max 16 --max-time 60 -K "$WORK/run/tiny.cfg" -w '%{http_code}\n' \
    >"$WORK/run/tiny.codes" 2>"$WORK/logs/tiny-curl.err" || true
  t1=$(now_ns)
  tiny_s=$(calc "($t1 - $t0) / 1e9")
  ok=$(grep -c '^200$' "$WORK/run/tiny.codes" || true)
  ((ok == TINY)) || note "scenario 5 setup: only $ok of $TINY tiny pulls answered 200"
  record 5 tiny_pull_s gf 1 "$tiny_s"
  note "scenario 5 setup: pulled $ok tiny blobs through the mirror (16 in parallel) in $(calc "round($tiny_s, 1)") s ($(calc "round($ok / $tiny_s)")/s)"
  stop_entry "$setup_entry"
  note "scenario 5: $(find "$WORK/data-b/records" -type f | wc -l) record files, $(find "$WORK/scale" -type f | wc -l) registry files"

  s5_gf() {
    launch_gf "gf-b-$r" "$GF_B" "$WORK/scale" "$WORK/data-b"
    entry=$LAST_ENTRY
    record 5 ready_s gf "$r" "$READY"
    wrk_run "$WORK/logs/wrk-s5-gf-r$r.warm" "http://127.0.0.1:$GF_B" "$WORK/run/scale.paths" 64 "$WARM"
    rss=$(python3 "$LIB" rss "$SERVER_PID")
    record 5 rss_MB gf "$r" "$rss"
    log "  s5 run $r gf: ready in ${READY}s, RSS ${rss} MB after warm-up"
    WARM=0 rate 5 "$r" gf "http://127.0.0.1:$GF_B" "$WORK/run/scale.paths" ok
    stop_entry "$entry"
  }
  s5_base() {
    launch "nginx-scale-$r" "http://127.0.0.1:$NG_SCALE/bazel_registry.json" \
      "$NGINX" -p "$WORK/nginx" -e "$WORK/logs/nginx-scale-error.log" -c "$WORK/nginx/scale.conf"
    entry=$LAST_ENTRY
    record 5 ready_s base "$r" "$READY"
    wrk_run "$WORK/logs/wrk-s5-base-r$r.warm" "http://127.0.0.1:$NG_SCALE" "$WORK/run/scale.paths" 64 "$WARM"
    # master + workers (VmRSS summed: shared pages counted in each, so an upper bound)
    rss=$(python3 "$LIB" rss "$SERVER_PID" $(ps -o pid= --ppid "$SERVER_PID"))
    record 5 rss_MB base "$r" "$rss"
    log "  s5 run $r nginx: ready in ${READY}s, RSS ${rss} MB after warm-up"
    WARM=0 rate 5 "$r" base "http://127.0.0.1:$NG_SCALE" "$WORK/run/scale.paths" ok
    stop_entry "$entry"
  }
  for ((r = 1; r <= RUNS; r++)); do
    log "scenario 5, run $r/$RUNS"
    alternate "$r" s5_gf s5_base
  done
fi

# --- scenario 6 ----------------------------------------------------------------------------
if has 6; then
  size=$((HASH_MB * 1048576))
  for ((r = 1; r <= RUNS; r++)); do
    log "scenario 6 (hashing, ${HASH_MB} MB), run $r/$RUNS"
    mutate "$WORK/upstream/hash.bin"
    settle "scenario 6 run $r"
    # openssl: wall time, and its CPU time (user + sys) from bash's `time`.
    t0=$(now_ns)
    { TIMEFORMAT='%3U %3S'; time openssl dgst -sha256 -r "$WORK/upstream/hash.bin" >"$WORK/run/s6.sha"; } 2>"$WORK/run/s6.time"
    t1=$(now_ns)
    want=$(cut -d' ' -f1 "$WORK/run/s6.sha") # the run also left the file in the page cache
    ossl=$(calc "($t1 - $t0) / 1e9")
    read -r ou os <"$WORK/run/s6.time"
    cpu0=$(python3 "$LIB" cpu "$GF_A_PID")
    read -r secs code bytes < <(curl -sS -o /dev/null --max-time 600 -w '%{time_total} %{http_code} %{size_download}\n' \
      "http://127.0.0.1:$GF_A/mirror/127.0.0.1:$UP/hash.bin?run=$r")
    [[ $code == 200 && $bytes == "$size" ]] || die "ingest answered $code with $bytes bytes"
    bg=$(python3 "$LIB" settle "$GF_A_PID" 120)
    cpu1=$(python3 "$LIB" cpu "$GF_A_PID")
    record 6 cpu_s_per_GB gf "$r" "$(calc "($cpu1 - $cpu0) / ($size / 1e9)")"
    record 6 cpu_s_per_GB base "$r" "$(calc "($ou + $os) / ($size / 1e9)")"
    c=$(curl -s -o /dev/null --max-time 30 -w '%{http_code}' "http://127.0.0.1:$GF_A/api/v1/blobs/$want")
    [[ $c == 200 ]] || note "scenario 6 run $r: the ingested blob is not known by its sha256 ($c)"
    record 6 ingest_GBps gf "$r" "$(calc "$size / 1e9 / $secs")"
    record 6 ingest_GBps base "$r" "$(calc "$size / 1e9 / $ossl")"
    record 6 ingest_s gf "$r" "$secs"
    record 6 ingest_s base "$r" "$ossl"
    log "  s6 run $r: ingest ${secs}s (then busy ${bg}s more; $(calc "round($cpu1 - $cpu0, 2)") CPU s in all), openssl ${ossl}s"
    # The same ingest with no client reading along (as a publish or a candidate fetch runs
    # it): the request is dropped after its status line, and the time runs until the blob
    # is known by its sha256 (fetched, hashed, verified, stored and recorded).
    mutate "$WORK/upstream/hash.bin"
    settle "scenario 6 store run $r"
    t0=$(now_ns)
    openssl dgst -sha256 -r "$WORK/upstream/hash.bin" >"$WORK/run/s6.sha"
    t1=$(now_ns)
    want=$(cut -d' ' -f1 "$WORK/run/s6.sha")
    ossl=$(calc "($t1 - $t0) / 1e9")
    st=$(python3 "$LIB" store "http://127.0.0.1:$GF_A/mirror/127.0.0.1:$UP/hash.bin?run=store-$r" \
      "http://127.0.0.1:$GF_A/api/v1/blobs/$want" 600)
    [[ $st != timeout ]] || die "scenario 6: the blob was not stored within 600 s"
    record 6 store_GBps gf "$r" "$(calc "$size / 1e9 / $st")"
    record 6 store_GBps base "$r" "$(calc "$size / 1e9 / $ossl")"
    log "  s6 run $r: stored with no client in ${st}s, openssl ${ossl}s"
    settle "scenario 6 after the store run $r"
  done
fi

# --- report --------------------------------------------------------------------------------
commit=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
[[ -z $(git -C "$ROOT" status --porcelain 2>/dev/null) ]] || commit+=" (working tree with uncommitted changes)"
mode="full"
((QUICK)) && mode="quick"
mode+=" (${DUR} s per measurement after ${WARM} s warm-up; ${TINY} pinned blobs; ${HASH_MB} MB hashing blob)"
python3 - "$WORK/run/meta.json" "$commit" "$("$NGINX" -v 2>&1 | sed 's/.*: //')" \
  "$(wrk -v 2>&1 | head -1 | cut -d' ' -f1-2)" "$(openssl version | cut -d' ' -f1-2)" "$mode" "$RUNS" \
  "$(cut -d' ' -f1-3 /proc/loadavg)" <<'EOF'
import datetime, json, os, sys
out, commit, nginx, wrk, openssl, mode, runs, load = sys.argv[1:]
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
mem = next((l.split()[1] for l in open("/proc/meminfo") if l.startswith("MemTotal")), "0")
json.dump({
    "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    "machine": f"{cpu}, {os.cpu_count()} CPUs, {int(mem) // 1024 // 1024} GiB RAM",
    "commit": commit, "nginx": nginx, "wrk": wrk, "openssl": openssl, "mode": mode,
    "runs": int(runs), "loadavg": load,
}, open(out, "w"))
EOF
note "wall time of the whole run: $((SECONDS - START_SECONDS)) s"
python3 "$LIB" table "$RESULTS" "$WORK/run/meta.json" "$NOTES" >"$REPORT"
cp "$WORK/run/meta.json" "$WORK/meta.json"
echo
cat "$REPORT"
echo
echo "results: $REPORT (raw values: $RESULTS, logs: $WORK/logs/)"
