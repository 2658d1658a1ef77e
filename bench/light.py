"""Light-request throughput: layerscope against a bare axum 0.8 server, in one run, with wrk.

  python bench/light.py [--layerscope target/release/layerscope] [--baseline [LABEL=]OTHER_BINARY ...] [--logs-off]
                       [--seconds 3] [--rounds 5] [--connections 32] [--threads 2] [--only healthz]

Builds nothing: scripts/bench-http installs wrk, builds the release binary and the bare_axum
example, and runs this. Starts each server on a free loopback port, runs wrk for each case
(layerscope with its default logging and metrics on, logs to /dev/null) on every server in each
of `--rounds` rounds, and prints a Markdown table of medians: requests/s, p99 latency, and the
median of each round's ratio to the bare server's requests/s for the same body (GET /healthz
against bare GET /healthz; a POST against bare axum parsing and echoing the same JSON body).
`--baseline` (repeatable, `LABEL=PATH`) adds the same cases for another layerscope binary (an
older build), and `--logs-off` the same binary with `LAYERSCOPE_LOG=off`, measured in the same
rounds. The last columns are the server's own CPU time (user + system, from /proc) per
request, and the median of each round's bare-axum figure over it: wrk shares the CPUs, so the
req/s ratio also moves with wrk's share, where the CPU ratio is the server's alone. Needs wrk
(Debian: apt-get install wrk) and Linux.
"""
import argparse
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

CASES = [
    ("GET /healthz", "GET", "/healthz", None),
    ("POST /v1/receptive-field vgg_stem, verify off", "POST", "/v1/receptive-field", {"model": {"preset": "vgg_stem"}, "verify": False}),
    ("POST /v1/complexity inception_reduced, verify off", "POST", "/v1/complexity", {"model": {"preset": "inception_reduced"}, "verify": False}),
    ("POST /v1/complexity resnet50, verify off", "POST", "/v1/complexity", {"model": {"preset": "resnet50"}, "verify": False}),
]

BARE = "bare axum 0.8"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(cmd, env, port):
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(200):
        if p.poll() is not None:
            sys.exit(f"{cmd[0]} exited with {p.returncode} before answering")
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1).read()
            return p
        except Exception:  # noqa: BLE001
            time.sleep(0.05)
    p.kill()
    sys.exit(f"{cmd[0]} did not answer on port {port}")


def cpu_seconds(pid):
    """The process's user and system CPU time so far (Linux /proc), seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wrk(url, method, body, a, pid):
    """(req/s, p99 ms, the server's CPU microseconds per request) of one wrk run."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        if method == "POST":
            f.write(f'wrk.method = "POST"\nwrk.body = {json.dumps(json.dumps(body))}\nwrk.headers["Content-Type"] = "application/json"\n')
        script = f.name
    before = cpu_seconds(pid)
    out = subprocess.run(["wrk", f"-t{a.threads}", f"-c{a.connections}", f"-d{a.seconds}s", "--latency", "-s", script, url],
                         capture_output=True, text=True, timeout=a.seconds + 30).stdout
    cpu = cpu_seconds(pid) - before
    os.unlink(script)
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    m = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    p99 = float(m.group(1)) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[m.group(2)]
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if bad:
        sys.exit(f"{url}: {bad.group(1)} non-2xx answers\n{out}")
    return rps, p99, cpu * 1e6 / max(requests, 1)


def median(xs):
    xs = sorted(xs)
    return xs[len(xs) // 2] if len(xs) % 2 else (xs[len(xs) // 2 - 1] + xs[len(xs) // 2]) / 2


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--layerscope", default="target/release/layerscope")
    ap.add_argument("--bare", default="target/release/examples/bare_axum")
    ap.add_argument("--baseline", action="append", default=[],
                    help="another layerscope binary measured in the same rounds, as LABEL=PATH or PATH (label: baseline); repeatable")
    ap.add_argument("--seconds", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=5,
                    help="rounds of every case on every server, the servers' order rotating; the table gives medians")
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--logs-off", action="store_true", help="add the same binary with LAYERSCOPE_LOG=off")
    ap.add_argument("--only", default=None, help="only the cases whose name contains this text (e.g. healthz)")
    a = ap.parse_args()
    cases = [c for c in CASES if a.only is None or a.only in c[0]]
    if not cases:
        sys.exit(f"no case matches --only {a.only!r}")
    # every server runs for the whole measurement (idle while another is loaded); each round
    # measures every case on each of them back to back, so a ratio compares runs seconds apart
    # on a machine whose speed drifts (a shared VM's does, by 2x within minutes)
    procs, live = [], {}  # live: label -> (port, pid)
    try:
        port = free_port()
        procs.append(start([a.bare, f"127.0.0.1:{port}"], os.environ, port))
        live[BARE] = (port, procs[-1].pid)
        servers = [("layerscope", a.layerscope, {})]
        if a.logs_off:
            servers.append(("layerscope, logs off", a.layerscope, {"LAYERSCOPE_LOG": "off"}))
        servers += [(*(b.split("=", 1) if "=" in b else ("baseline" if i == 0 else f"baseline {i + 1}", b)), {})
                    for i, b in enumerate(a.baseline)]
        for label, binary, env in servers:
            port = free_port()
            procs.append(start([binary], dict(os.environ, LAYERSCOPE_ADDR=f"127.0.0.1:{port}", **env), port))
            live[label] = (port, procs[-1].pid)
        runs = {}  # (server, case) -> [(req/s, p99 ms, CPU us/request)]
        for r in range(a.rounds):
            for name, method, path, body in cases:
                order = list(live)[r % len(live):] + list(live)[:r % len(live)]
                for server in order:
                    port, pid = live[server]
                    target = ("/healthz" if method == "GET" else "/echo") if server == BARE else path
                    runs.setdefault((server, name), []).append(wrk(f"http://127.0.0.1:{port}{target}", method, body, a, pid))
    finally:
        for p in procs:
            p.terminate()
            p.wait()
    print(f"wrk -t{a.threads} -c{a.connections} -d{a.seconds}s, {os.cpu_count()} CPUs, {a.rounds} rounds in one run, medians; "
          "ratio: the median of each round's ratio to bare axum (same body)")
    print("| server | request | req/s | p99 ms | bare axum req/s | ratio to bare (min-max over rounds) | server CPU µs/request | bare's CPU / this |")
    print("|---|---|---|---|---|---|---|---|")
    for server in live:
        for name, method, path, body in cases:
            got, bare = runs[(server, name)], runs[(BARE, name)]
            ratios = [g[0] / b[0] for g, b in zip(got, bare)]
            cpu = [b[2] / g[2] for g, b in zip(got, bare)]
            print(f"| {server} | {name} | {median([g[0] for g in got]):.0f} | {median([g[1] for g in got]):.2f} | "
                  f"{median([b[0] for b in bare]):.0f} | {median(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f}) | "
                  f"{median([g[2] for g in got]):.1f} | {median(cpu):.2f} |")


if __name__ == "__main__":
    main()
