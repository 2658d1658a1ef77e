"""PyTorch oracles for a running layerscope server.

  python check.py rf URL [--n 220] [--seed 1]          receptive fields vs autograd
  python check.py complexity URL [--n 220] [--seed 2]  params and FLOPs vs sum(p.numel())
                                                       and torch.utils.flop_counter

Exits non-zero and prints every disagreement. The specs are random but seeded, so a failure
can be replayed with the same seed.
"""
import argparse
import itertools
import json
import random
import sys
import urllib.request

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, __import__("os").path.dirname(__file__))
import torchspec  # noqa: E402

torch.set_num_threads(1)


def post(url, body):
    """POSTs `body`; a `model` the server accepts must also match the contract's generated `Model`
    schema (so every random model of every oracle run tests the contract's layer ops too)."""
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            status, answer = r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")
    model = body.get("model") if isinstance(body, dict) else None
    if isinstance(model, dict) and "onnx" not in model and "torchscript" not in model:
        problems = schema_problems(url.split("/v1/")[0], "Model", model, "the accepted model")
        if problems:
            raise AssertionError(f"{url} accepted a model the contract refuses: {problems[:3]}\n{json.dumps(model)[:2000]}")
    return status, answer


_SCHEMAS = {}


def drawn_inputs(count, seed=0, distribution="normal", bound=1.0):
    """The inputs the service draws from `inputs.seed` (float64, row-major): splitmix64 from
    `seed ^ 0x1a2b3c4d`, two numbers per normal sample (Box-Muller), one per uniform one. A
    second implementation of src/analysis/rng.rs, so that diagnostics on drawn inputs can be
    checked against autograd without sending the values."""
    import numpy as np
    with np.errstate(over="ignore"):
        inc = np.uint64(0x9E3779B97F4A7C15)
        state = np.uint64((seed ^ 0x1A2B3C4D) ^ 0x9E3779B97F4A7C15)
        per = 2 if distribution == "normal" else 1
        k = np.arange(1, count * per + 1, dtype=np.uint64)
        z = state + k * inc
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    unit = (z >> np.uint64(11)).astype(np.float64) / float(1 << 53)
    if distribution == "normal":
        u1, u2 = 1.0 - unit[0::2], unit[1::2]
        values = np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)
    else:
        values = (2.0 * unit - 1.0) * bound
    return torch.from_numpy(values)


def schema_problems(url, name, answer, label):
    """The answer checked against openapi.yaml's schema `name` (JSON Schema 2020-12, as OpenAPI
    3.1 is; jsonschema_rs comes with schemathesis)."""
    if name not in _SCHEMAS:
        import jsonschema_rs
        import yaml

        with urllib.request.urlopen(url + "/openapi.yaml") as r:
            doc = yaml.safe_load(r.read())
        _SCHEMAS[name] = jsonschema_rs.Draft202012Validator({"$ref": f"#/components/schemas/{name}", "components": doc["components"]})
    return [f"{label}: the answer does not match {name}: {e.message} at {list(e.instance_path)}" for e in _SCHEMAS[name].iter_errors(answer)]


def post_raw(url, data, request=None):
    """A model file as the body (application/octet-stream), the rest of the request in `?request=`."""
    import urllib.parse
    q = "?request=" + urllib.parse.quote(json.dumps(request)) if request else ""
    req = urllib.request.Request(url + q, data=data, headers={"content-type": "application/octet-stream"})
    try:
        with urllib.request.urlopen(req, timeout=300) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def multipart_body(model, side=(), request=None):
    """The content type and body of a multipart/form-data upload (see post_multipart)."""
    import uuid
    boundary = "LayerScope" + uuid.uuid4().hex.upper()  # mixed case: boundaries are case-sensitive
    parts = [("request", None, json.dumps(request or {}).encode()), ("model", "model.onnx", model)]
    parts += [("data", name, data) for name, data in side]
    body = b""
    for name, filename, data in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        body += f"--{boundary}\r\ncontent-disposition: {disposition}\r\n\r\n".encode() + data + b"\r\n"
    body += f"--{boundary}--\r\n".encode()
    return f"multipart/form-data; boundary={boundary}", body


def post_multipart(url, model, side=(), request=None):
    """A model file with its side files (ONNX external data, `(file name, bytes)`) as
    multipart/form-data: `model`, `data` parts named by file name, the options as `request`."""
    content_type, body = multipart_body(model, side, request)
    req = urllib.request.Request(url, data=body, headers={"content-type": content_type})
    try:
        with urllib.request.urlopen(req, timeout=300) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def get(url):
    with urllib.request.urlopen(url, timeout=60) as r:
        return json.loads(r.read())


def nonzero_ranges(mask):
    idx = [i for i, v in enumerate(mask) if v]
    out = []
    for i in idx:
        if out and out[-1][1] == i - 1:
            out[-1][1] = i
        else:
            out.append([i, i])
    return out


def oracle_rf(spec, path, index, channel):
    """Input positions with a non-zero d(unit)/d(input) in the probe network, by autograd."""
    model = torchspec.build_model(spec, probe=True)
    captured = {}
    target = torchspec.module_at(model, path)
    target.register_forward_hook(lambda m, i, o: captured.__setitem__("y", o))
    x = torch.ones(1, *spec["input_shape"], dtype=torch.float64, requires_grad=True)
    model(x)
    y = captured["y"][0]
    if len(spec["input_shape"]) == 2:
        # a 1-D signal [C, L]: channel `channel` (or every channel) at position index[0]
        col = y[:, index[0]] if y.dim() == 2 else y[index[0]]
        unit = col.sum() if channel is None or y.dim() == 1 else col[channel]
        (g,) = torch.autograd.grad(unit, x, allow_unused=True)
        nz = (g[0] != 0) if g is not None else torch.zeros(spec["input_shape"], dtype=torch.bool)
        return {"input_channels": nonzero_ranges(nz.any(1).tolist()), "input_positions": nonzero_ranges(nz.any(0).tolist())}
    if len(spec["input_shape"]) == 4:
        # a volume [C, D, H, W]: channel `channel` (or all) at slice, row, column; or a flat unit
        if len(index) == 3:
            col = y[:, index[0], index[1], index[2]]
            unit = col.sum() if channel is None else col[channel]
        else:
            unit = y[index[0]]
        (g,) = torch.autograd.grad(unit, x, allow_unused=True)
        nz = (g[0] != 0) if g is not None else torch.zeros(spec["input_shape"], dtype=torch.bool)
        along = lambda a: nonzero_ranges(nz.any(dim=[d for d in range(4) if d != a]).tolist())  # noqa: E731
        return {"input_channels": along(0), "input_slices": along(1), "input_rows": along(2), "input_cols": along(3)}
    if len(index) == 2:
        col = y[:, index[0], index[1]]
        unit = col.sum() if channel is None else col[channel]
    elif y.dim() == 2:
        # a two-axis tensor inside an image network (a flatten or reshape): row index[0], one
        # column (`channel`) or all of them
        row = y[index[0]]
        unit = row.sum() if channel is None else row[channel]
    else:
        unit = y[index[0]]
    (g,) = torch.autograd.grad(unit, x, allow_unused=True)
    nz = (g[0] != 0) if g is not None else torch.zeros(spec["input_shape"], dtype=torch.bool)
    return {
        "input_channels": nonzero_ranges(nz.any(2).any(1).tolist()),
        "input_rows": nonzero_ranges(nz.any(2).any(0).tolist()),
        "input_cols": nonzero_ranges(nz.any(1).any(0).tolist()),
    }


def random_case(rng, case, n, graphs, signals=None):
    """Case `case` of a run: n sequential specs over images, then graphs, then 1-D signals,
    then (after `signals` of them) volumes."""
    if case < n:
        return torchspec.random_spec(rng)
    if case < n + graphs:
        return torchspec.random_graph(rng)
    if signals is None or case < n + graphs + signals:
        return torchspec.random_signal_spec(rng)
    return torchspec.random_volume_spec(rng)


GRADED_FLOORS = [0]


def grade_own_ranges(url, spec, resp, path):
    """A range with floors, as the report writes it, graded right by /v1/grade; the same range
    with its upper end one higher graded wrong (the reader takes every form the analysis writes)."""
    row = next((r for r in resp.get("layers", []) if r.get("path") == path), None)
    if not row or not row.get("rational"):
        return []
    asks = {"height": "rows", "width": "cols", "depth": "slices", "length": "rows"}
    questions = []
    for axis, ask in asks.items():
        text = row["rational"].get(axis, {}).get("text")
        if text:
            lo, var, hi = [t.strip() for t in text.split("<=")]
            for kind, answer in (("right", text), ("wrong", f"{lo} <= {var} <= {hi}+1")):
                questions.append({"id": f"{axis}.{kind}", "kind": "receptive_field", "model": spec, "ask": f"{ask} of layer {path}", "answer": answer, "index_base": 0})
    status, graded = post(url + "/v1/grade", {"questions": questions})
    GRADED_FLOORS[0] += len(questions) // 2
    if status != 200:
        return [f"grading its own ranges: status {status}: {graded}"]
    return [f"grading {q['id']} ({q['got']}): {q['feedback']}" for q in graded["questions"] if q["correct"] != q["id"].endswith(".right")]


def run_rf(url, n, seed, graphs, signals, volumes=0):
    rng = random.Random(seed)
    failures = 0
    for case in range(n + graphs + signals + volumes):
        spec = random_case(rng, case, n, graphs, signals)
        all_paths = torchspec.all_paths(spec)
        path = rng.choice(all_paths)
        # channels picked or reordered by index (narrow, channel_shuffle): their units, one
        # channel each, now and then (a permutation of every channel is every channel)
        picks = [n["name"] for n in spec.get("graph", {}).get("nodes", []) if n["type"] in ("narrow", "channel_shuffle")]
        pick = bool(picks) and rng.random() < 0.5
        if pick:
            path = rng.choice(picks)
        # a layer at or after a top-level narrow of a sequential spec (a signal's crop), half the time
        crops = [i for i, layer in enumerate(spec.get("layers", [])) if layer["type"] == "narrow"]
        if crops and rng.random() < 0.5:
            path = str(rng.randrange(crops[0], len(spec["layers"])))
        model = torchspec.build_model(spec)
        shapes = {}
        for p in all_paths:
            torchspec.module_at(model, p).register_forward_hook(lambda m, i, o, p=p: shapes.__setitem__(p, list(o.shape[1:])))
        model(torch.zeros(1, *spec["input_shape"], dtype=torch.float64))
        shape = shapes[path]
        if len(spec["input_shape"]) == 2 and len(shape) == 2:
            index = [rng.randrange(shape[1])]
            channel = rng.randrange(shape[0]) if rng.random() < 0.3 else None
        elif len(shape) in (3, 4):
            index = [rng.randrange(d) for d in shape[1:]]
            channel = rng.randrange(shape[0]) if pick or rng.random() < 0.3 else None
        elif len(shape) == 2:
            index = [rng.randrange(shape[0])]
            channel = rng.randrange(shape[1]) if rng.random() < 0.3 else None
        else:
            index, channel = [rng.randrange(shape[0])], None
        position = {"layer": path, "index": index}
        if channel is not None:
            position["channel"] = channel
        verify = True  # the service's own libtorch probe, on every case (it costs about as much as the analysis)
        status, resp = post(url + "/v1/receptive-field", {"model": spec, "position": position, "verify": verify})
        expected = oracle_rf(spec, path, index, channel)
        problems = []
        if status != 200:
            problems.append(f"status {status}: {resp}")
        else:
            got = resp["position"]
            for key, want in expected.items():
                if got.get(key) != want:
                    problems.append(f"{key}: service {got.get(key)} != autograd {want}")
            if verify and not resp["verification"].get("agrees"):
                problems.append(f"service's own verification disagrees: {resp['verification']}")
            # the affine range, clipped, must contain the exact set
            # the range (integer-affine or with floors), clipped, must contain the exact set;
            # reflect/replicate padding reads rows across the border, outside the range
            mirrored = any(f'"{m}' in json.dumps(spec) for m in ("reflect", "replicat", "circular"))
            axes = (("rows", "input_rows"), ("cols", "input_cols")) + ((("slices", "input_slices"),) if len(index) == 3 else ())
            for axis, key in axes if not mirrored else ():
                if got.get("clipped") and expected[key] and got["clipped"][axis]:
                    lo, hi = got["clipped"][axis]
                    if expected[key][0][0] < lo or expected[key][-1][1] > hi:
                        problems.append(f"exact {axis} {expected[key]} escape the clipped range {[lo, hi]}")
                elif got.get("clipped") and expected[key]:
                    problems.append(f"exact {axis} {expected[key]} but the clipped range is empty")
            # a signal's integer-affine range, clipped to the signal, must contain its exact positions
            row = next((r for r in resp["layers"] if r["path"] == path), {})
            rng_len = (row.get("receptive_field") or {}).get("length")
            if rng_len and not mirrored and expected.get("input_positions"):
                i = index[0]
                lo = max(0, rng_len["scale"] * i + rng_len["lo"])
                hi = min(spec["input_shape"][1] - 1, rng_len["scale"] * i + rng_len["hi"])
                if expected["input_positions"][0][0] < lo or expected["input_positions"][-1][1] > hi:
                    problems.append(f"exact positions {expected['input_positions']} escape the range {rng_len['text']} at i={i} ([{lo}, {hi}])")
            problems += grade_own_ranges(url, spec, resp, path)
        if problems:
            failures += 1
            print(f"case {case} (seed {seed}): layer {path} index {index} channel {channel}\n  spec {json.dumps(spec)}")
            for p in problems:
                print("  " + p)
    print(f"rf oracle: {n + graphs + signals + volumes - failures} passed, {failures} failed ({graphs} of the cases graphs, {signals} 1-D signals, {volumes} volumes; {GRADED_FLOORS[0]} ranges with floors graded)")
    return failures


def empty_pool_window(model, x):
    """Whether a max pool of the model has a window of padding only: its output holds -inf
    (the service refuses to run such a model: PyTorch's backward writes outside the tensor)."""
    seen = []
    hooks = [m.register_forward_hook(lambda mod, i, o: seen.append(bool(torch.isneginf(o).any()) if torch.is_tensor(o) else False))
             for m in model.modules() if not list(m.children())]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    return any(seen)


def flop_counts(model, x):
    counter = FlopCounterMode(display=False)
    with counter:
        model(x)
    per = {}
    root = type(model).__name__ + "."
    for name, ops in counter.get_flop_counts().items():
        if name.startswith(root):
            rel = name[len(root):]
            per[model.node_path(rel) if isinstance(model, torchspec.GraphNet) else rel] = sum(ops.values())
    return counter.get_total_flops(), per


def check_complexity(url, spec, batch, label):
    problems = []
    status, resp = post(url + "/v1/complexity", {"model": spec, "batch_size": batch, "conventions": {"flops": "2mac"}, "verify": False})
    if status != 200:
        return [f"{label}: status {status}: {resp}"]
    body = spec if "preset" not in spec else get(url + "/v1/presets/" + spec["preset"])["spec"]
    model = torchspec.build_model(body).float().eval()
    total, per = flop_counts(model, torch.zeros(batch, *body["input_shape"]))
    params = sum(p.numel() for p in model.parameters())
    if resp["totals"]["flops"] != total:
        problems.append(f"{label}: total 2mac flops {resp['totals']['flops']} != flop_counter {total}")
    if resp["totals"]["params"] != params:
        problems.append(f"{label}: params {resp['totals']['params']} != sum(p.numel()) {params}")
    for row in resp["rows"]:
        want = per.get(row["path"], 0)
        if row["flops"] != want:
            problems.append(f"{label}: row {row['path']} ({row['type']}) flops {row['flops']} != flop_counter {want}")
        if not row["subtotal"]:
            mp = sum(p.numel() for p in torchspec.module_at(model, row["path"]).parameters())
            if row["params"] != mp:
                problems.append(f"{label}: row {row['path']} params {row['params']} != module's {mp}")
    return problems


def check_profiles(url, spec, label):
    """The fvcore and ptflops profiles must reproduce those tools' totals exactly."""
    import logging
    from fvcore.nn import FlopCountAnalysis
    from ptflops import get_model_complexity_info
    logging.disable(logging.WARNING)
    body = spec if "preset" not in spec else get(url + "/v1/presets/" + spec["preset"])["spec"]
    model = torchspec.build_model(body).float().eval()
    fa = FlopCountAnalysis(model, torch.zeros(1, *body["input_shape"]))
    fa.unsupported_ops_warnings(False)
    fa.uncalled_modules_warnings(False)
    want = {}
    # fvcore 0.1.5 has no handle for aten::conv2d.padding (padding="same"/"valid" strings) and
    # silently skips those convolutions; the service counts them, so such specs are left out.
    if '"same"' not in json.dumps(body) and '"valid"' not in json.dumps(body):
        want["fvcore"] = fa.total()
    want["ptflops"], _ = get_model_complexity_info(model, tuple(body["input_shape"]), print_per_layer_stat=False, as_strings=False, verbose=False)
    return compare_profiles(url, spec, want, label)


def compare_profiles(url, spec, want, label):
    """The service's total under each profile in `want` (profile -> the tool's own total)."""
    problems = []
    for profile, value in want.items():
        status, resp = post(url + "/v1/complexity", {"model": spec, "profile": profile, "verify": False})
        if status != 200:
            problems.append(f"{label}: profile {profile}: status {status}: {resp}")
            continue
        # ptflops counts a fractional F.interpolate (a float scale_factor ** dims) and truncates
        # only its float total; the service's rows floor it and say so: the totals may differ by
        # less than one per such row, and by nothing with one
        fractional = sum(1 for r in resp["rows"] if "truncates only its float total" in (r.get("note") or ""))
        if not 0 <= value - resp["totals"]["flops"] < max(1, fractional):
            problems.append(f"{label}: profile {profile}: service {resp['totals']['flops']} != {profile} {value} ({fractional} fractional rows)")
    return problems


def run_complexity(url, n, seed, presets, graphs, signals, volumes=0):
    rng = random.Random(seed)
    failures = 0
    cases = [({"preset": p}, 1, p) for p in presets]
    cases += [(torchspec.random_spec(rng), rng.randint(1, 3), f"random case {i} (seed {seed})") for i in range(n)]
    first_graph = len(cases)
    cases += [(torchspec.random_graph(rng), rng.randint(1, 3), f"random graph {i} (seed {seed})") for i in range(graphs)]
    first_signal = len(cases)
    cases += [(torchspec.random_signal_spec(rng), rng.randint(1, 3), f"random 1-D signal {i} (seed {seed})") for i in range(signals)]
    first_volume = len(cases)
    cases += [(torchspec.random_volume_spec(rng), rng.randint(1, 3), f"random volume {i} (seed {seed})") for i in range(volumes)]
    for i, (spec, batch, label) in enumerate(cases):
        problems = check_complexity(url, spec, batch, label)
        if i < len(presets) + 60 or first_graph <= i < first_graph + 60 or first_signal <= i < first_signal + 60 or i >= first_volume:
            problems += check_profiles(url, spec, label)
        if problems:
            failures += 1
            print("\n".join(problems[:10]))
            if "preset" not in spec:
                print("  spec " + json.dumps(spec))
    print(f"complexity oracle: {len(cases) - failures} passed, {failures} failed")
    return failures


def numpy_forms(theta0, grad, alpha, beta, steps):
    """Plain NumPy Form I, Form II and Sutskever; grad(k, theta) gives each form its gradient."""
    import numpy as np
    t1, prev = np.array(theta0, float), np.array(theta0, float)
    t2, v = np.array(theta0, float), np.zeros(len(theta0))
    t3, u = np.array(theta0, float), np.zeros(len(theta0))
    out = {"form_i": [t1.copy()], "form_ii": [t2.copy()], "sutskever": [t3.copy()]}
    for k in range(steps):
        t1, prev = t1 - alpha[k] * grad(k, t1) + beta * (t1 - prev), t1
        v = grad(k, t2) + beta * v
        t2 = t2 - alpha[k] * v
        u = beta * u - alpha[k] * grad(k, t3)
        t3 = t3 + u
        out["form_i"].append(t1.copy())
        out["form_ii"].append(t2.copy())
        out["sutskever"].append(t3.copy())
    return out


def torch_sgd(theta0, grad, alpha, beta, steps, opts):
    p = torch.tensor(theta0, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.SGD([p], lr=alpha[0], momentum=beta, **opts)
    out = [p.detach().numpy().copy()]
    for k in range(steps):
        for group in opt.param_groups:
            group["lr"] = alpha[k]
        opt.zero_grad()
        p.grad = torch.tensor(grad(k, p.detach().numpy()), dtype=torch.float64)
        opt.step()
        out.append(p.detach().numpy().copy())
    return out


def run_momentum(url, n, seed):
    import numpy as np
    rng = random.Random(seed)
    failures = 0
    for case in range(n):
        size = rng.randint(1, 6)
        steps = rng.randint(1, 30)
        theta0 = [rng.uniform(-3, 3) for _ in range(size)]
        beta = rng.choice([0.0, 0.5, 0.9, 0.99, rng.random() * 0.999])
        alpha = [rng.uniform(0.001, 0.5)] * steps if rng.random() < 0.6 else [rng.uniform(0.001, 0.5) for _ in range(steps)]
        opts = rng.choice([{}, {"dampening": 0.3}, {"weight_decay": 0.01}, {"nesterov": True}])
        if opts.get("nesterov") and beta == 0.0:
            opts = {}
        body = {"theta0": theta0, "alpha": alpha, "beta": beta, "sutskever": True, "pytorch_sgd": opts or True}
        if rng.random() < 0.5:
            grads = [[rng.uniform(-2, 2) for _ in range(size)] for _ in range(steps)]
            body["gradients"] = grads
            grad = lambda k, t, g=grads: np.array(g[k])  # noqa: E731
        else:
            a = np.array([[rng.uniform(-1, 1) for _ in range(size)] for _ in range(size)])
            q = a @ a.T + np.eye(size)
            b = np.array([rng.uniform(-1, 1) for _ in range(size)])
            body["objective"] = {"type": "quadratic", "Q": q.tolist(), "b": b.tolist()}
            body["steps"] = steps
            body["alpha"] = [x / (1 + np.linalg.norm(q, 2)) for x in alpha]
            alpha = body["alpha"]
            grad = lambda k, t, q=q, b=b: q @ t - b  # noqa: E731
        status, resp = post(url + "/v1/momentum/equivalence", body)
        problems = []
        if status != 200:
            problems.append(f"status {status}: {resp}")
        else:
            want = numpy_forms(theta0, grad, alpha, beta, steps)
            want["pytorch_sgd"] = torch_sgd(theta0, grad, alpha, beta, steps, opts)
            for form, traj in want.items():
                got = np.array(resp["trajectories"][form]["theta"])
                err = np.max(np.abs(got - np.array(traj)) / np.maximum(1, np.abs(np.array(traj))))
                if not err <= 1e-12:
                    problems.append(f"{form}: max relative difference {err:.3g} from the NumPy/torch.optim.SGD oracle")
        if problems:
            failures += 1
            print(f"momentum case {case} (seed {seed}): " + "; ".join(problems) + "\n  body " + json.dumps(body)[:400])
    print(f"momentum oracle: {n - failures} passed, {failures} failed")
    return failures


TORCHVISION = {
    "vgg16": lambda tv: tv.models.vgg16(),
    "alexnet": lambda tv: tv.models.alexnet(),
    "resnet18": lambda tv: tv.models.resnet18(),
    "resnet50": lambda tv: tv.models.resnet50(),
    "mobilenet_v2": lambda tv: tv.models.mobilenet_v2(),
    "googlenet": lambda tv: tv.models.googlenet(aux_logits=False, init_weights=False),
    "mobilenet_v3_small": lambda tv: tv.models.mobilenet_v3_small(),
    "efficientnet_b0": lambda tv: tv.models.efficientnet_b0(),
    "shufflenet_v2_x0_5": lambda tv: tv.models.shufflenet_v2_x0_5(),
    "vit_b_16": lambda tv: tv.models.vit_b_16(),
    "convnext_tiny": lambda tv: tv.models.convnext_tiny(),
    "r3d_18": lambda tv: tv.models.video.r3d_18(),
}

# graph-form presets whose node names are torchvision's module (or parameter) names: each row's
# parameters are checked against that module's own
NAMED_LIKE_TORCHVISION = ("mobilenet_v3_small", "efficientnet_b0", "vit_b_16", "convnext_tiny", "shufflenet_v2_x0_5")


def run_torchvision(url, names):
    """Each preset against torchvision's own module (not a copy built from the spec): parameters
    as sum(p.numel()), FlopCounterMode's total on one 3x224x224 image, and the fvcore and ptflops
    profiles against those tools run on the torchvision module."""
    import logging
    import torchvision
    from fvcore.nn import FlopCountAnalysis
    from ptflops import get_model_complexity_info
    logging.disable(logging.WARNING)
    failures = 0
    for name in names:
        model = TORCHVISION[name](torchvision).eval()
        # the preset's own input: 3x224x224 images, r3d_18's 3x16x112x112 clip
        shape = tuple(get(url + "/v1/presets/" + name)["spec"]["input_shape"])
        x = torch.zeros(1, *shape)
        # autograd on, as FlopCounterMode is used: under torch.no_grad() an eval-mode
        # nn.MultiheadAttention (ViT's) takes a fused fast path that FlopCounterMode counts as 0
        counter = FlopCounterMode(display=False)
        with counter:
            model(x)
        fa = FlopCountAnalysis(model, x)
        fa.unsupported_ops_warnings(False)
        fa.uncalled_modules_warnings(False)
        want = {
            "params": sum(p.numel() for p in model.parameters()),
            "torch_flop_counter": counter.get_total_flops(),
            "fvcore": fa.total(),
            "ptflops": get_model_complexity_info(model, shape, print_per_layer_stat=False, as_strings=False, verbose=False)[0],
        }
        problems = []
        attention = any(isinstance(m, torch.nn.MultiheadAttention) for m in model.modules())
        for profile in ("torch_flop_counter", "fvcore", "ptflops"):
            status, resp = post(url + "/v1/complexity", {"model": {"preset": name}, "profile": profile, "verify": False})
            if attention:
                # the torchvision profile is not modeled for attention: refused, naming the layer
                s2, r2 = post(url + "/v1/complexity", {"model": {"preset": name}, "profile": "torchvision", "verify": False})
                if s2 != 422 or "multihead_attention" not in r2.get("detail", ""):
                    problems.append(f"torchvision: expected a 422 naming the attention layer, got {s2}: {r2.get('detail')}")
            if status != 200:
                problems.append(f"status {status}: {resp}")
                continue
            if profile == "torch_flop_counter" and resp["totals"]["params"] != want["params"]:
                problems.append(f"params {resp['totals']['params']} != torchvision's sum(numel) {want['params']}")
            if resp["totals"]["flops"] != want[profile]:
                problems.append(f"{profile}: service {resp['totals']['flops']} != {profile} on torchvision's module {want[profile]}")
            if profile == "torch_flop_counter" and name in NAMED_LIKE_TORCHVISION:
                for row in resp["rows"]:
                    if row["subtotal"] or not row["params"]:
                        continue
                    try:
                        own = sum(p.numel() for p in model.get_submodule(row["path"]).parameters())
                    except AttributeError:
                        own = model.get_parameter(row["path"]).numel()
                    if row["params"] != own:
                        problems.append(f"row {row['path']}: params {row['params']} != torchvision's {own}")
        if problems:
            failures += 1
            print(f"preset {name}: " + "; ".join(problems))
    print(f"torchvision oracle: {len(names) - failures} passed, {failures} failed")
    return failures


def random_mlp(rng):
    width = rng.randint(1, 12)
    layers = []
    for _ in range(rng.randint(1, 5)):
        layers.append({"type": "linear", "out_features": rng.randint(1, 12), "bias": rng.random() < 0.8})
        act = rng.choice(["sigmoid", "tanh", "relu", "leaky_relu", "gelu", "silu", "hardswish", "hardsigmoid", "mish", "identity", "prelu"])
        layers.append(torchspec.prelu(rng, [layers[-1]["out_features"]]) if act == "prelu" else {"type": act})
        if rng.random() < 0.1:
            layers.append({"type": "layernorm", "normalized_shape": layers[-2]["out_features"]} if rng.random() < 0.5 else {"type": "softmax", "dim": 1})
    layers.append({"type": "linear", "out_features": rng.randint(1, 4)})
    return {"input_shape": [width], "layers": layers}


def run_gradient(url, n, seed, signals, volumes=0):
    rng = random.Random(seed)
    oversized = norm_tensors = 0
    # the weights torch.nn draws and the inputs come from the seed too: a failing case reruns
    torch.manual_seed(seed)
    failures = 0
    for case in range(n + signals + volumes):
        if case >= n + signals:
            spec = torchspec.random_volume_spec(rng)
            if spec["layers"][-1]["type"] != "linear":
                spec["layers"] += [{"type": "flatten"}, {"type": "linear", "out_features": rng.randint(1, 3)}]
        elif case >= n:
            spec = torchspec.random_signal_spec(rng)
            if spec["layers"][-1]["type"] != "linear":
                spec["layers"] += [{"type": "flatten"}, {"type": "linear", "out_features": rng.randint(1, 3)}]
        elif case % 3 == 2:
            # a graph (skips, gates, concatenations, one or two outputs): the objective reads the
            # outputs flattened and joined in their listed order
            spec = torchspec.random_graph(rng)
            while not any(nd["type"] in ("conv2d", "residual") for nd in spec["graph"]["nodes"]):
                spec = torchspec.random_graph(rng)
        else:
            spec = random_mlp(rng) if case % 3 == 0 else torchspec.random_spec(rng)
            if spec["layers"][-1]["type"] != "linear":
                spec["layers"] += [{"type": "flatten"}, {"type": "linear", "out_features": rng.randint(1, 3)}]
        dtype = rng.choice(["float64", "float32"])
        tdtype = torch.float64 if dtype == "float64" else torch.float32
        model = torchspec.build_model(spec).to(tdtype).eval()
        run = lambda x: torch.cat([y.flatten(1) for y in (lambda o: o if isinstance(o, tuple) else (o,))(model(x))], 1)  # noqa: E731
        batch = rng.randint(1, 4)
        x = torch.randn(batch, *spec["input_shape"], dtype=torch.float64)
        with torch.no_grad():
            out_shape = [run(x[:1].to(tdtype)).shape[1]]
        params = {}
        for path in torchspec.all_paths(spec):
            m = torchspec.module_at(model, path)
            if isinstance(m, (torch.nn.Linear, torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d, torch.nn.ConvTranspose1d, torch.nn.ConvTranspose2d, torch.nn.ConvTranspose3d)):
                params[path] = {"weight": m.weight.detach().double().flatten().tolist()}
                if m.bias is not None:
                    params[path]["bias"] = m.bias.detach().double().flatten().tolist()
            if isinstance(m, (torch.nn.PReLU, torchspec.FunctionalPrelu)) and rng.random() < 0.7:
                # slopes that differ per channel (and some above 1), sent as the layer's weight
                with torch.no_grad():
                    m.weight.copy_(torch.randn(m.weight.numel(), dtype=torch.float64) * 0.8)
                params[path] = {"weight": m.weight.detach().double().tolist()}
        out_n = 1
        for d in out_shape:
            out_n *= d
        kind = rng.choice(["sum", "unit", "mse"])
        if kind == "mse" and batch * out_n > 50_000:
            kind = "sum"  # the targets of a large output would pass the body limit
        targets = torch.randn(batch, out_n, dtype=torch.float64)
        objective = {"sum": "sum_output", "unit": {"output_unit": rng.randrange(out_n)}, "mse": {"type": "mse", "targets": targets.tolist()}}[kind]
        body = {"model": spec, "parameters": params, "inputs": {"values": x.flatten().tolist()}, "objective": objective, "dtype": dtype}
        if len(json.dumps(params)) > 3_000_000:
            # explicit weights of a linear layer on a large flattened map would pass the 4 MB
            # body limit: the case cannot be sent, and is counted apart
            oversized += 1
            continue
        status, resp = post(url + "/v1/gradient-diagnostics", body)
        problems = []
        if status == 422 and "reads only padding" in resp.get("detail", ""):
            # refused: checked against PyTorch's own forward, which gives -inf there
            if not empty_pool_window(model, x[:1].to(tdtype)):
                problems.append(f"refused as an empty pool window, but PyTorch's max pools have none: {resp['detail']}")
        elif status != 200:
            problems.append(f"status {status}: {resp}")
        else:
            problems += schema_problems(url, "DiagnosticsReport", resp, "the report")
            pre = {}
            for path in torchspec.all_paths(spec):
                m = torchspec.module_at(model, path)
                if type(m).__name__ in ("Sigmoid", "Tanh", "ReLU", "LeakyReLU", "GELU", "Identity", "ReLU6", "SiLU", "Hardswish", "Hardsigmoid", "Mish",
                                        "Functional", "PReLU", "FunctionalPrelu"):
                    m.register_forward_hook(lambda mod, i, o, p=path: pre.__setitem__(p, i[0].detach().double()))
            y = run(x.to(tdtype))
            if kind == "sum":
                loss = y.sum()
            elif kind == "unit":
                loss = y[:, objective["output_unit"]].sum()
            else:
                loss = ((y - targets.to(tdtype)) ** 2).mean()
            if loss.requires_grad:  # outputs that no parameter reaches: nothing to differentiate
                loss.backward()
            # float64 carries the exactness claim (1e-6); float32 runs of the same graph in two
            # processes sum in different orders (transposed convs, concatenations), and large
            # cancelling gradients (1e5 from a few 1e1 terms) differ by a few 1e-4 relative
            tol = 1e-6 if dtype == "float64" else 5e-4
            # gradients that are zero in exact arithmetic (a softmax or normalization summed
            # away) come out as rounding noise on both sides: an absolute floor at the rounding
            # level of O(1) terms, or of the case's largest gradient when that is larger
            scale = max([torchspec.module_at(model, l["path"]).weight.grad.double().norm().item() for l in resp["layers"]] + [1.0])
            floor = scale * (1e-12 if dtype == "float64" else 1e-5)
            close = lambda a, b: abs(a - b) <= tol * max(abs(b), 1e-12) or abs(a - b) <= floor  # noqa: E731
            reported = {layer["path"] for layer in resp["layers"]}
            for path in torchspec.all_paths(spec):
                m = torchspec.module_at(model, path)
                if isinstance(m, (torch.nn.Linear, torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d, torch.nn.ConvTranspose1d, torch.nn.ConvTranspose2d, torch.nn.ConvTranspose3d)):
                    # a layer no output reads gets no gradient (PyTorch: .grad is None): no row,
                    # listed as unused; every other layer has its row
                    if (m.weight.grad is None) != (path in resp["unused_layers"]) or (m.weight.grad is None) == (path in reported):
                        problems.append(f"{path}: grad is None: {m.weight.grad is None}, but unused {resp['unused_layers']}, rows {sorted(reported)}")
            for layer in resp["layers"]:
                m = torchspec.module_at(model, layer["path"])
                g = m.weight.grad.double()
                if layer["weight_shape"] != list(m.weight.shape):
                    problems.append(f"{layer['path']}: weight_shape {layer['weight_shape']} != PyTorch's {list(m.weight.shape)}")
                if not close(layer["weight_grad"]["frobenius"], g.norm().item()) or not close(layer["weight_grad"]["max_abs"], g.abs().max().item()):
                    problems.append(f"{layer['path']}: weight grad {layer['weight_grad']} != autograd ({g.norm().item()}, {g.abs().max().item()})")
                if m.bias is not None and not close(layer["bias_grad"]["frobenius"], m.bias.grad.double().norm().item()):
                    problems.append(f"{layer['path']}: bias grad {layer['bias_grad']} != autograd {m.bias.grad.norm().item()}")
                sn = torch.linalg.matrix_norm(m.weight.detach().double().reshape(m.weight.shape[0], -1), 2).item()
                if not close(layer["spectral_norm"], sn):
                    problems.append(f"{layer['path']}: spectral norm {layer['spectral_norm']} != {sn}")
                if layer["bound_holds"] is False:
                    problems.append(f"{layer['path']}: measured bias gradient exceeds the bound {layer['bias_grad_bound']}")
            # the normalization layers' weight and bias, beside the table: each one PyTorch
            # gives a gradient, by its name, with autograd's norm
            others = {o["path"]: o for o in resp["other_parameters"]}
            # (and prelu's slopes)
            norms = (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d, torch.nn.BatchNorm3d, torch.nn.LayerNorm, torch.nn.GroupNorm, torch.nn.InstanceNorm2d, torch.nn.InstanceNorm3d,
                     torch.nn.PReLU, torchspec.FunctionalPrelu)
            for path in torchspec.all_paths(spec):
                m = torchspec.module_at(model, path)
                for role in ("weight", "bias"):
                    t = getattr(m, role, None) if isinstance(m, norms) else None
                    if t is None or t.grad is None:
                        continue
                    o = others.pop(f"{path}.{role}", None)
                    norm_tensors += 1
                    if o is None:
                        problems.append(f"{path}.{role}: autograd has a gradient, the answer none (other_parameters {sorted(others)})")
                    elif not close(o["grad"]["frobenius"], t.grad.double().norm().item()) or o["shape"] != list(t.shape):
                        problems.append(f"{path}.{role}: gradient {o['grad']} shape {o['shape']} != autograd {t.grad.double().norm().item()} {list(t.shape)}")
            if others:
                problems.append(f"other_parameters that name no normalization tensor of the module: {sorted(others)}")
            for act in resp["activations"]:
                p = pre[act["path"]]
                if not close(act["max_abs_pre_activation"], p.abs().max().item()) or not close(act["mean_abs_pre_activation"], p.abs().mean().item()):
                    problems.append(f"{act['path']}: pre-activation stats {act} != ({p.abs().mean().item()}, {p.abs().max().item()})")
                # g'(~y) by autograd through the activation module itself, at the pre-activations
                m = torchspec.module_at(model, act["path"])
                z = p.to(tdtype).clone().requires_grad_(True)
                m(z).sum().backward()
                d = z.grad.double()
                if not close(act["mean_derivative"], d.mean().item()):
                    problems.append(f"{act['path']}: mean derivative {act['mean_derivative']} != autograd {d.mean().item()}")
                name = {"sigmoid": "Sigmoid", "tanh": "Tanh", "relu": "ReLU", "relu6": "ReLU6"}.get(act["activation"], act["activation"])
                if name in ("Sigmoid", "Tanh"):
                    want = (p.to(tdtype).abs() > 4.0).double().mean().item()
                    if not close(act["fraction_saturated"], want) and abs(act["fraction_saturated"] - want) > 1e-12:
                        problems.append(f"{act['path']}: fraction saturated {act['fraction_saturated']} != {want}")
                if name in ("ReLU", "ReLU6"):
                    want = (p.to(tdtype) <= 0).flatten(1).all(dim=0).double().mean().item()
                    if abs((act["dead_fraction"] or 0.0) - want) > 1e-12:
                        problems.append(f"{act['path']}: dead fraction {act['dead_fraction']} != {want}")
                if act["activation"] == "prelu":
                    want = max(1.0, m.weight.detach().double().abs().max().item())
                    if not close(act["max_derivative"], want):
                        problems.append(f"{act['path']}: prelu's sup g' {act['max_derivative']} != max(1, max |slope|) = {want}")
                if d.abs().max().item() > act["max_derivative"] * (1 + tol) + 1e-12:
                    problems.append(f"{act['path']}: autograd derivative {d.abs().max().item()} exceeds the reported sup {act['max_derivative']}")
        if problems:
            failures += 1
            print(f"gradient case {case} (seed {seed}): " + "; ".join(problems[:5]) + "\n  spec " + json.dumps(spec)[:600])
    failures += run_spectral(url, max(4, n // 10), rng)
    print(f"gradient oracle: {n + signals + volumes - failures - oversized} passed, {failures} failed, {oversized} too large to send ({signals} of the cases 1-D signals, {volumes} volumes; "
          f"{norm_tensors} normalization weights and biases compared)")
    return failures


def run_spectral(url, n, rng):
    """Spectral norms of matrices large enough for Lanczos (smaller side over 64), with spectra
    that make it work: Gaussian (a small top gap), low rank plus noise, a cluster of equal top
    singular values, and rectangular both ways; against torch.linalg.matrix_norm(W, 2) in float64.
    The true value must lie in the reported [spectral_norm, spectral_norm + spectral_norm_error]
    (up to rounding), and the error bound must be under the requested tolerance (the default
    1e-3, or 1e-8) times the value; tolerance 0 must give the exact value by eigvalsh."""
    failures = 0
    for case in range(n):
        rows, cols = rng.randint(65, 300), rng.randint(65, 300)
        g = torch.Generator().manual_seed(rng.randrange(2**31))
        kind = case % 3
        if kind == 0:
            w = torch.randn(rows, cols, generator=g, dtype=torch.float64)
        elif kind == 1:
            r = rng.randint(1, 5)
            w = torch.randn(rows, r, generator=g, dtype=torch.float64) @ torch.randn(r, cols, generator=g, dtype=torch.float64)
            w += 1e-3 * torch.randn(rows, cols, generator=g, dtype=torch.float64)
        else:
            u, _ = torch.linalg.qr(torch.randn(rows, min(rows, cols), generator=g, dtype=torch.float64))
            v, _ = torch.linalg.qr(torch.randn(cols, min(rows, cols), generator=g, dtype=torch.float64))
            sv = torch.rand(min(rows, cols), generator=g, dtype=torch.float64)
            sv[:3] = 2.0
            w = u @ torch.diag(sv) @ v.T
        spec = {"input_shape": [cols], "layers": [{"type": "linear", "out_features": rows, "bias": False}]}
        tol = [None, 1e-8, 0][case % 3 if case % 2 else 0]
        # float32 runs iterate in float32 at the default tolerance: the truth is the norm of the
        # float32-rounded weights
        dtype = "float32" if case % 4 == 2 else "float64"
        if dtype == "float32":
            w = w.float().double()
        body = {"model": spec, "parameters": {"0": {"weight": w.flatten().tolist()}}, "inputs": {"batch_size": 1}, "dtype": dtype}
        if tol is not None:
            body["spectral_tolerance"] = tol
        want_tol = 1e-3 if tol is None else tol
        status, resp = post(url + "/v1/gradient-diagnostics", body)
        true = torch.linalg.matrix_norm(w, 2).item()
        problem = None
        if status != 200:
            problem = f"status {status}: {resp}"
        else:
            layer = resp["layers"][0]
            est, err = layer["spectral_norm"], layer["spectral_norm_error"]
            width = cluster_width(w, true, want_tol)
            if layer["spectral_norm_method"] != ("eigvalsh" if want_tol == 0 else "lanczos"):
                problem = f"tolerance {want_tol}: method {layer['spectral_norm_method']}"
            elif not (est - 1e-12 * true <= true <= est + err + width + 1e-12 * true):
                problem = f"true {true!r} outside [{est!r}, {est + err!r}] (+ cluster width {width!r})"
            elif err > want_tol * true:
                problem = f"error bound {err} over {want_tol} of {true}"
        if problem:
            failures += 1
            print(f"spectral case {case} ({rows}x{cols}, kind {kind}, {dtype}, tolerance {want_tol}): {problem}")
    # weights of one shape step together in the service (one batched product for all their
    # runs): chains of three to five square layers with different spectra, each layer's interval
    # against its own matrix_norm
    for case in range(max(2, n // 3)):
        size, depth = rng.randint(65, 160), rng.randint(3, 5)
        g = torch.Generator().manual_seed(rng.randrange(2**31))
        ws = []
        for k in range(depth):
            w = torch.randn(size, size, generator=g, dtype=torch.float64) * (0.5 + k)
            if k % 2:
                r = rng.randint(1, 3)
                w = w * 1e-2 + torch.randn(size, r, generator=g, dtype=torch.float64) @ torch.randn(r, size, generator=g, dtype=torch.float64)
            ws.append(w)
        spec = {"input_shape": [size], "layers": [{"type": "linear", "out_features": size, "bias": False} for _ in ws]}
        body = {"model": spec, "parameters": {str(k): {"weight": w.flatten().tolist()} for k, w in enumerate(ws)},
                "inputs": {"batch_size": 1}, "dtype": "float64"}
        status, resp = post(url + "/v1/gradient-diagnostics", body)
        problems = [f"status {status}: {resp}"] if status != 200 else []
        for k, w in enumerate(ws if status == 200 else []):
            layer = item_at(resp["layers"], str(k))
            true = torch.linalg.matrix_norm(w, 2).item()
            est, err = layer["spectral_norm"], layer["spectral_norm_error"]
            width = cluster_width(w, true, 1e-3)
            if not (est - 1e-12 * true <= true <= est + err + width + 1e-12 * true) or err > 1e-3 * true:
                problems.append(f"layer {k}: true {true!r}, reported [{est!r}, {est + err!r}]")
        if problems:
            failures += 1
            print(f"spectral chain case {case} ({depth} layers {size}x{size}): " + "; ".join(problems))
    return failures


def cluster_width(w, true, tol):
    """How far below the top singular value the others within `tol` of it reach: what the
    service's interval may miss by (see the README) when Lanczos's start vectors mix a cluster of
    nearly equal top singular values (three equal ones split by float32 rounding: 3e-11 of the
    value, seed 4) without resolving it. A start that misses a top singular value set apart by
    more than the tolerance still fails."""
    if tol <= 0:
        return 0.0
    sv = torch.linalg.svdvals(w)
    return true - sv[sv >= true * (1 - tol)].min().item()


def item_at(rows, path):
    return next(r for r in rows if r["path"] == path)


def rand_interp(rng):
    """A random upsampling of a 1-D signal, an image or a volume: nearest or linear, by any
    positive scale_factor (ints, halves, quarters, thirds, two decimals) or to any size, above or
    below the input, align_corners either way for the linear modes."""
    rank = rng.choice([1, 1, 2, 2, 3])
    shape = [1] + [rng.randint(1, 9 if rank == 3 else 20) for _ in range(rank)]
    linear = rng.random() < 0.6
    mode = {1: "linear", 2: "bilinear", 3: "trilinear"}[rank] if linear else "nearest"
    layer = {"type": "upsample", "mode": mode}
    def factor():
        return rng.choice([rng.randint(1, 7), rng.randint(2, 12) / 2, rng.randint(1, 16) / 4, round(rng.uniform(0.3, 4), 2),
                           rng.choice([1 / 3, 2 / 3, 0.1, 0.7, 1.1, 2.2])])
    if rng.random() < 0.5:
        f = [factor() for _ in range(rank)]
        layer["scale_factor"] = f if rank == 1 or rng.random() < 0.6 else f[0]
        # an output of at least one position
        for a, n in enumerate(shape[1:]):
            fa = f[a] if isinstance(layer["scale_factor"], list) else f[0]
            if int(n * fa) < 1:
                shape[a + 1] = int(1 / fa) + 1
    else:
        layer["size"] = [rng.randint(1, 48 if rank == 1 else 24 if rank == 2 else 10) for _ in range(rank)]
        if rank == 1 and rng.random() < 0.5:
            # align_corners' exact family: n+1 to 2^k n + 1
            n = rng.randint(1, 8)
            shape[1], layer["size"] = n + 1, [n * rng.choice([1, 2, 4, 8]) + 1]
    if linear and rng.random() < 0.5:
        layer["align_corners"] = rng.random() < 0.7
    return {"input_shape": shape, "layers": [layer]}


def interp_module(layer, dtype):
    sf = layer.get("scale_factor")
    return torch.nn.Upsample(size=tuple(layer["size"]) if "size" in layer else None,
                             scale_factor=tuple(float(v) for v in sf) if isinstance(sf, list) else sf,
                             mode=layer["mode"], align_corners=layer.get("align_corners")).to(dtype)


def interp_sets(spec, dtype):
    """Every output position's non-zero input positions by autograd (the channel is one)."""
    x = torch.ones(1, *spec["input_shape"], dtype=dtype, requires_grad=True)
    y = interp_module(spec["layers"][0], dtype)(x)
    out = {}
    for index in itertools.product(*[range(n) for n in y.shape[2:]]):
        (g,) = torch.autograd.grad(y[(0, 0) + index], x, retain_graph=True)
        nz = g[0, 0] != 0
        out[index] = [nonzero_ranges(nz.any(dim=[d for d in range(nz.dim()) if d != a]).tolist() if nz.dim() > 1 else nz.tolist())
                      for a in range(nz.dim())]
    return list(y.shape[1:]), out


def run_interp(url, n, seed):
    """Upsampling against PyTorch: the service's output shape, the exact set of sampled output
    units against autograd's in float32 and in float64 (which must agree wherever the service
    answers), the per-layer range at those units against the set's ends; a refusal must say the
    positions depend on the arithmetic, and is confirmed where float32 and float64 differ here
    (where they agree, the difference is a fused multiply-add's, as CUDA computes)."""
    rng = random.Random(seed)
    failures = answered = confirmed = unconfirmed = units = 0
    keys = {1: ["input_positions"], 2: ["input_rows", "input_cols"], 3: ["input_slices", "input_rows", "input_cols"]}
    for case in range(n):
        spec = rand_interp(rng)
        rank = len(spec["input_shape"]) - 1
        shape32, sets32 = interp_sets(spec, torch.float32)
        shape64, sets64 = interp_sets(spec, torch.float64)
        differ = sets32 != sets64
        status, resp = post(url + "/v1/receptive-field", {"model": spec, "verify": False})
        problems = []
        if status == 422 and "would depend on the dtype" in resp.get("detail", ""):
            if differ:
                confirmed += 1
            else:
                unconfirmed += 1
        elif status != 200:
            problems.append(f"status {status}: {resp}")
        elif resp["model"]["output_shape"] != shape32:
            problems.append(f"output shape {resp['model']['output_shape']} != PyTorch's {shape32}")
        else:
            answered += 1
            if differ:
                problems.append("answered, but PyTorch's float32 and float64 sets differ")
            indices = list(sets32)
            for index in rng.sample(indices, min(len(indices), 24 if rank == 1 else 10)):
                units += 1
                status, r = post(url + "/v1/receptive-field", {"model": spec, "position": {"layer": "0", "index": list(index)},
                                                               "verify": rng.random() < 0.2})
                if status != 200:
                    problems.append(f"unit {index}: status {status}: {r}")
                    continue
                got = [r["position"].get(k) for k in keys[rank]]
                if got != sets32[index]:
                    problems.append(f"unit {index}: service {got} != autograd {sets32[index]}")
                if (r.get("verification") or {}).get("ran") and not r["verification"].get("agrees"):
                    problems.append(f"unit {index}: the service's probe disagrees: {r['verification']}")
                # a range the service states, clipped to the input, is the set's ends exactly
                clipped = r["position"].get("clipped")
                row = r["layers"][0]
                if rank > 1 and clipped:
                    for k, axis in zip(keys[rank], ["slices", "rows", "cols"][3 - rank:]):
                        ends = [sets32[index][keys[rank].index(k)][0][0], sets32[index][keys[rank].index(k)][-1][1]]
                        if clipped.get(axis) != ends:
                            problems.append(f"unit {index}: clipped {axis} {clipped.get(axis)} != the set's ends {ends} ({row.get('rational')})")
                if rank == 1 and row.get("rational"):
                    ln = row["rational"]["length"]
                    at = lambda e, i: e["a"] * ((e["n"] * i + e["c"]) // e["d"]) + e["e"]  # noqa: E731
                    last = spec["input_shape"][1] - 1
                    ends = [min(max(at(ln["lo"], index[0]), 0), last), min(max(at(ln["hi"], index[0]), 0), last)]
                    if ends != [sets32[index][0][0][0], sets32[index][0][-1][1]]:
                        problems.append(f"unit {index}: {ln['text']} gives {ends}, the set is {sets32[index][0]}")
        if problems:
            failures += 1
            print(f"case {case} (seed {seed}): {json.dumps(spec)}")
            for p in problems[:6]:
                print("  " + p)
    print(f"interp oracle: {n - failures} passed, {failures} failed ({answered} answered, {units} units; refused as dtype-dependent: "
          f"{confirmed} where float32 and float64 differ here, {unconfirmed} where only a fused multiply-add differs)")
    return failures


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("what", choices=["rf", "complexity", "momentum", "gradient", "torchvision", "interp"])
    ap.add_argument("url")
    ap.add_argument("--n", type=int, default=220)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--graphs", type=int, default=150, help="random graph-form cases on top of --n (rf, complexity)")
    ap.add_argument("--signals", type=int, default=120, help="random 1-D signal networks on top (rf, complexity, gradient)")
    ap.add_argument("--volumes", type=int, default=100, help="random 3-D networks on volumes [C, D, H, W] on top (rf, complexity, gradient)")
    ap.add_argument("--presets", default="vgg_stem,inception_naive,inception_reduced,alexnet,resnet18,resnet50,mobilenet_v2,googlenet,vgg16,mobilenet_v3_small,efficientnet_b0,unet_small")
    a = ap.parse_args()
    if a.what == "rf":
        failed = run_rf(a.url, a.n, 1 if a.seed is None else a.seed, a.graphs, a.signals, a.volumes)
    elif a.what == "interp":
        failed = run_interp(a.url, a.n, 9 if a.seed is None else a.seed)
    elif a.what == "torchvision":
        failed = run_torchvision(a.url, list(TORCHVISION))
    elif a.what == "gradient":
        failed = run_gradient(a.url, a.n, 4 if a.seed is None else a.seed, a.signals, a.volumes)
    elif a.what == "momentum":
        failed = run_momentum(a.url, a.n, 3 if a.seed is None else a.seed)
    else:
        failed = run_complexity(a.url, a.n, 2 if a.seed is None else a.seed, [p for p in a.presets.split(",") if p], a.graphs, a.signals, a.volumes)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
