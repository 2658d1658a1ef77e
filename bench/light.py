"""Light-request throughput: layerscope against a bare axum 0.8 server, in one run, with wrk.

  python bench/light.py [--layerscope target/release/layerscope] [--baseline OTHER_BINARY]
                       [--seconds 5] [--connections 32] [--threads 2]

Builds nothing: run `cargo build --release --example bare_axum` and `cargo build --release`
first (scripts/bench-http does both). Starts each server on a free loopback port, runs wrk for
each case (layerscope with its default logging and metrics on, logs to /dev/null), and prints a
Markdown table: requests/s, p99 latency, and the ratio to the bare server's requests/s for the
same body (GET /healthz against bare GET /healthz; a POST against bare axum parsing and echoing the
same JSON body). `--baseline` adds the same cases for another layerscope binary (e.g. an older
build), measured in the same run. Needs wrk (Debian: apt-get install wrk).
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


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--layerscope", default="target/release/layerscope")
    ap.add_argument("--bare", default="target/release/examples/bare_axum")
    ap.add_argument("--baseline", default=None)
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    servers = [("layerscope", a.layerscope)] + ([("baseline", a.baseline)] if a.baseline else [])
    bare_port = free_port()
    bare = start([a.bare, f"127.0.0.1:{bare_port}"], os.environ, bare_port)
    rows = []
    try:
        bare_rps = {}
        for name, method, path, body in CASES:
            target = "/healthz" if method == "GET" else "/echo"
            bare_rps[name] = wrk(f"http://127.0.0.1:{bare_port}{target}", method, body, a)
        for label, binary in servers:
            port = free_port()
            env = dict(os.environ, LAYERSCOPE_ADDR=f"127.0.0.1:{port}")
            p = start([binary], env, port)
            try:
                for name, method, path, body in CASES:
                    rps, p99 = wrk(f"http://127.0.0.1:{port}{path}", method, body, a)
                    rows.append((label, name, rps, p99, rps / bare_rps[name][0]))
            finally:
                p.terminate()
                p.wait()
    finally:
        bare.terminate()
        bare.wait()
    print(f"wrk -t{a.threads} -c{a.connections} -d{a.seconds}s, {os.cpu_count()} CPUs, same run")
    print("| server | request | req/s | p99 ms | bare axum req/s (same body) | ratio to bare |")
    print("|---|---|---|---|---|---|")
    for name, method, path, body in CASES:
        print(f"| bare axum 0.8 | {name} | {bare_rps[name][0]:.0f} | {bare_rps[name][1]:.2f} | | 1.00 |")
    for label, name, rps, p99, ratio in rows:
        print(f"| {label} | {name} | {rps:.0f} | {p99:.2f} | {bare_rps[name][0]:.0f} | {ratio:.2f} |")


if __name__ == "__main__":
    main()
