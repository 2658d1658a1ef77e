"""Gradient diagnostics: a 10-layer sigmoid MLP, width 512, batch 256, float32 on CPU.
layerscope over HTTP against the same forward/backward in PyTorch eager Python, in one run.

  python bench/gradient.py http://127.0.0.1:8090
  python bench/gradient.py --interleave http://127.0.0.1:8090 http://127.0.0.1:8091 [--rounds 30]

The second form measures the MLP only, in rounds: eager PyTorch without spectral norms, then
each server's whole request once, each round's ratio taken against that round's eager time,
and prints the median ratio and quartiles per server. Eager's time moves between runs on a
small shared machine; interleaving puts every server under the same conditions.

(the resnet18 part needs the server started with LAYERSCOPE_MAX_RUN_ACTIVATIONS=400000000 and
LAYERSCOPE_MAX_RUN_MACS=100000000000: at batch 32 it holds 263 million activation elements and
does 58 GMACs forward)
"""
import json
import statistics
import sys
import time
import urllib.request

import torch

sys.path.insert(0, __import__("os").path.join(__import__("os").path.dirname(__file__), "..", "tests", "oracle"))
import torchspec  # noqa: E402

URL = next((a for a in sys.argv[1:] if a.startswith("http")), "http://127.0.0.1:8090")
DEPTH, WIDTH, BATCH = 10, 512, 256


def spec():
    layers = []
    for _ in range(DEPTH - 1):
        layers += [{"type": "linear", "out_features": WIDTH}, {"type": "sigmoid"}]
    layers.append({"type": "linear", "out_features": WIDTH})
    return {"input_shape": [WIDTH], "layers": layers}


def python_once(spectral=True):
    """What a student writes: build, forward, backward, then the same statistics (with
    torch.linalg.matrix_norm(W, 2) for the spectral norms unless `spectral` is false)."""
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
            row = [m.weight.grad.norm().item(), m.weight.grad.abs().max().item(), m.bias.grad.norm().item()]
            if spectral:
                row.append(torch.linalg.matrix_norm(m.weight.detach(), 2).item())
            out.append(row)
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
    base = median_s(lambda: python_once(False), 15)
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
    resnet18()


def resnet18():
    """resnet18 at batch 32, float32: layerscope against eager PyTorch computing the same
    statistics (gradient norms of every conv/linear, spectral norms of the reshaped kernels with
    torch.linalg.matrix_norm(W, 2), ReLU pre-activation statistics and dead fractions)."""
    spec = json.loads(urllib.request.urlopen(URL + "/v1/presets/resnet18").read())["spec"]
    body = json.dumps({"model": {"preset": "resnet18"}, "inputs": {"batch_size": 32}, "dtype": "float32"}).encode()

    def service():
        req = urllib.request.Request(URL + "/v1/gradient-diagnostics", data=body, headers={"content-type": "application/json"})
        return json.loads(urllib.request.urlopen(req).read())

    def eager(spectral=True):
        torch.manual_seed(0)
        model, _ = torchspec.build(spec["layers"], spec["input_shape"])
        model = model.float().eval()
        pre = []
        for m in model.modules():
            if isinstance(m, torch.nn.ReLU):
                m.register_forward_hook(lambda mod, i, o: pre.append(i[0].detach()))
        x = torch.randn(32, *spec["input_shape"])
        model(x).sum().backward()
        out = []
        for m in model.modules():
            if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
                w = m.weight
                row = [w.grad.norm().item(), w.grad.abs().max().item()]
                if m.bias is not None:
                    row.append(m.bias.grad.norm().item())
                if spectral:
                    row.append(torch.linalg.matrix_norm(w.detach().reshape(w.shape[0], -1), 2).item())
                out.append(row)
        stats = [(p.abs().mean().item(), p.abs().max().item(), (p > 0).float().mean().item(), (p <= 0).flatten(1).all(0).float().mean().item()) for p in pre]
        return out, stats

    py = median_s(eager, 5)
    base = median_s(lambda: eager(False), 5)
    http = median_s(service, 5)
    runs = [service() for _ in range(3)]
    inner = statistics.median(r["millis"] / 1e3 for r in runs)
    phases = {k: statistics.median(r["phases_millis"][k] for r in runs) for k in runs[0]["phases_millis"]}
    print()
    print(f"resnet18, batch 32, float32; layerscope phases (median ms): {phases}")
    print("| what | median s | vs eager with matrix_norm | vs eager without spectral norms |")
    print("|---|---|---|---|")
    print(f"| PyTorch eager (build, forward, backward, gradient norms, ReLU statistics, matrix_norm) | {py:.4f} | 1.000 | {py / base:.2f} |")
    print(f"| PyTorch eager, the same without spectral norms | {base:.4f} | {base / py:.3f} | 1.00 |")
    print(f"| layerscope in the worker | {inner:.4f} | {inner / py:.3f} | {inner / base:.2f} |")
    print(f"| layerscope over HTTP | {http:.4f} | {http / py:.3f} | {http / base:.2f} |")


def interleave(urls, rounds):
    """Rounds of eager (no spectral norms) and each server's request; per-round ratios."""
    body = json.dumps({"model": spec(), "inputs": {"batch_size": BATCH}, "dtype": "float32"}).encode()

    def service(url):
        req = urllib.request.Request(url + "/v1/gradient-diagnostics", data=body, headers={"content-type": "application/json"})
        return json.loads(urllib.request.urlopen(req).read())

    for url in urls:
        service(url)
    python_once(False)
    ratios = {url: [] for url in urls}
    eager = []
    for _ in range(rounds):
        t = time.perf_counter()
        python_once(False)
        e = time.perf_counter() - t
        eager.append(e)
        for url in urls:
            t = time.perf_counter()
            service(url)
            ratios[url].append((time.perf_counter() - t) / e)
    print(f"eager without spectral norms, median {statistics.median(eager):.4f} s over {rounds} rounds")
    print("| server | median ratio to eager (per round) | quartiles |")
    print("|---|---|---|")
    for url in urls:
        q = statistics.quantiles(ratios[url], n=4)
        print(f"| {url} | {statistics.median(ratios[url]):.3f} | {q[0]:.3f}-{q[2]:.3f} |")


if __name__ == "__main__":
    if "--interleave" in sys.argv:
        rounds = int(sys.argv[sys.argv.index("--rounds") + 1]) if "--rounds" in sys.argv else 30
        interleave([a for a in sys.argv[1:] if a.startswith("http")], rounds)
    else:
        main()
