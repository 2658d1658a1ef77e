"""Light-request throughput: layerscope against a bare axum 0.8 server, in one run, with wrk.

  python bench/light.py [--layerscope target/release/layerscope] [--baseline OTHER_BINARY]
                       [--seconds 3] [--rounds 5] [--connections 32] [--threads 2]

Builds nothing: scripts/bench-http installs wrk, builds the release binary and the bare_axum
example, and runs this. Starts each server on a free loopback port, runs wrk for each case
(layerscope with its default logging and metrics on, logs to /dev/null) on every server in each
of `--rounds` rounds, and prints a Markdown table of medians: requests/s, p99 latency, and the
median of each round's ratio to the bare server's requests/s for the same body (GET /healthz
against bare GET /healthz; a POST against bare axum parsing and echoing the same JSON body).
`--baseline` adds the same cases for another layerscope binary (e.g. an older build), measured
in the same rounds. Needs wrk (Debian: apt-get install wrk).
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


def wrk(url, method, body, a):
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        if method == "POST":
            f.write(f'wrk.method = "POST"\nwrk.body = {json.dumps(json.dumps(body))}\nwrk.headers["Content-Type"] = "application/json"\n')
        script = f.name
    out = subprocess.run(["wrk", f"-t{a.threads}", f"-c{a.connections}", f"-d{a.seconds}s", "--latency", "-s", script, url],
                         capture_output=True, text=True, timeout=a.seconds + 30).stdout
    os.unlink(script)
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    m = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    p99 = float(m.group(1)) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[m.group(2)]
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if bad:
        sys.exit(f"{url}: {bad.group(1)} non-2xx answers\n{out}")
    return rps, p99


def median(xs):
    xs = sorted(xs)
    return xs[len(xs) // 2] if len(xs) % 2 else (xs[len(xs) // 2 - 1] + xs[len(xs) // 2]) / 2


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--layerscope", default="target/release/layerscope")
    ap.add_argument("--bare", default="target/release/examples/bare_axum")
    ap.add_argument("--baseline", default=None)
    ap.add_argument("--seconds", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=5,
                    help="rounds of every case on every server, the servers' order rotating; the table gives medians")
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    # every server runs for the whole measurement (idle while another is loaded); each round
    # measures every case on each of them back to back, so a ratio compares runs seconds apart
    # on a machine whose speed drifts (a shared VM's does, by 2x within minutes)
    procs, ports = [], {}
    try:
        port = free_port()
        procs.append(start([a.bare, f"127.0.0.1:{port}"], os.environ, port))
        ports["bare axum 0.8"] = port
        for label, binary in [("layerscope", a.layerscope)] + ([("baseline", a.baseline)] if a.baseline else []):
            port = free_port()
            procs.append(start([binary], dict(os.environ, LAYERSCOPE_ADDR=f"127.0.0.1:{port}"), port))
            ports[label] = port
        runs = {}  # (server, case) -> [(req/s, p99)]
        for r in range(a.rounds):
            for name, method, path, body in CASES:
                order = list(ports)[r % len(ports):] + list(ports)[:r % len(ports)]
                for server in order:
                    target = ("/healthz" if method == "GET" else "/echo") if server == "bare axum 0.8" else path
                    runs.setdefault((server, name), []).append(wrk(f"http://127.0.0.1:{ports[server]}{target}", method, body, a))
    finally:
        for p in procs:
            p.terminate()
            p.wait()
    print(f"wrk -t{a.threads} -c{a.connections} -d{a.seconds}s, {os.cpu_count()} CPUs, {a.rounds} rounds in one run, medians; "
          "ratio: the median of each round's ratio to bare axum (same body)")
    print("| server | request | req/s | p99 ms | bare axum req/s | ratio to bare (min-max over rounds) |")
    print("|---|---|---|---|---|---|")
    for server in ports:
        for name, method, path, body in CASES:
            got, bare = runs[(server, name)], runs[("bare axum 0.8", name)]
            ratios = [g[0] / b[0] for g, b in zip(got, bare)]
            print(f"| {server} | {name} | {median([g[0] for g in got]):.0f} | {median([g[1] for g in got]):.2f} | "
                  f"{median([b[0] for b in bare]):.0f} | {median(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f}) |")


if __name__ == "__main__":
    main()
