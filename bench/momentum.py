"""Momentum throughput: 10^6 parameters x 100 steps on CPU, layerscope over HTTP against the same
loop in PyTorch eager Python, in one run.

  python bench/momentum.py http://127.0.0.1:8090   (server started with a body limit >= 32 MB)

Both sides run Form I and Form II on the Rosenbrock objective, each form taking its gradient by
autograd at its own iterate, and compute the per-step max |theta_I - theta_II|, in float64.
"""
import json
import sys
import time
import urllib.request

import torch

URL = sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:8090"
N, STEPS, ALPHA, BETA = 1_000_000, 100, 1e-4, 0.9


def rosenbrock(x):
    return (100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2).sum()


def grad(x):
    x = x.detach().requires_grad_(True)
    rosenbrock(x).backward()
    return x.grad


def python_loop(theta0):
    t1, prev = theta0.clone(), theta0.clone()
    t2, v = theta0.clone(), torch.zeros_like(theta0)
    diffs = []
    for _ in range(STEPS):
        g1 = grad(t1)
        with torch.no_grad():
            t1, prev = t1 - ALPHA * g1 + BETA * (t1 - prev), t1
        g2 = grad(t2)
        with torch.no_grad():
            v = g2 + BETA * v
            t2 = t2 - ALPHA * v
            diffs.append((t1 - t2).abs().max().item())
    return diffs


def main():
    torch.manual_seed(0)
    theta0 = torch.rand(N, dtype=torch.float64) * 0.5
    body = json.dumps({"theta0": theta0.tolist(), "objective": {"type": "rosenbrock"}, "steps": STEPS, "alpha": ALPHA, "beta": BETA, "return": "none"}).encode()
    t = time.perf_counter()
    python_loop(theta0)
    py = time.perf_counter() - t
    req = urllib.request.Request(URL + "/v1/momentum/equivalence", data=body, headers={"content-type": "application/json"})
    t = time.perf_counter()
    resp = json.loads(urllib.request.urlopen(req, timeout=600).read())
    http = time.perf_counter() - t
    inner = resp["millis"] / 1e3
    rate = lambda s: N * STEPS / s  # noqa: E731
    print(f"torch threads: {torch.get_num_threads()}, verdict: {resp['verdict']}, max diff {max(p['max_abs_diff'] for p in resp['pairs']):.3g}")
    print("| what | seconds | parameter-steps/s | throughput vs PyTorch eager (>1 = faster) |")
    print("|---|---|---|---|")
    print(f"| PyTorch eager Python loop (Form I + Form II, autograd) | {py:.3f} | {rate(py):.3g} | 1.000 |")
    print(f"| layerscope libtorch run (same work, measured in the worker) | {inner:.3f} | {rate(inner):.3g} | {py / inner:.3f} |")
    print(f"| layerscope over HTTP (incl. parsing {len(body) / 1e6:.0f} MB of JSON) | {http:.3f} | {rate(http):.3g} | {py / http:.3f} |")


if __name__ == "__main__":
    main()
