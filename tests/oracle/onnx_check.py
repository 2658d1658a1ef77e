"""ONNX files in, checked against PyTorch: the same networks exported by torch.onnx.export.

  python onnx_check.py URL [--n 60] [--seed 5]

1. torchvision's resnet18, mobilenet_v2, efficientnet_b0, mobilenet_v3_small, googlenet,
   convnext_tiny (its blocks' channels-last permutes, layernorm and linear layers; layer scales)
   and vit_b_16 (both exporters: attention) (weights=None, seed 0), exported at 3x224x224,
   uploaded raw: every complexity row (type,
   params, MACs, FLOPs, output shape) and every total equal the preset's, under the default
   convention and the fvcore, ptflops and torch_flop_counter profiles. Eval-mode files have no
   Dropout, so dropout rows (zero in every count) are left out of the comparison.
2. Random oracle specs and graphs (torchspec), exported and sent as base64 in JSON:
   - params equal sum(p.numel()) and the torch_flop_counter total equals FlopCounterMode on the
     module itself;
   - the receptive field of one unit of the output equals autograd's exact set on the module;
   - gradient diagnostics with the file's weights (init "model") equal autograd on the module,
     per named parameter (PyTorch's module names), in float64 to 1e-7 relative.
   Every layer the oracle draws has a mapping, so a file the importer refuses fails the run.
   Networks that torch.onnx.export itself refuses (adaptive pools whose output does not divide
   the input) are counted apart.
3. The dynamo exporter (torch.onnx.export's default) on resnet18: the file's own parameters and
   FlopCounterMode's total.
4. resnet18, mobilenet_v2 and efficientnet_b0 at 3x32x32 and vit_b_16 at 3x224x224 (346 MB, from the
   TorchScript exporter): diagnostics with the file's weights in float32 on inputs the service draws from a
   seed (check.drawn_inputs draws the same) equal autograd on the original module per named
   parameter, weights and biases, to 1e-5 relative.
5. Random sequence networks (seq_check's self-attention included, every fourth file from the
   dynamo exporter, whose nn.RNN is an unrolled loop read back as the layer): token ids read by
   an embedding (the file's Gather) or float sequences,
   LSTM/GRU/RNN of one or two layers, bidirectional (the file's recurrent ops in their
   time-major layout, gates reordered), self-attention (causal or not, with or without bias and
   need_weights), linear layers on tokens (MatMul and Add), layernorm, activations, softmax,
   means and residual blocks: params
   and the torch_flop_counter total equal the module's, the exact tokens of one output unit
   equal autograd's, and float64 gradients with the file's weights equal autograd per named
   parameter (PyTorch's names: `1.weight_ih_l1_reverse`).
6. Random cross-attention networks (seq_check's: latent queries, a learned memory, separate
   q, k and v), from the TorchScript exporter and every fourth from the dynamo one too: params,
   FlopCounterMode, the libtorch check and float64 gradients per named parameter.

Exits non-zero on any disagreement.
"""
import argparse
import base64
import contextlib
import copy
import io
import json
import logging
import math
import os
import random
import sys
import warnings

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, os.path.dirname(__file__))
import torchspec  # noqa: E402
from check import drawn_inputs, empty_pool_window, flop_counts, oracle_rf, post, post_multipart, post_raw  # noqa: E402

warnings.filterwarnings("ignore")
logging.disable(logging.WARNING)
torch.set_num_threads(1)

TORCHVISION = ["resnet18", "mobilenet_v2", "efficientnet_b0", "mobilenet_v3_small", "shufflenet_v2_x0_5", "googlenet", "convnext_tiny", "vit_b_16", "r3d_18"]
# attention is read from both exporters' files, and the BatchNorms the dynamo exporter folds
# into convs are put back: these are checked from both
BOTH_EXPORTERS = ("vit_b_16", "resnet18")


def export(model, shape, dynamo=False, example=None):
    """The model's ONNX file, by the dynamo or the TorchScript exporter, the exporters' progress
    lines and warnings silenced (their exceptions still raise)."""
    x = torch.zeros(1, *shape) if example is None else example
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        if dynamo:
            return torch.onnx.export(model, (x,), dynamo=True, verbose=False).model_proto.SerializeToString()
        buf = io.BytesIO()
        # PRESERVE keeps BatchNorm as a node (the default, EVAL, folds it into the conv before it)
        torch.onnx.export(model, (x,), buf, dynamo=False, opset_version=17, training=torch.onnx.TrainingMode.PRESERVE)
        return buf.getvalue()


STRUCTURAL = ("dropout", "add", "concat")


# torchvision's ViT writes x.reshape(n, hidden_dim, n_h * n_w) where the preset says flatten(2):
# the same view, zero in every count
VIEWS = {"reshape": "flatten"}


def row_key(r):
    return (VIEWS.get(r["type"], r["type"]), r["params"], r["macs"], r["flops"], tuple(r["output_shape"] or []))


def same_rows(a, b):
    """Rows as a multiset (names and topological order differ between a file and a preset)."""
    # dropout is absent from eval-mode files; a residual's add and an inception's concat are rows
    # of their own in a file, inside the composite's subtotal in a preset (zero in these counts;
    # the totals compare them)
    keep = lambda rows: sorted(row_key(r) for r in rows if r["type"] not in STRUCTURAL and not r["subtotal"])  # noqa: E731
    return keep(a) == keep(b)


def run_torchvision(url, names, dynamo_too):
    import torchvision
    failures = 0
    for name in names:
        torch.manual_seed(0)
        kw = {"aux_logits": False, "init_weights": True} if name == "googlenet" else {}
        # the video ResNet reads a clip [3, 16, 112, 112]
        video = name == "r3d_18"
        model = getattr(torchvision.models.video if video else torchvision.models, name)(weights=None, **kw).eval()
        size = [3, 16, 112, 112] if video else [3, 224, 224]
        files = [("legacy", export(model, size))]
        if name in BOTH_EXPORTERS:
            files.append(("dynamo", export(model, size, dynamo=True)))
        if dynamo_too and name == "resnet18":
            failures += check_dynamo(url, name, model, dict(files)["dynamo"])
        if name in ("resnet18", "mobilenet_v2", "efficientnet_b0", "vit_b_16", "r3d_18"):
            # ViT's position embedding fixes its image size
            shape = [3, 224, 224] if name == "vit_b_16" else [3, 4, 24, 24] if video else [3, 32, 32]
            data = files[0][1] if name == "vit_b_16" else export(model, shape)  # (the legacy file)
            problems = check_float32_gradients(url, name, model, data, shape)
            for p in problems[:5]:
                print(p)
            failures += bool(problems)
        for how, data in files:
            problems = []
            # ptflops counts modules' hooks and F.* calls apart; a file does not say which
            # (torchvision's GoogLeNet and MobileNetV2 call F.relu / F.adaptive_avg_pool2d), so
            # its ptflops profile counts every op as a module (ConvNeXt's LayerNorm2d class calls
            # F.layer_norm, its blocks' Permute + nn.LayerNorm a module: the same ops in a file)
            # (and torchvision's Conv3DSimple, a subclass of nn.Conv3d ptflops does not hook, is an
            # ONNX Conv like any other)
            ptflops = () if name in ("googlenet", "mobilenet_v2", "convnext_tiny", "r3d_18") else ("ptflops",)
            for profile in (None, "fvcore", *ptflops, "torch_flop_counter"):
                req = {"verify": False} | ({"profile": profile} if profile else {})
                s1, got = post_raw(url + "/v1/complexity", data, req)
                s2, want = post(url + "/v1/complexity", {"model": {"preset": name}} | req)
                if s1 != 200 or s2 != 200:
                    problems.append(f"profile {profile}: status {s1}/{s2}: {str(got)[:600]}")
                    break
                tg = {k: v for k, v in got["totals"].items() if not k.startswith("output_")}
                tw = {k: v for k, v in want["totals"].items() if not k.startswith("output_")}
                if tg != tw:
                    problems.append(f"profile {profile}: totals {tg} != preset {tw}")
                if not same_rows(got["rows"], want["rows"]):
                    a = [row_key(r) for r in got["rows"] if not r["subtotal"] and r["type"] not in STRUCTURAL]
                    b = [row_key(r) for r in want["rows"] if not r["subtotal"] and r["type"] not in STRUCTURAL]
                    extra = [r for r in a if r not in b][:3]
                    missing = [r for r in b if r not in a][:3]
                    problems.append(f"profile {profile}: rows differ from the preset's: file only {extra}, preset only {missing}")
            print(f"onnx {name} ({how} export, {len(data) / 1e6:.1f} MB): " + ("ok" if not problems else "; ".join(problems)))
            failures += bool(problems)
    return failures


def check_float32_gradients(url, name, model, data, shape):
    """Diagnostics with the file's weights in float32 against autograd on the original module,
    per named parameter, to 1e-5 relative (the issue's bar): the file uploaded raw, one input
    drawn by the service from a seed (check.drawn_inputs draws the same values here)."""
    # (uniform inputs for one of them, so both of the service's draws are checked)
    uniform = {"distribution": "uniform", "bound": 2.0} if name == "mobilenet_v2" else {"distribution": "normal"}
    x = drawn_inputs(math.prod(shape), seed=7, **uniform).float().reshape(1, *shape)
    s, g = post_raw(url + "/v1/gradient-diagnostics", data, {"inputs": {"batch_size": 1, "seed": 7} | uniform, "dtype": "float32"})
    if s != 200:
        return [f"{name} float32 diagnostics: status {s}: {str(g)[:300]}"]
    problems, checked, worst = gradient_problems(model, x, g, tol=1e-5, floor=1e-5)
    if checked < len(g["layers"]) // 2:
        problems.append(f"{name}: only {checked} of {len(g['layers'])} rows compared")
    print(f"onnx {name} float32 gradients with the file's weights: {checked} parameters, worst relative difference {worst:.1e}")
    return [f"{name} float32: {p}" for p in problems]


def prune(spec):
    """A graph's nodes that no output reads are left out: exporters drop them (the file has no
    such node), while FlopCounterMode on the module counts them."""
    if "graph" not in spec:
        return spec
    nodes, prev = {}, "input"
    for n in spec["graph"]["nodes"]:
        n = dict(n, inputs=n.get("inputs") or [prev])
        nodes[n["name"]] = n
        prev = n["name"]
    outs = spec["graph"].get("outputs") or [spec["graph"]["nodes"][-1]["name"]]
    live, stack = set(), list(outs)
    while stack:
        n = stack.pop()
        if n in live or n == "input":
            continue
        live.add(n)
        stack += nodes[n].get("inputs", [])
    kept = [nodes[n["name"]] for n in spec["graph"]["nodes"] if n["name"] in live]
    return {"input_shape": spec["input_shape"], "graph": {"nodes": kept, "outputs": outs}}


def check_dynamo(url, name, model, data):
    """torch.onnx.export's default (dynamo) folds BatchNorm into the convs; the importer puts
    each norm back (its metadata names it). The file's params must equal the module's
    sum(numel) (the file alone has fewer float initializers: the norms' are gone) and its
    torch_flop_counter total FlopCounterMode on the module; every row is named after the module's
    own names (the rows against the preset's: run_torchvision)."""
    import onnx
    proto = onnx.load_from_string(data)
    file_params = sum(int(torch.tensor(list(t.dims)).prod().item()) if t.dims else 1 for t in proto.graph.initializer if t.data_type == onnx.TensorProto.FLOAT)
    params = sum(p.numel() for p in model.parameters())
    total, _ = flop_counts(model, torch.zeros(1, 3, 224, 224))
    s, got = post_raw(url + "/v1/complexity", data, {"verify": True, "profile": "torch_flop_counter"})
    problems = [] if file_params < params else [f"the file holds {file_params} float numbers, not fewer than the module's {params}: nothing folded?"]
    if s != 200:
        problems.append(f"status {s}: {str(got)[:400]}")
    else:
        if got["totals"]["params"] != params:
            problems.append(f"params {got['totals']['params']} != the module's sum(numel) {params}")
        if got["totals"]["flops"] != total:
            problems.append(f"torch_flop_counter {got['totals']['flops']} != FlopCounterMode {total}")
        if not got["verification"]["agrees"]:
            problems.append("the libtorch check disagrees")
        # every row is named after a module of the original, or an op in one (`layer1.0.add`),
        # or an op of the model's own forward (`view`); a repeated name gets `_2`
        modules = {n for n, _ in model.named_modules()}
        named = lambda p: p in modules or p.rsplit(".", 1)[0] in modules or ("." not in p and not p.startswith("node_"))  # noqa: E731
        strays = [r["path"] for r in got["rows"] if not named(r["path"]) and not named(r["path"].rsplit("_", 1)[0])]
        if strays:
            problems.append(f"rows not named after the module's own names: {strays[:5]}")
    print(f"onnx {name} (dynamo export, BatchNorm folded and put back, {len(data) / 1e6:.1f} MB): " + ("ok" if not problems else "; ".join(problems)))
    return bool(problems)


def weights_of(model):
    return {n: m for n, m in model.named_modules()}


def volume_export_differs(spec):
    """A volume network whose ONNX export is not the module (see run_random)."""
    def sizes(v):
        return v if isinstance(v, list) else [v] * 3

    def walk(layers):
        for l in layers:
            yield l
            for b in l.get("branches", []):
                yield from walk(b)
            yield from walk(l.get("body", []))
            yield from walk(l.get("shortcut", []))
    for l in walk(spec["layers"]):
        if l.get("ceil_mode") and any(s > k for s, k in zip(sizes(l.get("stride") or l["kernel_size"]), sizes(l["kernel_size"]))):
            return True
    return False


def run_random(url, n, seed, only=None, signals=0, volumes=0):
    failures = unmapped = refused = 0
    listed = []
    for case in range(n + signals + volumes) if only is None else [only]:
        # every case from its own seed, so that `--case K` replays one alone; cases from n on
        # are 1-D signal networks, from n + signals on 3-D networks on volumes
        rng = random.Random(seed * 100_003 + case)
        torch.manual_seed(seed * 100_003 + case)
        draw = (lambda: torchspec.random_volume_spec(rng)) if case >= n + signals else \
            (lambda: torchspec.random_signal_spec(rng)) if case >= n else \
            (lambda: torchspec.random_spec(rng) if case % 2 == 0 else prune(torchspec.random_graph(rng)))
        spec = draw()
        # circular padding leaves torch.onnx.export as Slice and Concat nodes around a plain
        # conv, which the importer does not fold back into one layer: drawn again. So is, on
        # volumes (where a conv3d's reflect/replicate padding exports as a Pad read back as a
        # 3-D pad layer before the conv), a ceil-mode 3-D pool
        # whose stride exceeds its kernel (ONNX's ceil rule keeps a last window that starts in
        # the padding, PyTorch's drops it: the exporter then sizes a later adaptive pool's
        # kernel from ONNX's shapes, a file PyTorch's module does not compute)
        # (a network of dropouts and identities alone exports no node: its output is its input,
        # which the importer refuses by name; drawn again too)
        trivial = lambda sp: "layers" in sp and all(ly["type"] in ("dropout", "identity") for ly in sp["layers"])  # noqa: E731
        while "circular" in json.dumps(spec) or (case >= n + signals and volume_export_differs(spec)) or trivial(spec):
            spec = draw()
        # a volume network that ends in a normalization sums to a constant over each group: the
        # objective below (the outputs' sum) would have exactly zero gradients, rounding noise
        # on both sides (so would any linear layer after it that sums every position); a sigmoid
        # after it does not sum to a constant
        if "layers" in spec and spec["layers"][-1]["type"] in ("groupnorm", "instancenorm3d", "layernorm"):
            spec["layers"].append({"type": "sigmoid"})
        label = f"onnx random case {case} (seed {seed})"
        model = torchspec.build_model(spec).float().eval()
        try:
            data = export(model, spec["input_shape"])
        except Exception as e:  # noqa: BLE001 - PyTorch's exporter refuses some modules itself
            # (adaptive pools whose output does not divide the input, which the exporter refuses)
            refused += 1
            if os.environ.get("ONNX_CHECK_REFUSALS"):
                print(f"{label}: the exporter refuses: {str(e).splitlines()[0][:200]}\n  {json.dumps(spec)[:600]}")
            continue
        onnx_model = {"onnx": base64.b64encode(data).decode()}
        if len(json.dumps(onnx_model)) > 3_500_000:
            continue
        problems = []
        status, resp = post(url + "/v1/complexity", {"model": onnx_model, "profile": "torch_flop_counter", "verify": True})
        if status == 422 and "cannot be mapped" in resp.get("detail", ""):
            # every layer the oracle draws has a mapping: a refusal here is a failure
            unmapped += 1
            failures += 1
            listed.append(f"{label}: {resp['detail'][:200]}\n  spec {json.dumps(spec)[:400]}")
            continue
        if status != 200:
            print(f"{label}: status {status}: {str(resp)[:800]}\n  spec {json.dumps(spec)[:600]}")
            failures += 1
            continue
        total, _ = flop_counts(model, torch.zeros(1, *spec["input_shape"]))
        params = sum(p.numel() for p in model.parameters())
        if resp["totals"]["flops"] != total:
            problems.append(f"torch_flop_counter total {resp['totals']['flops']} != FlopCounterMode {total}")
        if resp["totals"]["params"] != params:
            problems.append(f"params {resp['totals']['params']} != sum(numel) {params}")
        if not resp["verification"].get("agrees", True):
            problems.append("the libtorch check disagrees")
        # the receptive field of one output unit, against autograd on the module
        out_node = [r for r in resp["rows"] if not r["subtotal"]][-1]
        out_shape = out_node["output_shape"]
        signal = len(spec["input_shape"]) == 2
        volume = len(spec["input_shape"]) == 4
        if (case % 2 == 0 and len(out_shape) == 3) or (signal and len(out_shape) == 2) or (volume and len(out_shape) == 4):
            index = [rng.randrange(d) for d in out_shape[1:]]
            path = torchspec.all_paths(spec)[-1] if "layers" in spec else None
            if path is not None and "." not in path:
                s, rf = post(url + "/v1/receptive-field", {"model": onnx_model, "position": {"layer": out_node["path"], "index": index}})
                want = oracle_rf(spec, path, index, None)
                if s != 200:
                    problems.append(f"receptive field status {s}: {str(rf)[:300]}")
                else:
                    for key, w in want.items():
                        if rf["position"].get(key) != w:
                            problems.append(f"receptive field {key}: {rf['position'].get(key)} != autograd {w}")
        # gradients with the file's weights against autograd on the module itself
        if any(isinstance(m, (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d, torch.nn.Linear, torch.nn.ConvTranspose1d, torch.nn.ConvTranspose2d, torch.nn.ConvTranspose3d)) for m in model.modules()):
            # float64 on both sides (the file's float32 weights widened), where the claim is exact
            x = torch.randn(2, *spec["input_shape"], dtype=torch.float64)
            model = model.double()
            s, g = post(url + "/v1/gradient-diagnostics", {"model": onnx_model, "inputs": {"values": x.flatten().tolist()}, "dtype": "float64"})
            if s == 422 and "reads only padding" in g.get("detail", ""):
                if not empty_pool_window(model, x[:1]):
                    problems.append(f"refused as an empty pool window, but PyTorch's max pools have none: {g['detail']}")
            elif s != 200:
                problems.append(f"diagnostics status {s}: {str(g)[:300]}")
            else:
                model.zero_grad()
                y = model(x)
                ys = y if isinstance(y, tuple) else (y,)
                torch.cat([t.flatten(1) for t in ys], 1).sum().backward()
                mods = weights_of(model)
                scale = max([mods[r["path"]].weight.grad.norm().item() for r in g["layers"] if r["path"] in mods] + [1.0])
                for r in g["layers"]:
                    m = mods.get(r["path"])
                    if m is None:
                        problems.append(f"diagnostics row {r['path']} names no module of the original")
                        continue
                    want = m.weight.grad.double().norm().item()
                    got = r["weight_grad"]["frobenius"]
                    if abs(got - want) > 1e-7 * max(abs(want), 1e-12) and abs(got - want) > 1e-12 * scale:
                        problems.append(f"{r['path']}: weight grad {got} != autograd {want}")
                    if m.bias is not None and r.get("bias_grad"):
                        wb = m.bias.grad.double().norm().item()
                        gb = r["bias_grad"]["frobenius"]
                        if abs(gb - wb) > 1e-7 * max(abs(wb), 1e-12) and abs(gb - wb) > 1e-12 * scale:
                            problems.append(f"{r['path']}: bias grad {gb} != autograd {wb}")
        if problems:
            failures += 1
            print(f"{label}: " + "; ".join(problems[:6]) + "\n  spec " + json.dumps(spec)[:600])
    for line in listed:
        print("  not mapped: " + line)
    count = n + signals + volumes if only is None else 1
    print(f"onnx random oracle: {count - failures - refused} passed, {failures} failed, {unmapped} with ops the importer does not map, "
          f"{refused} that torch.onnx.export itself refuses")
    return failures


class LayerScale(torch.nn.Module):
    """A conv times a learned [C, 1, 1] scale plus a mean over the channels (ConvNeXt's)."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.layer_scale = torch.nn.Parameter(torch.rand(4, 1, 1))

    def forward(self, x):
        return self.conv(x) * self.layer_scale + x.mean(1, keepdim=True)


class PositionEmbedding(torch.nn.Module):
    """A learned [1, L, E] position embedding added to a sequence, then a linear layer (ViT's)."""

    def __init__(self):
        super().__init__()
        self.pos_embedding = torch.nn.Parameter(torch.rand(1, 5, 6))
        self.fc = torch.nn.Linear(6, 6)

    def forward(self, x):
        return self.fc(x + self.pos_embedding)


def run_learned_tensors(url):
    """Initializers an Add or Mul reads become parameter nodes under PyTorch's names: params and
    float64 gradients per named parameter against autograd."""
    failures = 0
    torch.manual_seed(3)
    for model, shape in [(LayerScale().eval(), [3, 6, 6]), (PositionEmbedding().eval(), [5, 6])]:
        onnx_model = {"onnx": base64.b64encode(export(model, shape)).decode()}
        problems = []
        s, r = post(url + "/v1/complexity", {"model": onnx_model, "verify": True})
        if s != 200 or r["totals"]["params"] != sum(p.numel() for p in model.parameters()):
            problems.append(f"complexity {s}: {str(r)[:300]}")
        x = torch.randn(2, *shape, dtype=torch.float64)
        s, g = post(url + "/v1/gradient-diagnostics", {"model": onnx_model, "inputs": {"values": x.flatten().tolist()}, "dtype": "float64"})
        model = model.double()
        model.zero_grad()
        model(x).sum().backward()
        params = dict(model.named_parameters())
        rows = g.get("layers", []) if s == 200 else []
        if {row["path"] for row in rows} != {n.removesuffix(".weight") for n in params if not n.endswith(".bias")}:
            problems.append(f"rows {[row['path'] for row in rows]} != the module's parameters {list(params)} ({str(g)[:200]})")
        for row in rows:
            p = params.get(row["path"], params.get(row["path"] + ".weight"))
            if p is not None and abs(row["weight_grad"]["frobenius"] - p.grad.norm().item()) > 1e-9 * max(1.0, p.grad.norm().item()):
                problems.append(f"{row['path']}: {row['weight_grad']['frobenius']} != autograd {p.grad.norm().item()}")
        print(f"onnx {type(model).__name__}: " + ("ok" if not problems else "; ".join(problems)))
        failures += bool(problems)
    return failures


def check_prelu(url):
    """nn.PReLU with one slope or one per channel (after a linear, a conv2d, a conv3d), its slopes
    drawn apart, by both exporters (their PRelu slopes are [1], [C], [C, 1, 1], [1, C, 1, 1], ...):
    parameters, the slopes' float64 gradient and sup g' = max(1, max |slope|) against autograd."""
    failures = 0
    torch.manual_seed(5)
    for dynamo in (False, True):
        for n, shape in ((1, [3, 6, 6]), (3, [3, 6, 6]), (4, [4]), (1, [4]), (3, [3, 5, 5, 5])):
            first = {3: torch.nn.Conv2d(3, 3, 3), 1: torch.nn.Linear(4, 4), 4: torch.nn.Conv3d(3, 3, 2)}[len(shape)]
            model = torch.nn.Sequential(first, torch.nn.PReLU(n), torch.nn.Flatten(), torch.nn.LazyLinear(2))
            model(torch.zeros(1, *shape))
            with torch.no_grad():
                model[1].weight.copy_(torch.randn(n) * 2)
            onnx_model = {"onnx": base64.b64encode(export(model.eval(), shape, dynamo=dynamo)).decode()}
            x = torch.randn(2, *shape, dtype=torch.float64)
            model = model.double()
            model(x).sum().backward()
            problems = []
            s, c = post(url + "/v1/complexity", {"model": onnx_model, "verify": True})
            rows = [r for r in c.get("rows", []) if r.get("type") == "prelu"] if s == 200 else []
            if not rows or rows[0]["params"] != n or c["totals"]["params"] != sum(p.numel() for p in model.parameters()):
                problems.append(f"complexity {s}: {str(c)[:300]}")
            s, g = post(url + "/v1/gradient-diagnostics", {"model": onnx_model, "inputs": {"values": x.flatten().tolist()}, "dtype": "float64"})
            slopes = [o for o in g.get("other_parameters", []) if o["path"].endswith(".weight")] if s == 200 else []
            want = model[1].weight.grad.norm().item()
            if not slopes or abs(slopes[0]["grad"]["frobenius"] - want) > 1e-9 * max(1.0, want):
                problems.append(f"slopes' gradient {slopes} != autograd {want} ({str(g)[:200]})")
            sup = max(1.0, model[1].weight.abs().max().item())
            if s == 200 and abs(g["activations"][0]["max_derivative"] - sup) > 1e-12 * sup:
                problems.append(f"sup g' {g['activations'][0]['max_derivative']} != {sup}")
            label = f"onnx nn.PReLU({n}) on {shape} by the {'dynamo' if dynamo else 'TorchScript'} exporter"
            print(f"{label}: " + ("ok" if not problems else "; ".join(problems)))
            failures += bool(problems)
    return failures


def check_padding_idx(url):
    """nn.Embedding(padding_idx=p) then a linear layer, p at the table's start, middle and end,
    the padding token in both samples: the dynamo exporter's file keeps p in its Gather's
    metadata and the importer reads it back (the padding row's gradient zero, as in PyTorch);
    the TorchScript exporter's file has no record of p (the row's gradient as without one).
    Float64 gradients per named parameter against autograd on the module (with p, or a copy
    without it)."""
    failures = 0
    torch.manual_seed(6)
    for dynamo in (True, False):
        for pad in (0, 4, 9):
            model = torch.nn.Sequential(torch.nn.Embedding(10, 5, padding_idx=pad), torch.nn.Linear(5, 3)).eval()
            ids = torch.randint(0, 10, (2, 6))
            ids[0, 0], ids[1, 3] = pad, pad
            onnx_model = {"onnx": base64.b64encode(export(model, [6], dynamo=dynamo, example=ids[:1])).decode()}
            want = model.double()
            if not dynamo:
                want = copy.deepcopy(want)
                want[0].padding_idx = None
            s, g = post(url + "/v1/gradient-diagnostics", {"model": onnx_model, "inputs": {"values": ids.flatten().tolist()}, "dtype": "float64"})
            problems = [f"diagnostics status {s}: {str(g)[:300]}"] if s != 200 else gradient_problems(want, ids, g, tol=1e-12)[0]
            label = f"onnx nn.Embedding(10, 5, padding_idx={pad}) by the {'dynamo' if dynamo else 'TorchScript'} exporter"
            print(f"{label}: " + ("ok" if not problems else "; ".join(problems)))
            failures += bool(problems)
    return failures


def check_folded_norms(url):
    """The dynamo exporter's optimizer folds a BatchNorm into the Conv, ConvTranspose or Gemm
    before it (its weights scaled, its shift in a bias); the importer puts the norm back in its
    place, from the node's metadata. Five networks, the norms' statistics and affine numbers
    drawn (a conv without a bias, one with, a transposed conv before an affine=False norm, a
    linear layer, a conv1d), each exported by both exporters: the dynamo file's rows equal the
    TorchScript file's (which keeps the norm) row for row, its parameters equal the module's
    sum(numel), the norm row carries the module's name and eps; float64 gradients of the first
    and last layers' weights with the file's weights equal autograd on the folded network (the
    file's weights, the norm an identity)."""
    import onnx
    from onnx import numpy_helper
    nn = torch.nn
    failures = 0
    torch.manual_seed(8)
    cases = [
        ("conv2d without a bias", nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.BatchNorm2d(4), nn.Sigmoid(), nn.Flatten(), nn.Linear(144, 2)), [3, 8, 8]),
        ("conv2d with a bias, eps 1e-3", nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4, eps=1e-3), nn.Sigmoid(), nn.Flatten(), nn.Linear(144, 2)), [3, 8, 8]),
        ("conv_transpose2d, affine=False", nn.Sequential(nn.ConvTranspose2d(3, 4, 2, stride=2), nn.BatchNorm2d(4, affine=False), nn.Sigmoid(), nn.Flatten(), nn.Linear(256, 2)), [3, 4, 4]),
        ("linear", nn.Sequential(nn.Linear(5, 4), nn.BatchNorm1d(4), nn.Sigmoid(), nn.Linear(4, 2)), [5]),
        ("conv1d without a bias", nn.Sequential(nn.Conv1d(3, 4, 3, bias=False), nn.BatchNorm1d(4, eps=1e-4), nn.Sigmoid(), nn.Flatten(), nn.Linear(24, 2)), [3, 8]),
    ]
    for label, model, shape in cases:
        with torch.no_grad():
            norm = model[1]
            norm.running_mean.normal_()
            norm.running_var.uniform_(0.5, 2.0)
            if norm.affine:
                norm.weight.normal_()
                norm.bias.normal_()
        model.eval()
        problems = []
        data = export(model, shape, dynamo=True)
        legacy = export(model, shape)
        s, got = post_raw(url + "/v1/complexity", data, {"verify": True, "profile": "fvcore"})
        s2, want = post_raw(url + "/v1/complexity", legacy, {"verify": True, "profile": "fvcore"})
        if s != 200 or s2 != 200:
            problems.append(f"status {s}/{s2}: {str(got)[:300]} {str(want)[:300]}")
        else:
            if not same_rows(got["rows"], want["rows"]):
                problems.append(f"rows {[row_key(r) for r in got['rows']]} != {[row_key(r) for r in want['rows']]}")
            params = sum(p.numel() for p in model.parameters())
            if got["totals"]["params"] != params:
                problems.append(f"params {got['totals']['params']} != sum(numel) {params}")
            if not got["verification"]["agrees"]:
                problems.append("the libtorch check disagrees")
            if not any(r["path"] == "1" and r["type"].startswith("batchnorm") for r in got["rows"]):
                problems.append(f"no norm row named 1: {[(r['path'], r['type']) for r in got['rows']]}")
        # the folded network: the file's weights, the norm an identity
        inits = {t.name: torch.from_numpy(numpy_helper.to_array(t).copy()).double() for t in onnx.load_from_string(data).graph.initializer}
        ref = copy.deepcopy(model).double()
        ref[1] = nn.Identity()
        ref[0].weight = nn.Parameter(inits["0.weight"])
        bias = inits.get("0.bias", inits.get("0.weight_bias"))
        ref[0].bias = None if bias is None else nn.Parameter(bias)
        last = str(len(ref) - 1)
        ref[-1].weight = nn.Parameter(inits[f"{last}.weight"])
        ref[-1].bias = nn.Parameter(inits[f"{last}.bias"])
        x = torch.randn(2, *shape, dtype=torch.float64)
        ref(x).sum().backward()
        s, g = post(url + "/v1/gradient-diagnostics", {"model": {"onnx": base64.b64encode(data).decode()}, "inputs": {"values": x.flatten().tolist()}, "dtype": "float64"})
        if s != 200:
            problems.append(f"diagnostics status {s}: {str(g)[:300]}")
        else:
            rows = {r["path"]: r["weight_grad"]["frobenius"] for r in g["layers"]}
            for path, p in (("0", ref[0].weight), (last, ref[-1].weight)):
                w = p.grad.norm().item()
                if path not in rows or abs(rows[path] - w) > 1e-9 * max(1.0, w):
                    problems.append(f"gradient of {path}.weight {rows.get(path)} != autograd on the folded network {w}")
        print(f"onnx BatchNorm folded into a {label} (dynamo export): " + ("ok" if not problems else "; ".join(problems)))
        failures += bool(problems)
    return failures


def sequence_file_problems(url, data, model, x, token, feature, autograd=True):
    """A sequence model's ONNX file against the module: FlopCounterMode's total and sum(numel)
    (count_problems), float64 gradients per named parameter with the file's weights, and the
    tokens and features unit (token, feature) of the last row reads, by autograd on the module
    (`autograd` false: the probe's agreement only). The complexity answer (None on a refusal),
    the unit's receptive-field position (None on a refusal) and the problems."""
    onnx_model = {"onnx": base64.b64encode(data).decode()}
    s, resp = post(url + "/v1/complexity", {"model": onnx_model, "profile": "torch_flop_counter", "verify": True})
    if s != 200:
        return None, None, [f"status {s}: {str(resp)[:600]}"]
    problems = count_problems(resp, model, x)
    xs = torch.randn(2, *x.shape[1:], dtype=torch.float64)
    s, g = post(url + "/v1/gradient-diagnostics", {"model": onnx_model, "inputs": {"values": xs.flatten().tolist()}, "dtype": "float64"})
    problems += [f"diagnostics status {s}: {str(g)[:300]}"] if s != 200 else gradient_problems(model.double(), xs, g)[0]
    out = [r for r in resp["rows"] if not r["subtotal"]][-1]
    s, rf = post(url + "/v1/receptive-field", {"model": onnx_model, "position": {"layer": out["path"], "index": [token], "channel": feature}})
    if s != 200:
        return resp, None, problems + [f"receptive field status {s}: {str(rf)[:300]}"]
    if autograd:
        xg = torch.randn(1, *x.shape[1:], dtype=torch.float64, requires_grad=True)
        (grad,) = torch.autograd.grad(model(xg)[0, token, feature], xg)
        nz = grad[0] != 0
        runs = lambda m: [[i, j] for i, j in _runs([k for k, v in enumerate(m) if v])]  # noqa: E731
        for key, w in {"input_tokens": runs(nz.any(1).tolist()), "input_features": runs(nz.any(0).tolist())}.items():
            if rf["position"].get(key) != w:
                problems.append(f"{out['path']} token {token} feature {feature}: {key} {rf['position'].get(key)} != autograd {w}")
    if not rf["verification"].get("agrees"):
        problems.append("the probe disagrees")
    return resp, rf["position"], problems


def check_sequence_splits(url):
    """x.chunk(2, -1) of a sequence's features, as both exporters write it (Split, or Slice after
    the TorchScript exporter's shape arithmetic), read as narrows: a SwiGLU feed-forward block
    (a, b = linear(x).chunk(2, -1); linear(a * silu(b))) and nn.GLU(-1) between two linear
    layers (exported as Split, Sigmoid, Mul). Against the
    module: FlopCounterMode, sum(numel), float64 gradients per named parameter with the file's
    weights, and the tokens and features one unit reads by autograd. And single-head attention
    written by hand from one fused projection (q, k, v = qkv(x).chunk(3, -1);
    softmax(q @ k^T / sqrt(d)) @ v): MatMul of two computed tensors as `matmul`, the Div by a
    constant as `scale`."""
    nn = torch.nn

    class SwiGLU(nn.Module):
        def __init__(self):
            super().__init__()
            self.up, self.down = nn.Linear(8, 24), nn.Linear(12, 8)

        def forward(self, x):
            a, b = self.up(x).chunk(2, -1)
            return self.down(a * torch.nn.functional.silu(b))

    class GLU(nn.Module):
        def __init__(self):
            super().__init__()
            self.up, self.glu, self.down = nn.Linear(8, 16), nn.GLU(-1), nn.Linear(8, 8)

        def forward(self, x):
            return self.down(self.glu(self.up(x)))

    class FusedAttention(nn.Module):
        def __init__(self):
            super().__init__()
            self.qkv, self.out = nn.Linear(8, 24), nn.Linear(8, 8)

        def forward(self, x):
            q, k, v = self.qkv(x).chunk(3, -1)
            return self.out(torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(8), -1) @ v)

    failures = 0
    torch.manual_seed(9)
    for cls in (SwiGLU, GLU, FusedAttention):
        for dynamo in (False, True):
            model = cls().eval()
            x = torch.randn(1, 6, 8)
            data = export(model, [6, 8], dynamo=dynamo, example=x)
            resp, _, problems = sequence_file_problems(url, data, model, x, 2, 1)
            if resp is not None and sum(r["type"] == "narrow" for r in resp["rows"]) != (3 if cls is FusedAttention else 2):
                problems.append(f"rows {[r['type'] for r in resp['rows']]}")
            label = f"onnx {cls.__name__} (x.chunk on the features, {'dynamo' if dynamo else 'TorchScript'} export)"
            print(f"{label}: " + ("ok" if not problems else "; ".join(problems)))
            failures += bool(problems)
    return failures


class GPTBlock(torch.nn.Module):
    """A transformer block as nanoGPT and course notebooks write it, multi-head attention by
    hand: x + attn(ln_1(x)), then (now and then) x + mlp(ln_2(x)). Attention: one fused qkv
    projection split by x.split(c, 2) (or three), each viewed as [B, L, H, d] and transposed to
    [B, H, L, d] (k straight to [B, H, d, L] by one permute, or by a second transpose), the
    scores scaled by a Mul or a Div, a causal mask in one of four forms (nanoGPT's masked_fill
    of a tril buffer, masked_fill of a triu mask by -inf or by finfo.min, or an additive -inf mask), softmax, @ v, the
    heads moved back and merged by a view, an output projection. Or (`flash`, nanoGPT's path
    where PyTorch has it) F.scaled_dot_product_attention(q, k, v, is_causal) on the heads."""

    def __init__(self, length, c, heads, fused, causal, mask_form, k_steps, divide, ln, mlp, flash=False):
        super().__init__()
        nn = torch.nn
        self.flash = flash
        self.c, self.heads, self.fused, self.causal, self.mask_form = c, heads, fused, causal, mask_form
        self.k_steps, self.divide, self.mlp_on = k_steps, divide, mlp
        self.ln_1 = nn.LayerNorm(c) if ln else nn.Identity()
        if fused:
            self.c_attn = nn.Linear(c, 3 * c)
        else:
            self.q, self.k, self.v = nn.Linear(c, c), nn.Linear(c, c), nn.Linear(c, c)
        self.c_proj = nn.Linear(c, c)
        self.register_buffer("bias", torch.tril(torch.ones(length, length)).view(1, 1, length, length))
        if mlp:
            self.ln_2 = nn.LayerNorm(c) if ln else nn.Identity()
            self.mlp = nn.Sequential(nn.Linear(c, 2 * c), nn.GELU(), nn.Linear(2 * c, c))

    def attn(self, x):
        b, t, c = x.shape
        h, d = self.heads, c // self.heads
        if self.fused:
            q, k, v = self.c_attn(x).split(c, dim=2)
        else:
            q, k, v = self.q(x), self.k(x), self.v(x)
        q = q.view(b, t, h, d).transpose(1, 2)
        v = v.view(b, t, h, d).transpose(1, 2)
        if self.flash:
            y = torch.nn.functional.scaled_dot_product_attention(q, k.view(b, t, h, d).transpose(1, 2), v, is_causal=self.causal)
            return self.c_proj(y.transpose(1, 2).contiguous().view(b, t, c))
        kt = k.view(b, t, h, d).permute(0, 2, 3, 1) if self.k_steps == 1 else k.view(b, t, h, d).transpose(1, 2).transpose(-2, -1)
        att = (q @ kt) / math.sqrt(d) if self.divide else (q @ kt) * (1.0 / math.sqrt(d))
        if self.causal:
            if self.mask_form == "tril":
                att = att.masked_fill(self.bias[:, :, :t, :t] == 0, float("-inf"))
            elif self.mask_form == "triu":
                att = att.masked_fill(torch.ones(t, t, dtype=torch.bool).triu(1), float("-inf"))
            elif self.mask_form == "min":
                # Hugging Face's way: the most negative float, not -inf
                att = att.masked_fill(torch.ones(t, t, dtype=torch.bool).triu(1), torch.finfo(att.dtype).min)
            else:
                att = att + torch.full((t, t), float("-inf")).triu(1)
        y = torch.softmax(att, dim=-1) @ v
        return self.c_proj(y.transpose(1, 2).contiguous().view(b, t, c))

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x)) if self.mlp_on else x


def run_heads(url, n, seed):
    """Random GPTBlocks from both exporters: the file reads (Reshape to heads, Transpose with
    the batch axis first, MatMul of computed 4-D tensors, the causal mask's Where or Add; or
    F.scaled_dot_product_attention's decomposition read back as the one call) and
    equals the module: FlopCounterMode's total, sum(numel), float64 gradients per named parameter
    with the file's weights, the tokens and features one output unit reads by autograd (a causal
    block's token i reads tokens 0..i only), and the service's probe."""
    rng = random.Random(seed)
    failures = 0
    for case in range(n):
        length, heads, d = rng.randint(1, 7), rng.randint(1, 3), rng.randint(1, 4)
        c = heads * d
        args = dict(length=length, c=c, heads=heads, fused=rng.random() < 0.6, causal=rng.random() < 0.7,
                    mask_form=rng.choice(["tril", "triu", "add", "min"]), k_steps=rng.choice([1, 2]), divide=rng.random() < 0.5,
                    ln=rng.random() < 0.6, mlp=rng.random() < 0.4, flash=rng.random() < 0.4)
        dynamo = case % 2 == 1
        torch.manual_seed(seed * 1000 + case)
        model = GPTBlock(**args).eval()
        x = torch.randn(1, length, c)
        label = f"onnx GPTBlock case {case} {args} ({'dynamo' if dynamo else 'TorchScript'})"
        try:
            data = export(model, [length, c], dynamo=dynamo, example=x)
        except Exception as e:  # an exporter's own failure is not the service's
            print(f"{label}: export failed, skipped ({type(e).__name__})")
            continue
        # (a layernorm over one feature outputs its bias whatever its input: autograd sees less
        # than the structure, which the probe still checks)
        token, feature = rng.randrange(length), rng.randrange(c)
        resp, position, problems = sequence_file_problems(url, data, model, x, token, feature, autograd=not (args["ln"] and c == 1))
        if resp is not None:
            types = [r["type"] for r in resp["rows"]]
            if args["causal"] and not args["flash"] and "causal_mask" not in types:
                problems.append(f"no causal_mask row: {types}")
            if args["flash"] and types.count("scaled_dot_product_attention") != 1:
                problems.append(f"not one scaled_dot_product_attention row: {types}")
        if position is not None and args["causal"] and position.get("input_tokens") != [[0, token]]:
            problems.append(f"causal: token {token} reads {position.get('input_tokens')}, not 0..{token}")
        if problems:
            print(f"{label}: " + "; ".join(problems))
        failures += bool(problems)
    print(f"onnx multi-head attention by hand: {n - failures} of {n} files agree")
    return failures


class NanoGPT(torch.nn.Module):
    """A whole nanoGPT as its model.py writes it: token and position embeddings
    (`wpe(torch.arange(t))`, the table `block` >= t rows), GPTBlocks, ln_f, and an lm_head
    whose weight is the token embedding's (`transformer.wte.weight = lm_head.weight`: one
    tensor, named wte.weight by named_parameters()) or its own."""

    def __init__(self, vocab, block, length, c, heads, layers, tie, flash, rng, module_dict=False):
        super().__init__()
        nn = torch.nn
        blocks = [GPTBlock(block, c, heads, fused=True, causal=True, mask_form=rng.choice(["tril", "triu", "add", "min"]),
                           k_steps=rng.choice([1, 2]), divide=rng.random() < 0.5, ln=True, mlp=True, flash=flash) for _ in range(layers)]
        # (`module_dict`: in a ModuleDict `transformer`, as nanoGPT keeps them, whose name the
        # TorchScript exporter leaves out of its scopes)
        parts = dict(wte=nn.Embedding(vocab, c), wpe=nn.Embedding(block, c), h=nn.ModuleList(blocks), ln_f=nn.LayerNorm(c))
        self.transformer = nn.ModuleDict(parts) if module_dict else None
        if not module_dict:
            self.wte, self.wpe, self.h, self.ln_f = parts["wte"], parts["wpe"], parts["h"], parts["ln_f"]
        self.lm_head = nn.Linear(c, vocab, bias=False)
        if tie:
            parts["wte"].weight = self.lm_head.weight

    def part(self, name):
        return self.transformer[name] if self.transformer is not None else getattr(self, name)

    def forward(self, idx):
        pos = torch.arange(0, idx.size(1), dtype=torch.long, device=idx.device)
        x = self.part("wte")(idx) + self.part("wpe")(pos)
        for block in self.part("h"):
            x = block(x)
        return self.lm_head(self.part("ln_f")(x))


def run_gpt(url, n, seed):
    """Random whole nanoGPTs from both exporters (1 or 2 blocks, tied or untied head, the block
    size the sequence's length or longer, attention by hand or the flash path). The file equals
    the module: FlopCounterMode's total; sum(numel), the tied weight once (the head's row 0, its
    note naming the embedding) but for the position table's rows past the sequence, which the
    exporters fold away (the file holds rows 0..L only: exactly (block - L) * C fewer, the one
    documented difference); float64 gradients per named parameter with the file's weights (the
    embedding's holds both uses; the folded position rows' gradient is wpe.weight's, whose
    other rows are zero); a unit's tokens (0..i) by autograd; the probe."""
    rng = random.Random(seed)
    failures = 0
    for case in range(n):
        length, heads, d = rng.randint(1, 6), rng.randint(1, 3), rng.randint(1, 4)
        c = heads * d
        block, vocab = length + rng.choice([0, 0, rng.randint(1, 4)]), rng.randint(2, 40)
        tie, layers, flash = rng.random() < 0.75, rng.choice([1, 1, 2]), rng.random() < 0.3
        dynamo = case % 2 == 1
        torch.manual_seed(seed * 1000 + case)
        module_dict = rng.random() < 0.5
        model = NanoGPT(vocab, block, length, c, heads, layers, tie, flash, rng, module_dict=module_dict).eval()
        ids = torch.randint(0, vocab, (2, length))
        label = f"onnx nanoGPT case {case} (vocab {vocab}, block {block}, L {length}, C {c}, heads {heads}, {layers} blocks, tie {tie}, flash {flash}, ModuleDict {module_dict}, {'dynamo' if dynamo else 'TorchScript'})"
        try:
            data = export(model, [length], dynamo=dynamo, example=ids[:1])
        except Exception as e:  # an exporter's own failure is not the service's
            print(f"{label}: export failed, skipped ({type(e).__name__})")
            continue
        onnx_model = {"onnx": base64.b64encode(data).decode()}
        problems = []
        s, resp = post(url + "/v1/complexity", {"model": onnx_model, "profile": "torch_flop_counter", "verify": True})
        if s != 200:
            print(f"{label}: status {s}: {str(resp)[:400]}")
            failures += 1
            continue
        counter = FlopCounterMode(display=False)
        with counter:
            model(ids[:1])
        if resp["totals"]["flops"] != counter.get_total_flops():
            problems.append(f"torch_flop_counter {resp['totals']['flops']} != FlopCounterMode {counter.get_total_flops()}")
        want = sum(p.numel() for p in model.parameters()) - (block - length) * c
        if resp["totals"]["params"] != want:
            problems.append(f"params {resp['totals']['params']} != sum(numel) less the folded position rows {want}")
        if not resp.get("verification", {}).get("agrees"):
            problems.append("the libtorch check disagrees")
        rows = [r for r in resp["rows"] if not r["subtotal"]]
        head, emb = rows[-1], [r for r in rows if r["type"] == "embedding"]
        if len(emb) != 1 or emb[0]["params"] != vocab * c:
            problems.append(f"embedding rows {[(r['path'], r['params']) for r in emb]}, not one of {vocab * c}")
        if head["params"] != (0 if tie else vocab * c) or tie != ("weight_of" in (head.get("note") or "")):
            problems.append(f"head row {head['path']}: params {head['params']}, note {head.get('note')}")
        # float64 gradients with the file's weights; the folded position rows under the
        # exporter's name, compared with wpe.weight's gradient (zero past row L)
        s, g = post(url + "/v1/gradient-diagnostics", {"model": onnx_model, "inputs": {"values": ids.flatten().tolist()}, "dtype": "float64"})
        if s != 200:
            problems.append(f"diagnostics status {s}: {str(g)[:300]}")
        else:
            position = [r for r in g["layers"] if r["path"] not in dict(model.named_parameters()) and r["path"] + ".weight" not in dict(model.named_parameters())]
            found, _, _ = gradient_problems(model.double(), ids, g, renamed=[r["path"] for r in position])
            problems += found
            wpe = model.part("wpe").weight.grad.norm().item()
            if len(position) != 1 or abs(position[0]["weight_grad"]["frobenius"] - wpe) > 1e-7 * wpe:
                problems.append(f"position rows {[(r['path'], r['weight_grad']['frobenius']) for r in position]} != wpe.weight's gradient {wpe}")
        token = rng.randrange(length)
        s, rf = post(url + "/v1/receptive-field", {"model": onnx_model, "position": {"layer": head["path"], "index": [token], "channel": rng.randrange(vocab)}})
        if s != 200:
            problems.append(f"receptive field status {s}: {str(rf)[:300]}")
        else:
            if rf["position"].get("input_tokens") != [[0, token]]:
                problems.append(f"token {token} reads {rf['position'].get('input_tokens')}, not 0..{token}")
            if not rf["verification"].get("agrees"):
                problems.append("the probe disagrees")
        model.float()
        print(f"{label}: " + ("ok" if not problems else "; ".join(problems)))
        failures += bool(problems)
    print(f"onnx whole nanoGPT: {n - failures} of {n} files agree")
    return failures


def _runs(indices):
    """Consecutive runs of sorted indices as (first, last) pairs."""
    out = []
    for i in indices:
        if out and out[-1][1] == i - 1:
            out[-1] = (out[-1][0], i)
        else:
            out.append((i, i))
    return out


def check_shufflenet(url):
    """torchvision's shufflenet_v2_x0_5 (weights=None, seed 3): its channel split (the
    TorchScript exporter's Shape arithmetic and Slice, the dynamo exporter's Split) read as
    narrows, its channel shuffle (Reshape, Transpose, Reshape) as channel_shuffle. The
    TorchScript file (BatchNorm kept): FlopCounterMode's total, sum(numel) and float64 gradients
    per named parameter with the file's weights; both files: the probe agrees with the exact set
    of the default unit and of one channel of the first unit's shuffle."""
    import torchvision
    failures = 0
    torch.manual_seed(3)
    model = torchvision.models.shufflenet_v2_x0_5().eval()
    x = torch.zeros(1, 3, 64, 64)
    for dynamo in (False, True):
        how = "dynamo" if dynamo else "TorchScript"
        data = export(model, [3, 64, 64], dynamo=dynamo)
        # (uploaded raw: 5.5 MB of weights pass the JSON body limit as base64)
        problems = []
        status, resp = post_raw(url + "/v1/complexity", data, {"profile": "torch_flop_counter", "verify": True})
        if status != 200:
            print(f"onnx shufflenet_v2_x0_5 ({how}): status {status}: {str(resp)[:400]}")
            failures += 1
            continue
        types = [r["type"] for r in resp["rows"]]
        if types.count("channel_shuffle") != 16 or types.count("narrow") != 26:
            problems.append(f"{types.count('channel_shuffle')} shuffles and {types.count('narrow')} narrows, not 16 and 26")
        found = count_problems(resp, model, x)
        # the dynamo exporter folds BatchNorm into the convs: its parameters are the file's
        problems += [p for p in found if not (dynamo and p.startswith("params"))]
        shuffle = next(r["path"] for r in resp["rows"] if r["type"] == "channel_shuffle")
        for position in ({}, {"layer": shuffle, "index": [3, 5], "channel": 7}):
            s, rf = post_raw(url + "/v1/receptive-field", data, {"position": position, "verify": True})
            if s != 200 or not rf["verification"].get("agrees"):
                problems.append(f"receptive field at {position}: status {s}: {str(rf.get('verification', rf))[:300]}")
        if not dynamo:
            xs = drawn_inputs(3 * 64 * 64 * 2, seed=3).double().reshape(2, 3, 64, 64)
            s, g = post_raw(url + "/v1/gradient-diagnostics", data, {"inputs": {"batch_size": 2, "seed": 3}, "dtype": "float64"})
            if s != 200:
                problems.append(f"diagnostics status {s}: {str(g)[:300]}")
            else:
                found, checked, _ = gradient_problems(model.double(), xs, g)
                model.float()
                problems += found
                if checked < 40:
                    problems.append(f"only {checked} parameters compared")
        print(f"onnx shufflenet_v2_x0_5 ({how}): " + ("ok" if not problems else "; ".join(problems)))
        failures += bool(problems)
    return failures


class CroppedSkip(torch.nn.Module):
    """The original U-Net's level: valid convs, a 2x transposed conv, the skip cropped to its
    centre (x[:, :, 2:8, 2:8]) and concatenated; then a crop of one axis alone."""

    def __init__(self):
        super().__init__()
        self.enc = torch.nn.Conv2d(2, 3, 3)
        self.deep = torch.nn.Conv2d(3, 3, 3)
        self.up = torch.nn.ConvTranspose2d(3, 2, 2, stride=2)
        self.head = torch.nn.Conv2d(5, 2, 1)

    def forward(self, x):
        e = self.enc(x)
        u = self.up(self.deep(torch.nn.functional.max_pool2d(e, 2)))
        y = self.head(torch.cat([e[:, :, 2:8, 2:8], u], 1))
        return y[:, :, 1:]


def check_crop(url):
    """Crops (Slice of rows and columns, one axis or two) as narrows, from both exporters:
    FlopCounterMode, sum(numel), float64 gradients per named parameter with the file's weights,
    and the probe agreeing on a unit of the output."""
    failures = 0
    torch.manual_seed(7)
    model = CroppedSkip().eval()
    for dynamo in (False, True):
        data = export(model, [2, 12, 12], dynamo=dynamo)
        onnx_model = {"onnx": base64.b64encode(data).decode()}
        problems = []
        s, c = post(url + "/v1/complexity", {"model": onnx_model, "profile": "torch_flop_counter", "verify": True})
        if s != 200:
            problems.append(f"complexity {s}: {str(c)[:300]}")
        else:
            problems += count_problems(c, model, torch.zeros(1, 2, 12, 12))
            if sum(r["type"] == "narrow" for r in c["rows"]) != 3:
                problems.append(f"narrows: {[r['type'] for r in c['rows']]}")
        s, rf = post(url + "/v1/receptive-field", {"model": onnx_model, "position": {"index": [2, 3], "channel": 1}, "verify": True})
        if s != 200 or not rf["verification"].get("agrees"):
            problems.append(f"receptive field: status {s}: {str(rf.get('verification', rf))[:300]}")
        x = torch.randn(2, 2, 12, 12, dtype=torch.float64)
        s, g = post(url + "/v1/gradient-diagnostics", {"model": onnx_model, "inputs": {"values": x.flatten().tolist()}, "dtype": "float64"})
        if s != 200:
            problems.append(f"diagnostics {s}: {str(g)[:300]}")
        else:
            found, checked, _ = gradient_problems(model.double(), x, g)
            model.float()
            problems += found + ([f"only {checked} parameters compared"] if checked < 4 else [])
        print(f"onnx cropped skip ({'dynamo' if dynamo else 'TorchScript'}): " + ("ok" if not problems else "; ".join(problems)))
        failures += bool(problems)
    return failures


def count_problems(resp, model, x):
    """A torch_flop_counter complexity answer against the module itself: FlopCounterMode's total
    on `x`, sum(numel) of its parameters, and the service's libtorch check."""
    counter = FlopCounterMode(display=False)
    with counter:
        model(x)
    problems = []
    if resp["totals"]["flops"] != counter.get_total_flops():
        problems.append(f"torch_flop_counter {resp['totals']['flops']} != FlopCounterMode {counter.get_total_flops()}")
    if resp["totals"]["params"] != sum(p.numel() for p in model.parameters()):
        problems.append(f"params {resp['totals']['params']} != {sum(p.numel() for p in model.parameters())}")
    if not resp.get("verification", {}).get("agrees", True):
        problems.append("the libtorch check disagrees")
    return problems


def run_sequences(url, n, seed):
    import seq_check
    failures = refused = dynamos = attentions = 0
    rng = random.Random(seed)
    torch.manual_seed(seed)
    done = 0
    while done < n:
        spec = seq_check.random_spec(rng)
        # (a network of dropouts alone exports as its input)
        if all(layer["type"] == "dropout" for layer in spec["layers"]):
            continue
        # every fourth file by the dynamo exporter (torch.onnx.export's default), the rest by the
        # TorchScript one: both write LSTM/GRU ops, in their own layouts; torch 2.11's dynamo
        # exporter unrolls nn.RNN into per-step ops, read back as the layer (the TorchScript one
        # writes an RNN op); attention is read from both (grouped by the
        # dynamo exporter's module metadata, or by the TorchScript exporter's scopes)
        dynamo = (done + 1) % 4 == 0
        # torch 2.11's dynamo exporter unrolls nn.RNN over a single token (a crop of the tokens
        # to one) into Squeeze/Slice ops the importer does not read as the layer: a 422 listing
        # them, drawn again
        layers = spec["layers"]
        one_token = next((i for i, layer in enumerate(layers) if layer["type"] == "narrow" and layer["dim"] in (1, -2) and layer["length"] == 1), None)
        if dynamo and one_token is not None and any(layer["type"] == "rnn" for layer in layers[one_token:]):
            continue
        # ONNX's Gather records no padding_idx (the zero gradient of that row); the dynamo
        # exporter's node metadata keeps it (read back), the TorchScript exporter's file does not:
        # drawn without for those
        for layer in spec["layers"]:
            if not dynamo:
                layer.pop("padding_idx", None)
        done += 1
        dynamos += dynamo
        attentions += "multihead_attention" in json.dumps(spec)
        label = f"onnx sequence case {done} (seed {seed}, {'dynamo' if dynamo else 'torchscript'} exporter)"
        model, _ = seq_check.build(spec["layers"], list(spec["input_shape"]))
        model = model.float().eval()
        ids = spec.get("input_dtype") == "int64"
        gen = torch.Generator().manual_seed(done)
        x = seq_check.token_ids(spec, 1, gen) if ids else torch.randn(1, *spec["input_shape"], generator=gen)
        try:
            data = export(model, spec["input_shape"], dynamo=dynamo, example=x)
        except Exception:  # noqa: BLE001 - the exporter's own refusals
            refused += 1
            if os.environ.get("ONNX_CHECK_REFUSALS"):
                print(f"{label}: the exporter refuses: {str(e).splitlines()[0][:200]}\n  {json.dumps(spec)[:600]}")
            continue
        onnx_model = {"onnx": base64.b64encode(data).decode()}
        problems = []
        status, resp = post(url + "/v1/complexity", {"model": onnx_model, "profile": "torch_flop_counter", "verify": True})
        if status != 200:
            failures += 1
            print(f"{label}: status {status}: {str(resp)[:600]}\n  spec {json.dumps(spec)[:400]}")
            continue
        problems += count_problems(resp, model, x)
        # float64 gradients with the file's weights, per named parameter
        model = model.double()
        xs = seq_check.token_ids(spec, 2, gen) if ids else torch.randn(2, *spec["input_shape"], dtype=torch.float64, generator=gen)
        s, g = post(url + "/v1/gradient-diagnostics", {"model": onnx_model, "inputs": {"values": xs.flatten().tolist()}, "dtype": "float64"})
        if s == 422 and "no parameter gradient to diagnose" in g.get("detail", ""):
            pass  # no weighted layer (a layernorm alone): nothing to diagnose, as the service says
        elif s != 200:
            problems.append(f"diagnostics status {s}: {str(g)[:300]}")
        else:
            problems += gradient_problems(model, xs, g)[0]
        # the tokens one output unit reads, against autograd on the module
        out = [r for r in resp["rows"] if not r["subtotal"]][-1]
        # (a ReLU RNN's dead units, a norm over one cropped feature: autograd proves less there)
        if len(out["output_shape"]) == 2 and not ids and not seq_check.autograd_sees_less(spec):
            # one feature: a normalization's or softmax's features sum to a constant
            index, channel = [rng.randrange(out["output_shape"][0])], rng.randrange(out["output_shape"][1])
            s, rf = post(url + "/v1/receptive-field",
                         {"model": onnx_model, "position": {"layer": out["path"], "index": index, "channel": channel}})
            if s != 200:
                problems.append(f"receptive field status {s}: {str(rf)[:300]}")
            else:
                xr = torch.randn(1, *spec["input_shape"], dtype=torch.float64, requires_grad=True)
                (gr,) = torch.autograd.grad(model(xr)[0, index[0], channel], xr)
                toks = [i for i in range(gr.shape[1]) if bool((gr[0, i] != 0).any())]
                got = [t for a, b in rf["position"]["input_tokens"] for t in range(a, b + 1)]
                if toks != got:
                    problems.append(f"receptive field of token {index}: {got} != autograd {toks}")
        if problems:
            failures += 1
            print(f"{label}: " + "; ".join(problems[:6]) + "\n  spec " + json.dumps(spec)[:500])
    print(f"onnx sequence oracle: {n - failures - refused} passed, {failures} failed, {refused} that torch.onnx.export itself refuses "
          f"({dynamos} files by the dynamo exporter, {attentions} of them with attention)")
    return failures


def run_cross(url, n, seed):
    """seq_check's random cross-attention networks (latent queries over the projected input,
    input queries over a learned memory, separate q, k and v projections; bias and
    need_weights drawn) from the TorchScript exporter, every fourth also from the dynamo one:
    params and FlopCounterMode's total equal the module's, the libtorch check agrees, and float64
    gradients with the file's weights equal autograd per named parameter (the dynamo exporter
    folds the expanded latent queries or memory into an initializer it names `transpose`)."""

    import seq_check
    rng = random.Random(seed)
    torch.manual_seed(seed)
    failures = dynamos = 0
    for case in range(n):
        spec, model = seq_check.random_cross_graph(rng)
        model = model.float().eval()
        x = torch.randn(1, *spec["input_shape"])
        xs = torch.randn(2, *spec["input_shape"], dtype=torch.float64)
        for dynamo in (False, True) if case % 4 == 3 else (False,):
            data = export(model.float(), spec["input_shape"], dynamo=dynamo, example=x)
            onnx_model = {"onnx": base64.b64encode(data).decode()}
            status, resp = post(url + "/v1/complexity", {"model": onnx_model, "profile": "torch_flop_counter", "verify": True})
            dynamos += dynamo
            problems = []
            if status != 200:
                problems.append(f"status {status}: {str(resp)[:400]}")
            else:
                problems += count_problems(resp, model.float(), x)
                s, g = post(url + "/v1/gradient-diagnostics", {"model": onnx_model, "inputs": {"values": xs.flatten().tolist()}, "dtype": "float64"})
                if s != 200:
                    problems.append(f"diagnostics status {s}: {str(g)[:300]}")
                else:
                    renamed = tuple(r["path"] for r in g["layers"] if dynamo and r["path"].startswith("transpose"))
                    problems += gradient_problems(model.double(), xs, g, renamed=renamed)[0]
            if problems:
                failures += 1
                how = "dynamo" if dynamo else "TorchScript"
                print(f"onnx cross-attention case {case} (seed {seed}, {how} exporter): " + "; ".join(problems[:5]) + "\n  spec " + json.dumps(spec)[:500])
    print(f"onnx cross-attention oracle: {n + dynamos - failures} files passed, {failures} failed "
          f"({n} from the TorchScript exporter, {dynamos} from the dynamo one)")
    return failures


def gradient_problems(model, xs, answer, renamed=(), tol=1e-7, floor=1e-12):
    """The service's gradient norms (a diagnostics `answer`: the weight table `layers`, with
    biases beside their weights, and `other_parameters`, the normalization layers' affine
    tensors) against autograd on `model` for the sum of its outputs on `xs`, per named parameter
    (rows in `renamed` carry a name the exporter gave), to `tol` relative or `floor` times the
    largest gradient norm (float32: a gradient far below the largest is a sum that nearly
    cancels, and two float32 sums of it differ by rounding there); every parameter of the
    module must be in the answer (but as many as were renamed). The worst relative difference is
    over the gradients above the floor. The problems, how many
    parameters were compared and the worst relative difference."""
    model.zero_grad()
    model(xs).flatten(1).sum().backward()
    params = dict(model.named_parameters())
    scale = max([p.grad.norm().item() for p in params.values() if p.grad is not None] + [1.0])
    problems, compared, worst, skipped = [], set(), 0.0, 0
    pairs = []
    for row in answer["layers"]:
        p = params.get(row["path"], params.get(row["path"] + ".weight"))
        if p is None and row["path"] in renamed:
            skipped += 1
            continue
        if p is None:
            problems.append(f"diagnostics row {row['path']} names no parameter of the module")
            continue
        name = row["path"] if row["path"] in params else row["path"] + ".weight"
        pairs.append((row["weight_grad"]["frobenius"], name, "weight"))
        # a module's bias, or the bias beside a named weight (in_proj_bias, out_proj.bias,
        # bias_ih_l0 beside weight_ih_l0)
        head, dot, last = row["path"].rpartition(".")
        bias = head + dot + last.replace("weight", "bias") if "weight" in last else row["path"] + ".bias"
        if row.get("bias_grad"):
            if bias not in params:
                problems.append(f"diagnostics row {row['path']} has a bias gradient, the module no {bias}")
                continue
            pairs.append((row["bias_grad"]["frobenius"], bias, "bias"))
    for other in answer.get("other_parameters", []):
        if other["path"] not in params:
            problems.append(f"other parameter {other['path']} names no parameter of the module")
            continue
        pairs.append((other["grad"]["frobenius"], other["path"], "gradient"))
    for got, name, what in pairs:
        compared.add(name)
        want = params[name].grad.double().norm().item()
        rel = abs(got - want) / max(abs(want), 1e-30)
        if abs(want) > floor * scale:
            worst = max(worst, rel)
        if abs(got - want) > tol * max(abs(want), 1e-12) and abs(got - want) > floor * scale:
            problems.append(f"{name}: {what} grad {got} != autograd {want} (relative {rel:.1e})")
    missing = [n for n in params if n not in compared]
    if len(missing) > skipped:
        problems.append(f"parameters the answer has no gradient for: {missing[:6]}")
    return problems, len(compared), worst


def check_vit(url, dynamo):
    """A small ViT of torchvision's own VisionTransformer class, by either exporter: the file
    reads as the whole network (patches, class token, position embedding, attention, MLP, head)
    with PyTorch's module names; parameters and FlopCounterMode's total equal the module's, and
    float64 gradients with the file's weights equal autograd's per named parameter. The dynamo
    export is also saved to a file with its external data and sent as multipart."""

    from torch.utils.flop_counter import FlopCounterMode
    from torchvision.models.vision_transformer import VisionTransformer
    torch.manual_seed(3)
    model = VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=16, mlp_dim=32, num_classes=5).eval()
    data = export(model, [3, 32, 32], dynamo=dynamo)
    onnx_model = {"onnx": base64.b64encode(data).decode()}
    how = "dynamo" if dynamo else "TorchScript"
    # the dynamo exporter folds class_token.expand(...) into an initializer named "expand"
    # (the importer names it class_token again, from the value's folded_from metadata); the
    # TorchScript one keeps the parameter (its Expand to the token's own shape is the token)
    renamed = ()
    problems = []
    status, resp = post(url + "/v1/complexity", {"model": onnx_model, "profile": "torch_flop_counter", "verify": True})
    if status != 200:
        print(f"onnx small ViT ({how}): status {status}: {str(resp)[:400]}")
        return 1
    problems += count_problems(resp, model, torch.zeros(1, 3, 32, 32))
    modules = dict(model.named_modules())
    unnamed = [r["path"] for r in resp["rows"] if r["params"] and r["path"] not in modules and r["path"] not in ("encoder.pos_embedding", "class_token") + renamed]
    if unnamed:
        problems.append(f"rows not named after the module's: {unnamed}")
    model = model.double()
    gen = torch.Generator().manual_seed(4)
    xs = torch.randn(2, 3, 32, 32, dtype=torch.float64, generator=gen)
    s, g = post(url + "/v1/gradient-diagnostics", {"model": onnx_model, "inputs": {"values": xs.flatten().tolist()}, "dtype": "float64"})
    if s != 200:
        problems.append(f"diagnostics status {s}: {str(g)[:300]}")
    else:
        found, checked, _ = gradient_problems(model, xs, g, renamed=renamed)
        problems += found
        if checked < 10:
            problems.append(f"only {checked} diagnostics rows name a parameter of the module")
    if dynamo:
        problems += external_data_problems(url, model.float(), resp)
    print(f"onnx small ViT (torchvision's VisionTransformer, {how} export): " + ("ok" if not problems else "; ".join(problems)))
    return 1 if problems else 0


def external_data_problems(url, model, inline):
    """The model saved to a file as torch.onnx.export saves it by default (`vit.onnx` and its
    weights in `vit.onnx.data`), sent as multipart/form-data: the same table as the inline file
    (`inline`, its torch_flop_counter answer), and float32 gradients with the side file's
    weights equal autograd's."""
    import tempfile
    problems = []
    with tempfile.TemporaryDirectory() as d, contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        torch.onnx.export(model, (torch.zeros(1, 3, 32, 32),), os.path.join(d, "vit.onnx"), dynamo=True)
        files = sorted(os.listdir(d))
        model_bytes = open(os.path.join(d, "vit.onnx"), "rb").read()
        side = [(f, open(os.path.join(d, f), "rb").read()) for f in files if f != "vit.onnx"]
    if [f for f, _ in side] != ["vit.onnx.data"]:
        return [f"torch.onnx.export wrote {files}, not a model and its external data"]
    status, refused = post_raw(url + "/v1/complexity", model_bytes)
    if status != 422 or "vit.onnx.data" not in refused.get("detail", ""):
        problems.append(f"the file without its external data: status {status} {str(refused)[:200]}")
    status, got = post_multipart(url + "/v1/complexity", model_bytes, side, {"profile": "torch_flop_counter", "verify": False})
    if status != 200:
        return problems + [f"external data as multipart: status {status}: {str(got)[:300]}"]
    if got["totals"] != inline["totals"] or [r["path"] for r in got["rows"]] != [r["path"] for r in inline["rows"]]:
        problems.append(f"external data: totals {got['totals']} != the inline file's {inline['totals']}")
    x = drawn_inputs(3 * 32 * 32 * 2, seed=3).float().reshape(2, 3, 32, 32)
    status, g = post_multipart(url + "/v1/gradient-diagnostics", model_bytes, side, {"inputs": {"batch_size": 2, "seed": 3}, "dtype": "float32"})
    if status != 200:
        return problems + [f"external data diagnostics: status {status}: {str(g)[:300]}"]
    found, checked, _ = gradient_problems(model, x, g, tol=1e-5, floor=1e-5)
    problems += [f"external data: {p}" for p in found]
    if checked < 10:
        problems.append(f"external data: only {checked} parameters compared")
    return problems


def check_unrolled_rnn(url):
    """torch 2.11's dynamo exporter writes nn.RNN as per-step ops (the loop unrolled): read back
    as the one layer, its weights under PyTorch's names, for two layers both ways with ReLU and
    for one layer without bias: params, FlopCounterMode and float64 gradients per named
    parameter against the module. A one-token sequence leaves no W_hh in the file (the first
    step's h0 = 0 is folded away): refused, with the hint to export with dynamo=False.
    Between attention and an LSTM, or next to another recurrent layer, the exporter cancels the
    RNN's transposes against its neighbours': the unrolled ops then read or leave the sequence
    time-major, and are read back the same (the neighbours' rows listed too). An nn.RNN with
    batch_first=False reads the batch axis as time: refused, naming it."""
    import seq_check

    class Net(torch.nn.Sequential):
        def __init__(self, **kw):
            super().__init__(seq_check.RNN(4, 6, batch_first=True, **kw))

    def chain(*parts):
        return lambda: torch.nn.Sequential(*parts)

    failures = 0
    torch.manual_seed(5)
    cases = [(lambda kw=kw: Net(**kw), kw, length, ["rnn"]) for kw, length in
             (({"num_layers": 2, "bidirectional": True, "nonlinearity": "relu"}, 5), ({"bias": False}, 3), ({}, 1))]
    cases += [
        (chain(seq_check.Attention(4, 2, True, False, False), seq_check.RNN(4, 3, batch_first=True, bidirectional=True),
               seq_check.LSTM(6, 5, batch_first=True)), "attention, bidirectional RNN, LSTM", 4, ["multihead_attention", "rnn", "lstm"]),
        (chain(seq_check.RNN(4, 6, batch_first=True), seq_check.RNN(6, 3, batch_first=True, nonlinearity="relu")),
         "RNN, RNN", 3, ["rnn", "rnn"]),
        (chain(seq_check.LSTM(4, 5, batch_first=True), seq_check.RNN(5, 3, batch_first=True, bidirectional=True),
               seq_check.GRU(6, 2, batch_first=True)), "LSTM, bidirectional RNN, GRU", 3, ["lstm", "rnn", "gru"]),
        (chain(seq_check.RNN(4, 6)), "batch_first=False", 3, None),
    ]
    for make, kw, length, types in cases:
        model = make().eval()
        x = torch.randn(1, length, 4)
        data = export(model, [length, 4], dynamo=True, example=x)
        onnx_model = {"onnx": base64.b64encode(data).decode()}
        status, resp = post(url + "/v1/complexity", {"model": onnx_model, "profile": "torch_flop_counter", "verify": True})
        problems = []
        if length == 1:
            if status != 422 or "dynamo=False" not in resp.get("detail", ""):
                problems.append(f"status {status}: {str(resp)[:300]}")
        elif types is None:
            if status != 422 or not any(w in resp.get("detail", "") for w in ("batch_first=False", "dynamo=False")):
                problems.append(f"status {status}: {str(resp)[:300]}")
        elif status != 200:
            problems.append(f"status {status}: {str(resp)[:300]}")
        else:
            problems += count_problems(resp, model, x)
            if [r["type"] for r in resp["rows"] if not r["subtotal"]] != types:
                problems.append(f"rows {[r['type'] for r in resp['rows']]}")
            xs = torch.randn(2, length, 4, dtype=torch.float64)
            s, g = post(url + "/v1/gradient-diagnostics", {"model": onnx_model, "inputs": {"values": xs.flatten().tolist()}, "dtype": "float64"})
            if s != 200:
                problems.append(f"diagnostics status {s}: {str(g)[:300]}")
            else:
                found, checked, _ = gradient_problems(model.double(), xs, g)
                problems += found
                if checked != sum(1 for n, _ in model.named_parameters()):
                    problems.append(f"{checked} parameters compared of {sum(1 for _ in model.parameters())}")
        failures += bool(problems)
        print(f"onnx nn.RNN({kw}) on {length} tokens by the dynamo exporter: " + ("ok" if not problems else "; ".join(problems)))
    return failures


def check_other_mask(url):
    """Attention under a mask that is not the causal one (here every query may not see the last
    key) is no layer of the model language: a 422 from either exporter's file, never the layer
    read as causal or unmasked."""
    class Masked(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.attn = torch.nn.MultiheadAttention(8, 2, batch_first=True)
            mask = torch.zeros(5, 5)
            mask[:, -1] = float("-inf")
            self.register_buffer("mask", mask)

        def forward(self, x):
            return self.attn(x, x, x, attn_mask=self.mask, need_weights=False)[0]

    failures = 0
    for dynamo in (False, True):
        data = export(Masked().eval(), [5, 8], dynamo=dynamo, example=torch.randn(1, 5, 8))
        status, resp = post(url + "/v1/complexity", {"model": {"onnx": base64.b64encode(data).decode()}})
        ok = status == 422
        failures += not ok
        print(f"onnx attention under a non-causal mask ({'dynamo' if dynamo else 'TorchScript'} export): "
              + ("refused" if ok else f"status {status}: {str(resp)[:300]}"))
    return failures


def run_interp(url, n, seed):
    """Upsamplings by any factor or to any size (check.py's `interp` draws) exported by both
    exporters: the file reads back as the same layer (its output shape, kind and per-layer
    range), the same exact sets at sampled units, and is refused where the spec is refused
    (positions that PyTorch's float arithmetic places differently by dtype)."""
    import check
    rng = random.Random(seed)
    failures = files = refused = decomposed = 0
    for case in range(n):
        spec = check.rand_interp(rng)
        model = check.interp_module(spec["layers"][0], torch.float32).eval()
        status, want = post(url + "/v1/receptive-field", {"model": spec, "verify": False})
        shape = want.get("model", {}).get("output_shape")
        units = []
        if status == 200:
            units = [[rng.randrange(d) for d in shape[1:]] for _ in range(4)]
        for dynamo in (False, True):
            label = f"onnx interp case {case} (seed {seed}, {'dynamo' if dynamo else 'TorchScript'}): {json.dumps(spec)}"
            try:
                data = export(model, spec["input_shape"], dynamo=dynamo)
            except Exception:  # noqa: BLE001 - the exporter's own refusals
                continue
            files += 1
            onnx_model = {"onnx": base64.b64encode(data).decode()}
            problems = []
            st, got = post(url + "/v1/receptive-field", {"model": onnx_model, "verify": False})
            if status != 200:
                refused += 1
                if st != 422:
                    problems.append(f"the spec is refused ({want.get('detail')}) but the file gets {st}")
            elif st == 422 and dynamo and spec["layers"][0]["mode"] == "linear" and "GatherND" in got.get("detail", ""):
                # the dynamo exporter writes upsample_linear1d as gathers and arithmetic, no
                # Resize: refused by node name (as for a power-of-two factor)
                decomposed += 1
            elif st != 200:
                problems.append(f"status {st}: {got}")
            else:
                a, b = want["layers"][-1], got["layers"][-1]
                for key in ("output_shape", "kind", "rational", "receptive_field"):
                    if a.get(key) != b.get(key):
                        problems.append(f"{key}: file {b.get(key)} != spec {a.get(key)}")
                for index in units:
                    q = lambda m: post(url + "/v1/receptive-field", {"model": m, "position": {"layer": b["path"] if m is onnx_model else a["path"], "index": index}, "verify": True})[1]  # noqa: E731
                    pa, pb = q(spec), q(onnx_model)
                    keys = ("input_positions", "input_slices", "input_rows", "input_cols")
                    if [pa.get("position", {}).get(k) for k in keys] != [pb.get("position", {}).get(k) for k in keys]:
                        problems.append(f"unit {index}: file {pb.get('position')} != spec {pa.get('position')}")
                    if not pb.get("verification", {}).get("agrees"):
                        problems.append(f"unit {index}: the probe disagrees on the file: {pb.get('verification')}")
            if problems:
                failures += 1
                print(label)
                for p in problems[:5]:
                    print("  " + p)
    print(f"onnx interp oracle: {files - failures} files passed, {failures} failed ({refused} refused as their specs are, "
          f"{decomposed} 1-D linear files from the dynamo exporter without a Resize, refused by node)")
    return failures


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("url")
    ap.add_argument("--n", type=int, default=60)
    ap.add_argument("--seed", type=int, default=5)
    ap.add_argument("--torchvision", default=",".join(TORCHVISION))
    ap.add_argument("--no-dynamo", action="store_true")
    ap.add_argument("--case", type=int, default=None, help="replay one random case")
    ap.add_argument("--signals", type=int, default=30, help="random 1-D signal networks on top of --n")
    ap.add_argument("--sequences", type=int, default=40, help="random sequence networks (token ids, recurrent layers)")
    ap.add_argument("--cross", type=int, default=24, help="random cross-attention networks")
    ap.add_argument("--volumes", type=int, default=20, help="random 3-D networks on volumes on top of --n and --signals")
    ap.add_argument("--heads", type=int, default=20, help="random transformer blocks with multi-head attention by hand")
    ap.add_argument("--gpt", type=int, default=6, help="random whole nanoGPTs (tied heads, position embeddings)")
    ap.add_argument("--interp", type=int, default=30, help="random upsamplings by any factor or size")
    a = ap.parse_args()
    if a.case is not None:
        sys.exit(1 if run_random(a.url, a.n, a.seed, a.case) else 0)
    failed = run_torchvision(a.url, [n for n in a.torchvision.split(",") if n], not a.no_dynamo)
    failed += run_random(a.url, a.n, a.seed, signals=a.signals, volumes=a.volumes)
    failed += run_sequences(a.url, a.sequences, a.seed)
    failed += run_cross(a.url, a.cross, a.seed)
    failed += run_heads(a.url, a.heads, a.seed)
    failed += run_gpt(a.url, a.gpt, a.seed)
    failed += run_interp(a.url, a.interp, a.seed)
    failed += run_learned_tensors(a.url)
    failed += check_prelu(a.url)
    failed += check_padding_idx(a.url)
    failed += check_folded_norms(a.url)
    failed += check_sequence_splits(a.url)
    failed += check_shufflenet(a.url)
    failed += check_crop(a.url)
    failed += check_unrolled_rnn(a.url)
    failed += check_vit(a.url, dynamo=True)
    failed += check_vit(a.url, dynamo=False)
    failed += check_other_mask(a.url)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
