"""TorchScript modules in, checked against PyTorch.

  python script_check.py URL [--n 40] [--seed 9]

- Gradient diagnostics of torch.jit.trace'd random oracle networks and torchvision's resnet18,
  mobilenet_v2, efficientnet_b0 (3x32x32) and vit_b_16 (3x224x224, float32): the gradient per
  named parameter equals autograd on the original module with the same inputs, float64 to 1e-9
  relative (float32 to 1e-5).
- The measured receptive field of one output unit of a traced network equals the service's
  analytic exact set for the same network given as a spec (conv, average pool and ReLU chains
  with positive weights on an all-ones input, where no dependence cancels or dies).
- Hostile modules: one that raises in forward, garbage bytes, an ONNX file given as TorchScript,
  a wrong input shape: each a 4xx; the server lives.
"""
import argparse
import base64
import io
import json
import math
import os
import random
import sys
import warnings

import torch

sys.path.insert(0, os.path.dirname(__file__))
import torchspec  # noqa: E402
from check import drawn_inputs, post, post_raw, schema_problems  # noqa: E402

warnings.filterwarnings("ignore")
torch.set_num_threads(1)


def saved(module, example):
    buf = io.BytesIO()
    torch.jit.save(torch.jit.trace(module, example, check_trace=False), buf)
    return base64.b64encode(buf.getvalue()).decode()


def check_grads(url, model, shape, label, batch=2, raw=False, float32=False):
    """Gradients per named parameter against autograd on the module: float64 to 1e-9 relative,
    or (`float32`, for a large network) float32 to 1e-5. A raw upload's inputs are drawn by the
    service from a seed (check.drawn_inputs draws the same here), the others sent as values."""
    ts = saved(model.float(), torch.zeros(1, *shape))
    if raw:
        x = drawn_inputs(batch * math.prod(shape), seed=11).reshape(batch, *shape)
        request = {"inputs": {"batch_size": batch, "seed": 11}}
    else:
        # inputs with three decimals, exact on both sides
        x = (torch.randn(batch, *shape, dtype=torch.float64) * 1000).round() / 1000
        request = {"inputs": {"values": x.flatten().tolist()}}
    request["dtype"] = "float32" if float32 else "float64"
    if raw:
        # a large module (resnet18: 45 MB) goes as the body; torch.jit.save's zip is recognised
        s, r = post_raw(url + "/v1/gradient-diagnostics", base64.b64decode(ts), request | {"input_shape": shape})
    else:
        s, r = post(url + "/v1/gradient-diagnostics", request | {"model": {"torchscript": ts, "input_shape": shape}})
    if s != 200:
        return [f"{label}: status {s}: {str(r)[:300]}"]
    model = model.float() if float32 else model.double()
    x = x.float() if float32 else x
    model.zero_grad()
    y = model(x)
    ys = y if isinstance(y, tuple) else (y,)
    torch.cat([t.flatten(1) for t in ys], 1).sum().backward()
    problems = schema_problems(url, "ScriptDiagnostics", r, label)
    named = dict(model.named_parameters())
    if [p["name"] for p in r["parameters"]] != list(named):
        problems.append(f"{label}: names {[p['name'] for p in r['parameters']][:5]} != {list(named)[:5]}")
    rel, floor = (1e-5, 1e-7) if float32 else (1e-9, 1e-12)
    for p in r["parameters"]:
        COUNTS["params"] += 1
        g = named[p["name"]].grad
        want = 0.0 if g is None else g.double().norm().item()
        got = p["grad_frobenius"] or 0.0
        if abs(got - want) > rel * max(abs(want), 1e-300) and abs(got - want) > floor:
            problems.append(f"{label}: {p['name']}: {got} != autograd {want}")
    return problems


def random_chain(rng, volume=False):
    """A conv/avgpool/relu chain whose every dependence survives: positive weights, ones input;
    on an image, or (`volume`) conv3d/avgpool3d on a volume [C, D, H, W]."""
    c = rng.randint(1, 3)
    shape = [c, rng.randint(6, 12), rng.randint(10, 20), rng.randint(10, 20)] if volume else [c, rng.randint(12, 30), rng.randint(12, 30)]
    suffix, kmax = ("3d", 3) if volume else ("2d", 4)
    layers = []
    for _ in range(rng.randint(1, 3 if volume else 4)):
        kind = rng.choice(["conv", "conv", "pool", "relu"])
        if kind == "conv":
            k, d = rng.randint(1, kmax), rng.randint(1, 2)
            layers.append({"type": "conv" + suffix, "out_channels": rng.randint(1, 3), "kernel_size": k, "stride": rng.randint(1, 2),
                           "dilation": d, "padding": rng.randint(0, (k - 1) * d // 2)})
        elif kind == "pool":
            k = 2 if volume else rng.randint(2, 3)
            layers.append({"type": "avgpool" + suffix, "kernel_size": k, "stride": rng.randint(1, k), "padding": rng.randint(0, k // 2)})
        else:
            layers.append({"type": "relu"})
    return {"input_shape": shape, "layers": layers}


COUNTS = {"rf": 0, "params": 0}


def check_rf(url, spec, rng, label):
    try:
        model = torchspec.build_model(spec).float().eval()
    except RuntimeError:  # a map smaller than a kernel: no network, drawn again next case
        return []
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.abs() + 0.05)
        out = model(torch.ones(1, *spec["input_shape"]))
    if out.dim() not in (4, 5) or min(out.shape[2:]) < 1:
        return []
    index = [rng.randrange(n) for n in out.shape[2:]]
    ts = saved(model, torch.ones(1, *spec["input_shape"]))
    s, measured = post(url + "/v1/receptive-field", {"model": {"torchscript": ts, "input_shape": spec["input_shape"]}, "position": {"index": index}})
    s2, analytic = post(url + "/v1/receptive-field", {"model": spec, "position": {"layer": len(spec["layers"]) - 1, "index": index}, "verify": False})
    if s != 200 or s2 != 200:
        return [f"{label}: status {s}/{s2}: {str(measured)[:300]} {str(analytic)[:300]}"]
    problems = schema_problems(url, "MeasuredRf", measured, label) + schema_problems(url, "RfReport", analytic, label)
    COUNTS["rf"] += 1
    for key in ("input_rows", "input_cols", "input_channels") + (("input_slices",) if out.dim() == 5 else ()):
        if measured["position"].get(key) != analytic["position"][key]:
            problems.append(f"{label}: {key} measured {measured['position'][key]} != analytic {analytic['position'][key]}")
    return problems


class Raises(torch.nn.Module):
    def forward(self, x):
        if x.sum() > -1e30:
            raise RuntimeError("this module refuses every input")
        return x


def check_hostile(url):
    problems = []
    script = io.BytesIO()
    torch.jit.save(torch.jit.script(Raises()), script)
    conv = io.BytesIO()
    torch.jit.save(torch.jit.trace(torch.nn.Conv2d(3, 2, 3), torch.zeros(1, 3, 8, 8)), conv)
    onnx_file = io.BytesIO()
    torch.onnx.export(torch.nn.Conv2d(3, 2, 3), (torch.zeros(1, 3, 8, 8),), onnx_file, dynamo=False)
    cases = [
        ("raises in forward", script.getvalue(), [3, 8, 8], "raised in forward"),
        ("garbage", b"PK\x03\x04" + bytes(range(256)) * 4, [3, 8, 8], "not a TorchScript module"),
        ("an ONNX file", onnx_file.getvalue(), [3, 8, 8], "not a TorchScript file"),
        ("the wrong input shape", conv.getvalue(), [5, 8, 8], "raised in forward"),
    ]
    for what, data, shape, needle in cases:
        for path, extra in (("/v1/gradient-diagnostics", {}), ("/v1/receptive-field", {"position": {"index": [0, 0]}})):
            s, r = post(url + path, {"model": {"torchscript": base64.b64encode(data).decode(), "input_shape": shape}} | extra)
            if s != 422 or needle not in r.get("detail", "") or not r.get("pointer", "").startswith("/model"):
                problems.append(f"hostile {what} on {path}: {s} {str(r)[:300]}")
    s, r = post(url + "/v1/complexity", {"model": {"torchscript": "", "input_shape": [1]}})
    if s != 422 or "export ONNX" not in r.get("detail", ""):
        problems.append(f"complexity of a TorchScript module: {s} {r}")
    s, _ = post(url + "/v1/receptive-field", {"model": {"preset": "vgg_stem"}})
    if s != 200:
        problems.append("the server did not survive the hostile modules")
    return problems


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("url")
    ap.add_argument("--n", type=int, default=40)
    ap.add_argument("--seed", type=int, default=9)
    a = ap.parse_args()
    problems = []
    import torchvision
    torch.manual_seed(0)
    # torchvision's networks of the issue, traced with their own weights and uploaded raw
    for name in ("resnet18", "mobilenet_v2", "efficientnet_b0"):
        problems += check_grads(a.url, getattr(torchvision.models, name)().eval(), [3, 32, 32], name, batch=1, raw=True)
    # (its position embedding fixes the image size: 224, so float32)
    problems += check_grads(a.url, torchvision.models.vit_b_16().eval(), [3, 224, 224], "vit_b_16", batch=1, raw=True, float32=True)
    # the video ResNet on a small clip
    problems += check_grads(a.url, torchvision.models.video.r3d_18().eval(), [3, 4, 24, 24], "r3d_18", batch=1, raw=True)
    for case in range(a.n):
        rng = random.Random(a.seed * 100_003 + case)
        torch.manual_seed(a.seed * 100_003 + case)
        spec = torchspec.random_spec(rng)
        if spec["layers"][-1]["type"] != "linear":
            spec["layers"] += [{"type": "flatten"}, {"type": "linear", "out_features": 2}]
        model = torchspec.build_model(spec).eval()
        problems += check_grads(a.url, model, spec["input_shape"], f"random case {case} (seed {a.seed})")
        problems += check_rf(a.url, random_chain(rng), rng, f"rf case {case} (seed {a.seed})")
        problems += check_rf(a.url, random_chain(rng, volume=True), rng, f"rf volume case {case} (seed {a.seed})")
    problems += check_hostile(a.url)
    for p in problems:
        print(p)
    print(f"torchscript oracle: {'ok' if not problems else f'{len(problems)} problems'} ({a.n} random networks and five torchvision networks: "
          f"{COUNTS['params']} parameters' gradients, {COUNTS['rf']} measured receptive fields compared; hostile modules)")
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
