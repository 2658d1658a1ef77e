"""Gradient diagnostics: a 10-layer sigmoid MLP, width 512, batch 256, float32 on CPU.
layerscope over HTTP against the same forward/backward in PyTorch eager Python, in one run.

  python bench/gradient.py http://127.0.0.1:8090
"""
import json
import statistics
import sys
import time
import urllib.request

import torch

URL = sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:8090"
DEPTH, WIDTH, BATCH = 10, 512, 256


def spec():
    layers = []
    for _ in range(DEPTH - 1):
        layers += [{"type": "linear", "out_features": WIDTH}, {"type": "sigmoid"}]
    layers.append({"type": "linear", "out_features": WIDTH})
    return {"input_shape": [WIDTH], "layers": layers}


def python_once():
    """What a student writes: build, forward, backward, then the same statistics."""
    torch.manual_seed(0)
    mods = []
    for _ in range(DEPTH - 1):
        mods += [torch.nn.Linear(WIDTH, WIDTH), torch.nn.Sigmoid()]
    mods.append(torch.nn.Linear(WIDTH, WIDTH))
    model = torch.nn.Sequential(*mods)
    pre = []
    for m in model:
        if isinstance(m, torch.nn.Sigmoid):
            m.register_forward_hook(lambda mod, i, o: pre.append(i[0].detach()))
    x = torch.randn(BATCH, WIDTH)
    model(x).sum().backward()
    out = []
    for m in model:
        if isinstance(m, torch.nn.Linear):
            out.append((m.weight.grad.norm().item(), m.weight.grad.abs().max().item(), m.bias.grad.norm().item(), torch.linalg.matrix_norm(m.weight.detach(), 2).item()))
    stats = [(p.abs().mean().item(), p.abs().max().item(), (torch.sigmoid(p) * (1 - torch.sigmoid(p))).mean().item()) for p in pre]
    return out, stats


def python_no_spectral():
    """The same, without spectral norms: build, forward, backward, gradient norms, statistics."""
    torch.manual_seed(0)
    mods = []
    for _ in range(DEPTH - 1):
        mods += [torch.nn.Linear(WIDTH, WIDTH), torch.nn.Sigmoid()]
    mods.append(torch.nn.Linear(WIDTH, WIDTH))
    model = torch.nn.Sequential(*mods)
    pre = []
    for m in model:
        if isinstance(m, torch.nn.Sigmoid):
            m.register_forward_hook(lambda mod, i, o: pre.append(i[0].detach()))
    x = torch.randn(BATCH, WIDTH)
    model(x).sum().backward()
    out = [(m.weight.grad.norm().item(), m.weight.grad.abs().max().item(), m.bias.grad.norm().item()) for m in model if isinstance(m, torch.nn.Linear)]
    stats = [(p.abs().mean().item(), p.abs().max().item(), (torch.sigmoid(p) * (1 - torch.sigmoid(p))).mean().item()) for p in pre]
    return out, stats


def median_s(fn, n=7):
    fn()
    ts = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def main():
    body = json.dumps({"model": spec(), "inputs": {"batch_size": BATCH}, "dtype": "float32"}).encode()

    def service():
        req = urllib.request.Request(URL + "/v1/gradient-diagnostics", data=body, headers={"content-type": "application/json"})
        return json.loads(urllib.request.urlopen(req).read())

    py = median_s(python_once)
    base = median_s(python_no_spectral, 15)
    http = median_s(service, 15)
    runs = [service() for _ in range(7)]
    inner = statistics.median(r["millis"] / 1e3 for r in runs)
    phases = {k: statistics.median(r["phases_millis"][k] for r in runs) for k in runs[0]["phases_millis"]}
    print(f"torch threads: {torch.get_num_threads()}; layerscope phases (median ms): {phases}")
    print("| what | median s | vs eager with matrix_norm | vs eager without spectral norms |")
    print("|---|---|---|---|")
    print(f"| PyTorch eager (build, forward, backward, gradient norms, statistics, matrix_norm(W, 2)) | {py:.4f} | 1.000 | {py / base:.2f} |")
    print(f"| PyTorch eager, the same without spectral norms | {base:.4f} | {base / py:.3f} | 1.00 |")
    print(f"| layerscope libtorch run with spectral norms (Lanczos), measured in the worker | {inner:.4f} | {inner / py:.3f} | {inner / base:.2f} |")
    print(f"| layerscope over HTTP (whole request) | {http:.4f} | {http / py:.3f} | {http / base:.2f} |")

if __name__ == "__main__":
    main()
