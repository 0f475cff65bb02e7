#!/usr/bin/env python3
"""Helpers for bench/run.sh (python3 stdlib only).

Subcommands:
  ports N                      print N free loopback TCP ports
  launch --pidfile F --ready-url URL --ready-out R --log L [--timeout S] -- CMD...
                               start CMD, poll URL every 10 ms until it answers 200, write the
                               seconds from process start to that answer (or "timeout" /
                               "exited") to R, then stay as CMD's parent until it exits
                               (SIGTERM/SIGINT are forwarded). The server's pid goes to F.
  wrk FILE                     read wrk's output (with bench/paths.lua) and print
                               "rps p50_ms p99_ms bytes_per_s requests err_status err_other"
  rss PID...                   sum of VmRSS over the given pids, in MB (10^6 bytes)
  cpu PID                      CPU seconds (user + system) the process has used so far
  settle PID [TIMEOUT]         wait until PID is idle (under 5 % of a core over 300 ms), at
                               most TIMEOUT s (default 60); prints the seconds waited, or
                               "busy" when it never settled
  store URL API [TIMEOUT]      send GET URL and close the connection as soon as the status line
                               arrives (the mirror keeps fetching for no one), then poll API
                               every 10 ms until it answers 200; prints the seconds from the
                               request to that answer, or "timeout" (default 120 s)
  table RESULTS.jsonl META.json NOTES.txt
                               the Markdown report (medians over runs, ratios, targets)
"""

import http.client
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.parse


def cmd_ports(n: str) -> None:
    socks = []
    for _ in range(int(n)):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    print(" ".join(str(s.getsockname()[1]) for s in socks))
    for s in socks:
        s.close()


def cmd_launch(argv: list[str]) -> int:
    opts, cmd = {}, []
    it = iter(argv)
    for a in it:
        if a == "--":
            cmd = list(it)
            break
        opts[a] = next(it)
    host_port, _, path = opts["--ready-url"].removeprefix("http://").partition("/")
    host, _, port = host_port.partition(":")
    timeout = float(opts.get("--timeout", "120"))
    log = open(opts["--log"], "ab")
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    with open(opts["--pidfile"], "w") as f:
        f.write(f"{proc.pid}\n")

    def forward(sig, _frame):
        try:
            proc.send_signal(sig)
        except ProcessLookupError:
            pass

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)

    result = "timeout"
    while time.perf_counter() - t0 < timeout:
        if proc.poll() is not None:
            result = "exited"
            break
        try:
            c = http.client.HTTPConnection(host, int(port), timeout=1)
            c.request("GET", "/" + path)
            status = c.getresponse().status
            c.close()
            if status == 200:
                result = f"{time.perf_counter() - t0:.4f}"
                break
        except OSError:
            pass
        time.sleep(0.01)
    tmp = opts["--ready-out"] + ".tmp"
    with open(tmp, "w") as f:
        f.write(result + "\n")
    os.replace(tmp, opts["--ready-out"])
    if result in ("timeout", "exited"):
        if proc.poll() is None:
            proc.kill()
    return proc.wait()


def parse_wrk(path: str) -> dict:
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if line.startswith("BENCH_JSON "):
                return json.loads(line[len("BENCH_JSON "):])
    raise SystemExit(f"{path}: no BENCH_JSON line (did wrk fail?)")


def cmd_wrk(path: str) -> None:
    d = parse_wrk(path)
    secs = d["duration_us"] / 1e6
    other = d["err_connect"] + d["err_read"] + d["err_write"] + d["err_timeout"]
    print(
        f"{d['requests'] / secs:.1f} {d['p50_us'] / 1000:.3f} {d['p99_us'] / 1000:.3f} "
        f"{d['bytes'] / secs:.0f} {d['requests']} {d['err_status']} {other}"
    )


def cmd_rss(pids: list[str]) -> None:
    total_kb = 0
    for pid in pids:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    total_kb += int(line.split()[1])
    print(f"{total_kb * 1024 / 1e6:.1f}")


def cpu_seconds(pid: str) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # fields[0] is the state (field 3), so utime (14) and stime (15) are at 11 and 12.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cmd_store(url: str, api: str, timeout: str = "120") -> None:
    u = urllib.parse.urlsplit(url)
    target = u.path + (f"?{u.query}" if u.query else "")
    t0 = time.perf_counter()
    with socket.create_connection((u.hostname, u.port), timeout=30) as s:
        s.sendall(f"GET {target} HTTP/1.1\r\nHost: {u.netloc}\r\nConnection: close\r\n\r\n".encode())
        s.recv(4096)
    a = urllib.parse.urlsplit(api)
    while time.perf_counter() - t0 < float(timeout):
        conn = http.client.HTTPConnection(a.hostname, a.port, timeout=10)
        try:
            conn.request("GET", a.path)
            if conn.getresponse().status == 200:
                print(f"{time.perf_counter() - t0:.3f}")
                return
        except OSError:
            pass
        finally:
            conn.close()
        time.sleep(0.01)
    print("timeout")


def cmd_settle(pid: str, timeout: str = "60") -> None:
    t0 = time.perf_counter()
    window = 0.3
    prev = cpu_seconds(pid)
    while time.perf_counter() - t0 < float(timeout):
        time.sleep(window)
        cur = cpu_seconds(pid)
        if cur - prev < 0.05 * window:
            print(f"{time.perf_counter() - t0:.2f}")
            return
        prev = cur
    print("busy")


# --- the report ----------------------------------------------------------------------------

# (scenario, metric id, label, baseline name, format, target text, check(gf, base, ratio))
# A check returns True/False, or None when it does not apply. Ratios are always gf / baseline.
ROWS = [
    ("1", "rps", "requests/s", "nginx", "{:,.0f}", ">= 1.0 x nginx", lambda g, b, r: r >= 1.0),
    ("1", "p50_ms", "p50 latency (ms)", "nginx", "{:.2f}", "", None),
    ("1", "p99_ms", "p99 latency (ms)", "nginx", "{:.2f}", "< 5 ms", lambda g, b, r: g < 5),
    ("2", "rps", "requests/s (404)", "nginx", "{:,.0f}", ">= 1.0 x nginx", lambda g, b, r: r >= 1.0),
    ("2", "p50_ms", "p50 latency (ms)", "nginx", "{:.2f}", "", None),
    ("2", "p99_ms", "p99 latency (ms)", "nginx", "{:.2f}", "< 5 ms", lambda g, b, r: g < 5),
    # Scenarios 1 and 2 again with one worker on each side (gf-registry server.workers = 1,
    # nginx worker_processes 1), so that wrk's two threads have the other core to themselves.
    ("1", "rps_w1", "requests/s, one worker each", "nginx, 1 worker", "{:,.0f}", ">= 1.0 x nginx", lambda g, b, r: r >= 1.0),
    ("1", "p50_ms_w1", "p50 latency (ms), one worker each", "nginx, 1 worker", "{:.2f}", "", None),
    ("1", "p99_ms_w1", "p99 latency (ms), one worker each", "nginx, 1 worker", "{:.2f}", "< 5 ms", lambda g, b, r: g < 5),
    ("2", "rps_w1", "requests/s (404), one worker each", "nginx, 1 worker", "{:,.0f}", ">= 1.0 x nginx", lambda g, b, r: r >= 1.0),
    ("2", "p50_ms_w1", "p50 latency (ms), one worker each", "nginx, 1 worker", "{:.2f}", "", None),
    ("2", "p99_ms_w1", "p99 latency (ms), one worker each", "nginx, 1 worker", "{:.2f}", "< 5 ms", lambda g, b, r: g < 5),
    ("3", "mirror_MBps", "MB/s via /mirror/...", "nginx sendfile", "{:,.0f}", ">= 0.9 x nginx", lambda g, b, r: r >= 0.9),
    ("3", "cas_MBps", "MB/s via /cas/sha256/...", "nginx sendfile", "{:,.0f}", ">= 0.9 x nginx", lambda g, b, r: r >= 0.9),
    # Scenario 4 runs twice: upstream at 20 MiB/s (nginx limit_rate, an internet-like origin:
    # the upstream is the bottleneck, as coalescing assumes) and unthrottled (loopback: the
    # 64 x 50 MB fan-out to the clients dominates). Keep the label in step with SLOW_RATE.
    ("4", "upstream_fetches", "upstream fetches (upstream 20 MiB/s)", "nginx proxy_cache_lock", "{:.0f}", "exactly 1", lambda g, b, r: g == 1),
    ("4", "all64_s", "all 64 done, s (upstream 20 MiB/s)", "nginx proxy_cache_lock", "{:.3f}", "", None),
    ("4", "direct_s", "one direct download, s (upstream 20 MiB/s)", "upstream direct", "{:.3f}", "", None),
    ("4", "all64_over_direct", "all 64 / direct (upstream 20 MiB/s)", "nginx proxy_cache_lock", "{:.2f}", "<= 1.5", lambda g, b, r: g <= 1.5),
    ("4", "upstream_fetches_fast", "upstream fetches (unthrottled)", "nginx proxy_cache_lock", "{:.0f}", "exactly 1", lambda g, b, r: g == 1),
    ("4", "all64_s_fast", "all 64 done, s (unthrottled)", "nginx proxy_cache_lock", "{:.3f}", "", None),
    ("4", "direct_s_fast", "one direct download, s (unthrottled)", "upstream direct", "{:.3f}", "", None),
    ("4", "all64_over_direct_fast", "all 64 / direct (unthrottled)", "nginx proxy_cache_lock", "{:.2f}", "<= 1.5", lambda g, b, r: g <= 1.5),
    ("5", "ready_s", "start to ready (s)", "nginx", "{:.3f}", "< 2 s", lambda g, b, r: g < 2),
    ("5", "rss_MB", "RSS after warm-up (MB)", "nginx (sum)", "{:.1f}", "< 100 MB", lambda g, b, r: g < 100),
    ("5", "rps", "requests/s", "nginx", "{:,.0f}", "", None),
    ("5", "p99_ms", "p99 latency (ms)", "nginx", "{:.2f}", "", None),
    ("5", "rps_vs_s1", "rate vs scenario 1 (same server)", "nginx", "{:.2f}", ">= 0.90", lambda g, b, r: g >= 0.9),
    ("5", "tiny_pull_s", "setup: pulling the tiny blobs (s)", "", "{:.1f}", "", None),
    ("6", "ingest_GBps", "GB/s, pulled through to a client (vs hash)", "openssl dgst -sha256", "{:.2f}", ">= 0.8 x openssl", lambda g, b, r: r >= 0.8),
    ("6", "ingest_s", "seconds for the blob, to a client", "openssl dgst -sha256", "{:.2f}", "", None),
    # The same ingest with no client reading along: fetched, hashed, verified and stored.
    ("6", "store_GBps", "GB/s, stored with no client waiting (vs hash)", "openssl dgst -sha256", "{:.2f}", ">= 0.8 x openssl", lambda g, b, r: r >= 0.8),
    # All the CPU the ingest costs, background work after the response included.
    ("6", "cpu_s_per_GB", "CPU seconds per GB (incl. background)", "openssl dgst -sha256", "{:.2f}", "", None),
]

TITLES = {
    "1": "1 registry hot path",
    "2": "2 unknown-module 404s",
    "3": "3 blob serving (100 MB)",
    "4": "4 cold pull-through (50 MB x 64)",
    "5": "5 scale (50k files + pinned blobs)",
    "6": "6 hashing / ingest",
}


def fmt(spec: str, v) -> str:
    return "n/a" if v is None else spec.format(v)


def cmd_table(results_path: str, meta_path: str, notes_path: str) -> None:
    with open(meta_path) as f:
        meta = json.load(f)
    notes = []
    if os.path.exists(notes_path):
        with open(notes_path) as f:
            notes = [n.strip() for n in f if n.strip()]
    vals: dict[tuple, list[float]] = {}
    with open(results_path) as f:
        for line in f:
            if line.strip():
                r = json.loads(line)
                vals.setdefault((r["scenario"], r["metric"], r["server"]), []).append(float(r["value"]))

    def med(s, m, who):
        v = vals.get((s, m, who))
        return statistics.median(v) if v else None

    # Derived: scenario 5's rate relative to scenario 1's, per server (medians).
    for who in ("gf", "base"):
        a, b = med("5", "rps", who), med("1", "rps", who)
        if a is not None and b:
            vals[("5", "rps_vs_s1", who)] = [a / b]

    out = [
        f"# gf-registry vs nginx: {meta['date']}",
        "",
        f"- machine: {meta['machine']}",
        f"- gf-registry {meta['commit']}; {meta['nginx']}; {meta['wrk']}; {meta['openssl']}",
        f"- mode: {meta['mode']}; {meta['runs']} run(s) per scenario, every figure is the median over runs",
        f"- load average at start: {meta['loadavg']}",
        "",
        "| Scenario | Metric | gf-registry | Baseline | Baseline value | gf / baseline | Target | Met |",
        "| --- | --- | ---: | --- | ---: | ---: | --- | --- |",
    ]
    for s, m, label, base, spec, target, check in ROWS:
        g, b = med(s, m, "gf"), med(s, m, "base")
        if g is None and b is None:
            continue
        ratio = g / b if (g is not None and b) else None
        met = ""
        if check is not None and g is not None:
            try:
                ok = check(g, b, ratio)
            except TypeError:  # a ratio the check needs is missing
                ok = None
            met = "" if ok is None else ("yes" if ok else "**no**")
        out.append(
            f"| {TITLES[s]} | {label} | {fmt(spec, g)} | {base} | {fmt(spec, b)} | "
            f"{fmt('{:.2f}', ratio)} | {target} | {met} |"
        )
    out += ["", "Per-run values (gf-registry / baseline):", ""]
    out += ["| Scenario | Metric | gf-registry runs | baseline runs |", "| --- | --- | --- | --- |"]
    for s, m, label, _base, spec, _t, _c in ROWS:
        g, b = vals.get((s, m, "gf"), []), vals.get((s, m, "base"), [])
        if (g or b) and m != "rps_vs_s1":
            out.append(
                f"| {s} | {label} | {', '.join(spec.format(x) for x in g)} | "
                f"{', '.join(spec.format(x) for x in b)} |"
            )
    if notes:
        out += ["", "Notes:", ""] + [f"- {n}" for n in notes]
    print("\n".join(out))


def main() -> int:
    if len(sys.argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "ports":
        cmd_ports(*args)
    elif cmd == "launch":
        return cmd_launch(args)
    elif cmd == "wrk":
        cmd_wrk(*args)
    elif cmd == "rss":
        cmd_rss(args)
    elif cmd == "cpu":
        print(f"{cpu_seconds(*args):.2f}")
    elif cmd == "settle":
        cmd_settle(*args)
    elif cmd == "store":
        cmd_store(*args)
    elif cmd == "table":
        cmd_table(*args)
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
