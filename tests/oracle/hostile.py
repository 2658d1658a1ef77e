"""Hostile, half-valid requests to every POST endpoint: extreme sizes (2^20, 2^31, 2^53),
negative, fractional and mistyped values, unknown types, deep composites, huge inputs and
batches, volumes [C, D, H, W] read by 3-D layers with sizes of the wrong length, and ONNX files mutated (bit flips, truncation, splices, random bytes) sent as base64 or
raw uploads with hostile request parameters, ONNX files with external data sent as multipart
bodies with the model, the side file or the body itself mutated (parts dropped, renamed or
repeated, bytes flipped, the body cut short), and TorchScript modules mutated the same way.
The seed files hold attention and cross-attention from both exporters and an unrolled nn.RNN.
Nothing may answer 5xx or bring the server down.

  python tests/oracle/hostile.py URL SEED COUNT
"""
import base64
import json
import random
import sys
import urllib.error
import urllib.parse
import urllib.request

URL = sys.argv[1]
rng = random.Random(int(sys.argv[2]))
BIG = [0, 1, 2, 3, 7, 64, 1000, 65535, 1048575, 1048576, 1048577, 2**31, 2**53, -1, 1.5, "3", None, [], [1, 2, 3], [1048576, 1]]
def v():
    return rng.choice(BIG) if rng.random() < 0.3 else rng.randint(0, 9)
def layer(depth=0):
    t = rng.choice(["conv2d", "linear", "maxpool2d", "avgpool2d", "adaptive_avgpool2d", "batchnorm2d", "relu", "flatten", "dropout", "concat", "residual", "sigmoid", "Conv2d", "nope",
                    "conv_transpose2d", "ConvTranspose2d", "upsample", "groupnorm", "instancenorm2d", "layernorm", "softmax", "GroupNorm", "mean", "zeropad2d", "reflectionpad2d", "ReplicationPad2d",
                    "embedding", "multihead_attention", "MultiheadAttention", "lstm", "gru", "rnn", "LSTM",
                    "parameter", "transpose", "permute", "select", "layernorm2d", "circularpad2d", "prelu", "PReLU", "narrow", "channel_shuffle", "scale", "ChannelShuffle", "causal_mask", "CausalMask",
                    "conv1d", "Conv1d", "conv_transpose1d", "maxpool1d", "avgpool1d", "adaptive_avgpool1d", "AdaptiveMaxPool1d",
                    "reshape", "view", "unflatten", "Unflatten",
                    "conv3d", "Conv3d", "maxpool3d", "avgpool3d", "AvgPool3d", "adaptive_avgpool3d", "adaptive_maxpool3d", "AdaptiveMaxPool3d", "batchnorm3d", "instancenorm3d", "InstanceNorm3d", "zeropad3d", "reflectionpad3d", "ReplicationPad3d", "circularpad3d", "conv_transpose3d", "ConvTranspose3d"])
    d = {"type": t}
    for k in rng.sample(["out_channels", "kernel_size", "stride", "padding", "dilation", "groups", "out_features", "output_size", "ceil_mode", "p", "bias", "in_channels",
                         "output_padding", "scale_factor", "size", "mode", "functional", "num_groups", "normalized_shape", "dim", "eps",
                         "elementwise_affine", "track_running_stats", "affine", "keepdim",
                         "num_embeddings", "embedding_dim", "padding_idx", "embed_dim", "num_heads", "is_causal", "need_weights", "kdim",
                         "hidden_size", "num_layers", "bidirectional", "input_size", "nonlinearity", "proj_size",
                         "shape", "dim0", "dim1", "dims", "index", "start_dim", "end_dim", "unflattened_size", "num_parameters", "init", "start", "length", "factor",
                         "weight_of", "positions"], rng.randint(0, 7)):
        flags = ("ceil_mode", "bias", "functional", "mode", "elementwise_affine", "track_running_stats", "affine", "keepdim", "is_causal", "need_weights", "bidirectional", "nonlinearity")
        d[k] = v() if k not in flags else rng.choice([True, False, 1, "nearest", "bilinear", "tanh", "relu"])
        if k == "weight_of":
            # a tied weight naming nothing, itself, a node of another kind, a mistyped name
            d[k] = rng.choice(["a", "b", "c", "0", "1", "", "x" * 300, 7, None, [], {"name": "a"}])
    if rng.random() < 0.1: d["padding"] = rng.choice(["same", "valid", "full"])
    if rng.random() < 0.1: d["padding_mode"] = rng.choice(["zeros", "reflect", "replicate", "circular", "mirror", 3])
    if t == "parameter" and rng.random() < 0.5:
        # absurd, empty, mistyped and deep shapes for a learned tensor
        d["shape"] = rng.choice([[2**31, 2**31], [], [0], [1048576] * 3, [v()] * 4, "3", [-1, 2], [[1]], [v(), 1, 1]])
    if t in ("reshape", "view", "unflatten", "Unflatten", "flatten") and rng.random() < 0.6:
        # sizes that overflow, two -1, zeros, four axes, mistyped, and dims past the tensor
        bad = rng.choice([[2**40, 2**40, 2**40], [-1, -1], [0, -1], [1, 1, 1, 1], [-2, 3], ["3"], [], 5, [2**63, 2], [1048576, 1048576, 1048576]])
        d["unflattened_size" if t.lower() == "unflatten" else "shape"] = bad
        if t.lower() in ("unflatten", "flatten"):
            d[rng.choice(["dim", "start_dim", "end_dim"])] = rng.choice([0, 1, 2, 3, 4, -1, -4, 9, 2**40, 1.5])
    if t in ("transpose", "permute") and rng.random() < 0.6:
        # axes past the tensor, the batch axis moved, repeats, too many, mistyped
        d["dims"] = rng.choice([[0, 2, 1, 3], [0, 3, 1, 2], [1, 0, 2, 3], [0, 1, 1, 2], [0, 2, 3, 1, 4, 5, 6], [0, 9, 1, 2], [0, -1, -2, -3], ["0", 1, 2], [], 3])
        d["dim0"], d["dim1"] = rng.choice([(1, 2), (-2, -1), (0, 1), (2, 9), (-9, 1), (3, 3), ("1", 2), (1.5, 2)])
    if t == "upsample" and rng.random() < 0.6:
        # factors that are tiny, huge, negative, not numbers, ambiguous in float (3 bilinear),
        # sizes far past the input, align_corners mistyped or on nearest, outputs of 2^30
        d[rng.choice(["scale_factor", "size"])] = rng.choice([1e-300, 1e-9, 0.0, -1.5, 1024.0, 1024.5, 3, 1.5, 2 / 3, [1.5, 3], [1e-9, 2], "1.5",
                                                               [1.5, "x"], [2, 2, 2, 2], 2**40, [1048576, 1048576], [1, 1], True])
        d["mode"] = rng.choice(["nearest", "bilinear", "linear", "trilinear", "bicubic", "area", 7])
        if rng.random() < 0.5:
            d["align_corners"] = rng.choice([True, False, "yes", 1, None])
    if t == "concat" and depth < 3: d["branches"] = [[layer(depth+1) for _ in range(rng.randint(0, 2))] for _ in range(rng.randint(0, 3))]
    if t == "residual" and depth < 3: d["body"] = [layer(depth+1) for _ in range(rng.randint(0, 2))]
    return d
NAMES = ["a", "b", "c", "input", "", "a.b", "0", "x" * 300, 7, None]
def node():
    """A graph node: a layer or a merge, named from a small pool (duplicates, the reserved
    "input", odd names), reading names that may not exist, itself, or form cycles."""
    d = layer() if rng.random() < 0.6 else {"type": rng.choice(["add", "mul", "concat", "cat", "Add", "matmul", "MatMul", "bmm", "scaled_dot_product_attention"])}
    if d["type"] == "scaled_dot_product_attention":
        d.update({k: rng.choice([True, False, 0, 1e308, -1.0, "yes", None, [1]]) for k in rng.sample(["is_causal", "scale", "dropout_p", "attn_mask"], rng.randint(0, 3))})
    if d["type"] in ("concat", "cat") and rng.random() < 0.6:
        d["dim"] = rng.choice([0, 1, 2, 3, -1, -4, 9, 2**40, 1.5, "1", None])
    if rng.random() < 0.95:
        d["name"] = rng.choice(NAMES)
    if rng.random() < 0.8:
        d["inputs"] = rng.choice([[rng.choice(NAMES) for _ in range(rng.randint(0, 4))], "a", {}, [["a"]], ["input"] * 2000])
    return d
def spec():
    shape = rng.choice([[v(), v(), v()], [v()], [1, 1048576, 1048576], [1048576, 1048576, 1048576], [3, 224, 224], [v(), v()], [1048576, 64], [100000, 2]])
    if rng.random() < 0.25:
        # a sequence model: token ids (sometimes of the wrong shape or dtype name) read by an embedding
        seq = {"input_shape": rng.choice([[v()], [v(), v()], [1048576]]), "input_dtype": rng.choice(["int64", "long", "float32", "int8", 3, None]),
               "layers": [{"type": "embedding", "num_embeddings": v(), "embedding_dim": v()}] + [layer() for _ in range(rng.randint(0, 4))]}
        if rng.random() < 0.5:
            seq["layers"].insert(1, {"type": rng.choice(["lstm", "gru", "rnn", "multihead_attention"]), "hidden_size": v(), "num_heads": v(), "num_layers": v(), "bidirectional": rng.random() < 0.5})
        return seq
    if rng.random() < 0.15:
        # a 1-D signal [C, L] read by a 1-D layer with hostile arguments, then anything
        first = layer()
        first["type"] = rng.choice(["conv1d", "conv_transpose1d", "maxpool1d", "avgpool1d", "adaptive_maxpool1d"])
        return {"input_shape": rng.choice([[v(), v()], [1, 1048576], [3, 16000], [v(), v(), v()]]), "layers": [first] + [layer() for _ in range(rng.randint(0, 4))]}
    if rng.random() < 0.15:
        # a volume [C, D, H, W] read by a 3-D layer with hostile arguments (sizes of 2 or 4
        # items, huge depths), then anything
        first = layer()
        first["type"] = rng.choice(["conv3d", "maxpool3d", "avgpool3d", "adaptive_avgpool3d", "adaptive_maxpool3d"])
        if rng.random() < 0.4:
            first[rng.choice(["kernel_size", "stride", "padding", "dilation", "output_size"])] = rng.choice(
                [[v(), v()], [v(), v(), v(), v()], [v(), v(), v()], [None, 1, 1], [2**31, 1, 1]])
        return {"input_shape": rng.choice([[v(), v(), v(), v()], [1, 1048576, 1048576, 1048576], [3, 16, 112, 112], [v(), v(), v()], [1, 2**31, 1, 1]]),
                "layers": [first] + [layer() for _ in range(rng.randint(0, 4))]}
    if rng.random() < 0.35:
        g = {"nodes": [node() for _ in range(rng.randint(0, 8))]}
        if rng.random() < 0.5:
            g["outputs"] = rng.choice([[rng.choice(NAMES) for _ in range(rng.randint(0, 3))], "a", [], None])
        if rng.random() < 0.05:
            g = rng.choice([[], "graph", {"nodes": {}}, {"nodes": [{"name": f"n{i}", "type": "relu"} for i in range(5000)]}])
        out = {"input_shape": shape, "graph": g}
        if rng.random() < 0.2 and isinstance(g, dict) and isinstance(g.get("nodes"), list):
            # a GPT's ends with hostile sizes: token ids, a head tied to an embedding (or to
            # itself, a position table, nothing), a position embedding past its table
            out["input_dtype"] = rng.choice(["int64", "float32"])
            g["nodes"] += [{"name": "a", "type": "embedding", "num_embeddings": v(), "embedding_dim": v(), "inputs": ["input"]},
                           {"name": "c", "type": "embedding", "num_embeddings": v(), "embedding_dim": v(), "positions": v(), "inputs": rng.choice([[], ["a"]])},
                           {"name": "s", "type": "add", "inputs": ["a", "c"]},
                           {"name": "b", "type": "linear", "out_features": v(), "bias": rng.random() < 0.5, "weight_of": rng.choice(["a", "b", "c", "s", "input"])}]
        if rng.random() < 0.1:
            out["layers"] = []
        return out
    return {"input_shape": shape, "layers": [layer() for _ in range(rng.randint(0, 6))]}
def seed_external_onnx():
    """A real model saved as torch.onnx.export saves a file by default: `net.onnx` and its
    weights in `net.onnx.data`."""
    import contextlib
    import io
    import os
    import tempfile
    import warnings

    import torch
    warnings.filterwarnings("ignore")
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(8 * 8 * 8, 20)).eval()
    with tempfile.TemporaryDirectory() as d, contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        torch.onnx.export(net, (torch.zeros(1, 3, 8, 8),), os.path.join(d, "net.onnx"), dynamo=True)
        return open(os.path.join(d, "net.onnx"), "rb").read(), [("net.onnx.data", open(os.path.join(d, "net.onnx.data"), "rb").read())]


def hostile_multipart():
    """A multipart upload of the external-data model, mutated one way."""
    from check import multipart_body
    model, side = EXTERNAL
    kind = rng.choice(["model", "data", "drop", "rename", "repeat", "body", "cut", "request"])
    request = {}
    if kind == "model":
        model = mutated(model)
    elif kind == "data":
        side = [(side[0][0], mutated(side[0][1]))]
    elif kind == "drop":
        side = []
    elif kind == "rename":
        side = [(rng.choice(["", "../net.onnx.data", "/etc/passwd", "x" * 300, "net.onnx.data\u0000"]), side[0][1])]
    elif kind == "repeat":
        side = side * 2
    elif kind == "request":
        request = rng.choice([{"model": 1}, {"inputs": {"batch_size": 5000}}, {"position": {"layer": "x"}}, {"init": "model"}])
    content_type, body = multipart_body(model, side, request)
    if kind == "body":
        body = mutated(body)
    elif kind == "cut":
        body = body[:rng.randrange(len(body))]
    return kind, content_type, body


def exported(net, example, dynamo=False):
    """`net` as either exporter writes it (onnx_check's export), its progress output hidden."""
    import contextlib
    import io

    from onnx_check import export
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        return export(net.eval(), list(example.shape[1:]), dynamo=dynamo, example=example)


def seed_onnx():
    """A real file to mutate: a small conv net as torch.onnx.export writes it."""
    import warnings

    import torch
    warnings.filterwarnings("ignore")
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.BatchNorm2d(4), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
                              torch.nn.Flatten(), torch.nn.Linear(4 * 4 * 4, 3)).eval()
    return exported(net, torch.zeros(1, 3, 8, 8))


def seed_sequence_onnx():
    """A second file to mutate: token ids, an embedding, a 2-layer bidirectional LSTM and a
    linear layer, in the exporter's time-major layout with its shape arithmetic."""
    import warnings

    import torch
    warnings.filterwarnings("ignore")

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.emb, self.rnn, self.fc = torch.nn.Embedding(30, 6), torch.nn.LSTM(6, 4, 2, batch_first=True, bidirectional=True), torch.nn.Linear(8, 3)

        def forward(self, x):
            return self.fc(self.rnn(self.emb(x))[0])

    return exported(Net(), torch.zeros(1, 5, dtype=torch.long))


def seed_attention_onnx(dynamo=True):
    """A third and fourth: either exporter's self-attention (some thirty ops of one module, read
    back as one layer), a causal mask, a layernorm and an LSTM reading the attention
    time-major."""
    import warnings

    import torch
    warnings.filterwarnings("ignore")

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.attn, self.norm, self.rnn = torch.nn.MultiheadAttention(8, 2, batch_first=True), torch.nn.LayerNorm(8), torch.nn.LSTM(8, 4, batch_first=True)

        def forward(self, x):
            mask = torch.nn.Transformer.generate_square_subsequent_mask(x.shape[1])
            y = self.attn(x, x, x, need_weights=False, attn_mask=mask, is_causal=True)[0]
            return self.rnn(self.norm(y))[0]

    return exported(Net(), torch.zeros(1, 5, 8), dynamo)


def seed_cross_onnx(dynamo=False):
    """A fifth and sixth: cross-attention of latent queries over the projected input (either
    exporter): the queries a learned tensor, keys and values from the model's input."""
    import warnings

    import seq_check
    import torch
    warnings.filterwarnings("ignore")
    torch.manual_seed(2)
    return exported(seq_check.CrossNet("latents", 3, 4, 2, 3, True, False, 2), torch.zeros(1, 5, 3), dynamo)


def seed_unrolled_rnn_onnx():
    """A seventh: nn.RNN (two layers, both ways) as the dynamo exporter unrolls it."""
    import warnings

    import torch
    warnings.filterwarnings("ignore")

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = torch.nn.RNN(4, 5, num_layers=2, bidirectional=True, batch_first=True)

        def forward(self, x):
            return self.rnn(x)[0]

    return exported(Net(), torch.zeros(1, 4, 4), dynamo=True)


def seed_gpt_onnx(dynamo):
    """A whole nanoGPT with its head tied to the token embedding (the table written twice, one
    copy transposed) and its position rows folded, to mutate."""
    import warnings

    import torch
    warnings.filterwarnings("ignore")
    from onnx_check import NanoGPT
    torch.manual_seed(2)
    return exported(NanoGPT(20, 6, 4, 4, 2, 1, True, False, random.Random(2)), torch.zeros(1, 4, dtype=torch.long), dynamo=dynamo)


ONNX_FILES = [seed_onnx(), seed_sequence_onnx(), seed_attention_onnx(), seed_attention_onnx(dynamo=False), seed_cross_onnx(), seed_cross_onnx(dynamo=True),
              seed_unrolled_rnn_onnx(), seed_gpt_onnx(False), seed_gpt_onnx(True)]


def seed_torchscript():
    import io

    import torch
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(4 * 6 * 6, 2))
    buf = io.BytesIO()
    torch.jit.save(torch.jit.trace(net, torch.zeros(1, 3, 8, 8)), buf)
    return buf.getvalue()


TORCHSCRIPT = seed_torchscript()
EXTERNAL = seed_external_onnx()


def mutated(data):
    b = bytearray(data)
    kind = rng.choice(["flip", "truncate", "zeros"])
    if kind == "flip":
        for _ in range(rng.randint(1, 30)):
            b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
    elif kind == "truncate":
        b = b[:rng.randrange(len(b))]
    else:
        i = rng.randrange(len(b))
        b[i:i + 64] = bytes(64)
    return bytes(b)


def mutated_onnx():
    b = bytearray(rng.choice(ONNX_FILES))
    kind = rng.choice(["flip", "truncate", "splice", "random", "zeros", "repeat"])
    if kind == "flip":
        for _ in range(rng.randint(1, 20)):
            b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
    elif kind == "truncate":
        b = b[:rng.randrange(len(b))]
    elif kind == "splice":
        i, j = sorted(rng.randrange(len(b)) for _ in range(2))
        b = b[:i] + b[j:] + b[i:j]
    elif kind == "random":
        b = bytearray(rng.randbytes(rng.randint(0, 4096)))
    elif kind == "zeros":
        i = rng.randrange(len(b))
        b[i:i + 64] = bytes(64)
    else:
        b = b * rng.randint(2, 3)
    return bytes(b)


def floor_expr(depth=0):
    """A random end with floors, ceilings, // and huge or zero divisors."""
    pick = rng.random()
    if depth > 3 or pick < 0.3:
        return rng.choice(["i", "4i-9", "(i+1)/2", str(v()), "j", "1e30", "99999999999999999999i", "i/0", "", "⌊", "⌉"])
    inner = floor_expr(depth + 1)
    return rng.choice([f"floor({inner})", f"ceil({inner}/{v()})", f"⌊{inner}⌋", f"({inner})//{rng.choice([v(), 0, 9973])}",
                       f"{inner} + floor(i/{rng.choice([9967, 9973, 2, 3])})", f"{v()}({inner})", "floor(" * rng.randint(1, 40) + "i"])


def range_answer():
    lo, hi = floor_expr(), floor_expr()
    return rng.choice([f"{lo} <= m <= {hi}", f"{lo} < m < {hi}", f"[{lo}, {hi}]", f"{hi} >= m > {lo}", f"{lo} <= m >= {hi}", f"{lo} .. {hi}"])


bad = 0
for i in range(int(sys.argv[3])):
    path = rng.choice(["/v1/receptive-field", "/v1/complexity", "/v1/gradient-diagnostics", "/v1/momentum/equivalence", "/v1/grade"])
    req = None
    if path in ("/v1/gradient-diagnostics", "/v1/receptive-field") and rng.random() < 0.15:
        # a TorchScript module, mutated (libtorch reads the zip and runs the code)
        body = {"model": {"torchscript": base64.b64encode(mutated(TORCHSCRIPT)).decode(), "input_shape": rng.choice([[3, 8, 8], [3, 1, 1], [1048576], [3, 8]])}}
        if path == "/v1/receptive-field":
            body["position"] = rng.choice([{"index": [0, 0]}, {"index": [v(), v()]}, {"index": [0]}, {"layer": "x", "index": [0, 0]}, {}])
    elif path in ("/v1/gradient-diagnostics", "/v1/receptive-field", "/v1/complexity") and rng.random() < 0.1:
        kind, content_type, data = hostile_multipart()
        body = {"multipart": kind, "bytes": len(data)}
        req = urllib.request.Request(URL + path, data=data, headers={"content-type": content_type})
    elif path != "/v1/momentum/equivalence" and rng.random() < 0.25:
        # an ONNX file, mutated, embedded as base64 or uploaded raw with a hostile request parameter
        data = mutated_onnx()
        if rng.random() < 0.5:
            body = {"model": {"onnx": base64.b64encode(data).decode()}}
            req = urllib.request.Request(URL + path, data=json.dumps(body).encode(), headers={"content-type": "application/json"})
        else:
            q = rng.choice(["", "?request=%7B%7D", "?request=%7B%22model%22%3A1%7D", "?request=%ZZ", "?request=[1]", "?request=%7B%22position%22%3A%7B%22layer%22%3A%22x%22%7D%7D",
                            "?request=" + urllib.parse.quote(json.dumps({"inputs": {"batch_size": rng.choice([1, 5000])}, "init": rng.choice(["model", "normal", 3])}))])
            body = {"raw": len(data), "query": q}
            req = urllib.request.Request(URL + path + q, data=data, headers={"content-type": "application/octet-stream"})
    elif path == "/v1/momentum/equivalence":
        n = rng.choice([1, 2, 1048576])
        body = {"theta0": [v() for _ in range(min(n, 3))], "gradients": [[v()] for _ in range(rng.randint(0, 3))], "alpha": rng.choice([v(), [v(), v()]]), "beta": rng.choice([0.5, 0.999999, 1, -0.0, 2**53]), "return": rng.choice(["full", "last", {"every_n": v()}, "x"])}
    elif path == "/v1/grade":
        answer = v() if rng.random() < 0.5 else range_answer()
        body = {"questions": [{"id": "q", "kind": rng.choice(["complexity", "receptive_field", "gradient", "momentum"]), "model": spec(), "ask": rng.choice(["total params", "rows of layer 0", "cols of layer 1", "slices of layer 0", "min size of layer 0", "jump of layer 1", "params of branch 2", "verdict", "theta of form_i at step 99999999999"]), "answer": answer}]}
    else:
        body = {"model": spec(), "verify": rng.random() < 0.3}
        if path == "/v1/receptive-field" and rng.random() < 0.5:
            body["position"] = {"layer": rng.choice([None, 0, -1, "0.branches.0.0", 2**40, "a", "b", "input"]), "index": [v(), v()]}
        if path == "/v1/complexity":
            body["batch_size"] = v()
        if path == "/v1/gradient-diagnostics":
            body["inputs"] = {"batch_size": rng.choice([1, 2, 4096, 5000])}
    if req is None:
        req = urllib.request.Request(URL + path, data=json.dumps(body).encode(), headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            status = r.status
    except urllib.error.HTTPError as e:
        status, text = e.code, e.read().decode()
    except Exception as e:  # noqa: BLE001
        status, text = -1, str(e)
    if status >= 500 or status < 0:
        bad += 1
        print(status, path, json.dumps(body)[:600], text[:300])
print(f"hostile: {int(sys.argv[3]) - bad} passed, {bad} failed")
sys.exit(1 if bad else 0)
