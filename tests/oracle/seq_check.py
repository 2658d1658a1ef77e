"""PyTorch oracle for sequence models (token ids or [L, D] sequences) on a running layerscope.

  python seq_check.py URL [--n 200] [--seed 5]

Each case is a random network of embeddings, linear layers, layernorms, activations,
multi-head self-attention (causal or not), LSTM/GRU/RNN layers (stacked, bidirectional),
softmax, residual blocks, token means and flatten, built both as a layerscope spec and as the
torch.nn modules themselves (nn.Embedding, nn.MultiheadAttention, nn.LSTM, ...). It checks:

  - every row's parameters against the module's sum(p.numel()) and the total;
  - the torch_flop_counter profile against FlopCounterMode on the module, total and per row;
  - output shapes (the verify run) against the module's;
  - the exact input tokens (and features) of one unit against autograd through the real
    module in float64 with random weights (the gradient of the unit with respect to the
    embedding's output, or the input sequence), plus the service's own libtorch probe;
  - gradient norms per named parameter (float64, explicit weights and token ids) against
    autograd on the module, to 1e-6 relative.

Exits non-zero and prints every disagreement; the cases are seeded.
"""
import argparse
import json
import math
import random
import sys

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, __import__("os").path.dirname(__file__))
from check import compare_profiles, post  # noqa: E402
from torchspec import Narrow, Scale  # noqa: E402

torch.set_num_threads(1)


class Attention(nn.MultiheadAttention):
    """Self-attention as the service describes it: attn(x, x, x)[0], batch_first."""

    def __init__(self, e, heads, bias, causal, need_weights):
        super().__init__(e, heads, bias=bias, batch_first=True)
        self.causal, self.need_weights = causal, need_weights

    def forward(self, x):
        mask = nn.Transformer.generate_square_subsequent_mask(x.shape[1], dtype=x.dtype) if self.causal else None
        return super().forward(x, x, x, need_weights=self.need_weights, attn_mask=mask, is_causal=self.causal)[0]


def recurrent(cls):
    class Seq(cls):
        def forward(self, x):
            return super().forward(x)[0]

    Seq.__name__ = cls.__name__
    return Seq


LSTM, GRU, RNN = recurrent(nn.LSTM), recurrent(nn.GRU), recurrent(nn.RNN)


class Mean(nn.Module):
    def __init__(self, keepdim):
        super().__init__()
        self.keepdim = keepdim

    def forward(self, x):
        return x.mean(dim=1, keepdim=self.keepdim)


class Residual(nn.Module):
    def __init__(self, body):
        super().__init__()
        self.body = body

    def forward(self, x):
        return self.body(x) + x


def build(layers, shape):
    """torch.nn modules for a layer list; `shape` is one sample's shape. Returns (Sequential, out)."""
    mods = []
    for spec in layers:
        t = spec["type"]
        if t == "embedding":
            m = nn.Embedding(spec["num_embeddings"], spec["embedding_dim"], padding_idx=spec.get("padding_idx"))
            shape = shape + [spec["embedding_dim"]]
        elif t == "linear":
            m = nn.Linear(shape[-1], spec["out_features"], bias=spec.get("bias", True))
            shape = shape[:-1] + [spec["out_features"]]
        elif t == "layernorm":
            m = nn.LayerNorm(spec["normalized_shape"])
        elif t in ("tanh", "sigmoid", "gelu", "relu", "silu"):
            m = {"tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "gelu": nn.GELU, "relu": nn.ReLU, "silu": nn.SiLU}[t]()
        elif t == "dropout":
            m = nn.Dropout(spec["p"])
        elif t == "softmax":
            m = nn.Softmax(spec["dim"])
        elif t == "multihead_attention":
            m = Attention(shape[1], spec["num_heads"], spec.get("bias", True), spec.get("is_causal", False), spec.get("need_weights", False))
        elif t in ("lstm", "gru", "rnn"):
            kw = dict(num_layers=spec.get("num_layers", 1), bias=spec.get("bias", True), batch_first=True, bidirectional=spec.get("bidirectional", False))
            if t == "rnn":
                kw["nonlinearity"] = spec.get("nonlinearity", "tanh")
            m = {"lstm": LSTM, "gru": GRU, "rnn": RNN}[t](shape[1], spec["hidden_size"], **kw)
            shape = [shape[0], spec["hidden_size"] * (2 if kw["bidirectional"] else 1)]
        elif t == "mean":
            m = Mean(spec.get("keepdim", False))
            shape = [1, shape[1]] if spec.get("keepdim") else [shape[1]]
        elif t == "flatten":
            m = nn.Flatten()
            shape = [shape[0] * shape[1]]
        elif t == "narrow":
            m = Narrow(spec["dim"], spec["start"], spec["length"])
            shape = list(shape)
            shape[spec["dim"] % 3 - 1] = spec["length"]
        elif t == "residual":
            body, _ = build(spec["body"], shape)
            m = Residual(body)
        else:
            raise ValueError(t)
        mods.append(m)
    return nn.Sequential(*mods), shape


def rand_block(rng, shape):
    """One random layer (or residual block) for a sequence of shape [L, D]; returns (spec, shape)."""
    length, d = shape
    heads = [h for h in range(1, 5) if d % h == 0]
    kind = rng.choice(["linear", "layernorm", "act", "attention", "attention", "recurrent", "recurrent", "residual", "softmax", "dropout", "narrow", "narrow"])
    if kind == "narrow":
        # x.narrow on the tokens (a crop of the sequence, from its start now and then) or the
        # features (a part of x.chunk(k, -1)), PyTorch's dim negative now and then
        axis = rng.randrange(2)
        if shape[axis] >= 2:
            start = 0 if rng.random() < 0.3 else rng.randrange(shape[axis] - 1)
            n = rng.randint(1, shape[axis] - start)
            out = list(shape)
            out[axis] = n
            return {"type": "narrow", "dim": rng.choice([axis + 1, axis - 2]), "start": start, "length": n}, out
        kind = "act"
    if kind == "linear":
        o = rng.randint(2, 12)
        return {"type": "linear", "out_features": o, "bias": rng.random() < 0.8}, [length, o]
    if kind == "layernorm":
        return {"type": "layernorm", "normalized_shape": [d]}, shape
    if kind == "act":
        return {"type": rng.choice(["tanh", "sigmoid", "gelu", "silu"])}, shape
    if kind == "dropout":
        return {"type": "dropout", "p": 0.3}, shape
    if kind == "softmax":
        return {"type": "softmax", "dim": rng.choice([-1, 2])}, shape
    if kind == "attention":
        spec = {"type": "multihead_attention", "embed_dim": d, "num_heads": rng.choice(heads), "bias": rng.random() < 0.8,
                "is_causal": rng.random() < 0.5, "need_weights": rng.random() < 0.3}
        return spec, shape
    if kind == "recurrent":
        cell = rng.choice(["lstm", "gru", "rnn"])
        h = rng.randint(2, 8)
        bi = rng.random() < 0.4
        spec = {"type": cell, "input_size": d, "hidden_size": h, "num_layers": rng.choice([1, 1, 2]), "bidirectional": bi, "bias": rng.random() < 0.8}
        if cell == "rnn" and rng.random() < 0.3:
            spec["nonlinearity"] = "relu"
        return spec, [length, h * (2 if bi else 1)]
    # a pre-norm transformer block half: x + attn(ln(x))
    body = [{"type": "layernorm", "normalized_shape": [d]},
            {"type": "multihead_attention", "embed_dim": d, "num_heads": rng.choice(heads), "is_causal": rng.random() < 0.5}]
    return {"type": "residual", "body": body}, shape


class PatchNet(nn.Module):
    """A small ViT: patch convolution, positions flattened into tokens, an optional class token
    and position embedding (nn.Parameter), sequence blocks, token 0 or a mean, a linear head."""

    def __init__(self, c, patch, d, tokens, cls, pos, blocks, head):
        super().__init__()
        self.conv_proj = nn.Conv2d(c, d, patch, stride=patch)
        self.cls, self.pos = cls, pos
        if cls:
            self.class_token = nn.Parameter(torch.randn(1, d) * 0.5)
        if pos:
            self.pos_embedding = nn.Parameter(torch.randn(tokens + cls, d) * 0.5)
        self.blocks = blocks
        self.head = head

    def forward(self, x):
        x = self.conv_proj(x).flatten(2).transpose(1, 2)
        if self.cls:
            x = torch.cat([self.class_token.expand(x.shape[0], -1, -1), x], dim=1)
        if self.pos:
            x = x + self.pos_embedding
        return self.head(self.blocks(x))


class Select(nn.Module):
    def forward(self, x):
        return x[:, 0]


def random_patch_graph(rng):
    """A ViT-like graph: its spec (graph form, node names as PatchNet's modules and parameters)
    and the module."""
    c, patch = rng.randint(1, 3), rng.randint(2, 4)
    h, w = patch * rng.randint(1, 3), patch * rng.randint(1, 4)
    d = rng.choice([4, 6, 8])
    tokens = (h // patch) * (w // patch)
    cls, pos = rng.random() < 0.6, rng.random() < 0.6
    nodes = [{"name": "conv_proj", "type": "conv2d", "out_channels": d, "kernel_size": patch, "stride": patch, "inputs": ["input"]},
             {"name": "flatten", "type": "flatten", "start_dim": 2},
             {"name": "permute", "type": rng.choice(["permute", "transpose"])}]
    if nodes[-1]["type"] == "permute":
        nodes[-1]["dims"] = [0, 2, 1]
    else:
        nodes[-1].update({"dim0": 1, "dim1": 2})
    last = "permute"
    if cls:
        nodes += [{"name": "class_token", "type": "parameter", "shape": [1, d]},
                  {"name": "cat", "type": "concat", "dim": 1, "inputs": ["class_token", last]}]
        last = "cat"
    if pos:
        nodes += [{"name": "pos_embedding", "type": "parameter", "shape": [tokens + cls, d]},
                  {"name": "add_pos", "type": "add", "inputs": [last, "pos_embedding"]}]
        last = "add_pos"
    shape = [tokens + cls, d]
    layers = []
    for _ in range(rng.randint(1, 3)):
        layer, shape = rand_block(rng, shape)
        layers.append(layer)
    for i, layer in enumerate(layers):
        nodes.append(dict(layer, name=f"blocks.{i}", inputs=[last]))
        last = f"blocks.{i}"
    blocks, _ = build(layers, [tokens + cls, d])
    if rng.random() < 0.5:
        nodes.append({"name": "select", "type": "select", "dim": 1, "index": 0, "inputs": [last]})
        tail = Select()
    else:
        nodes.append({"name": "pool", "type": "mean", "dim": 1, "inputs": [last]})
        tail = Mean(False)
    out = rng.randint(1, 4)
    nodes.append({"name": "head.1", "type": "linear", "out_features": out})
    head = nn.Sequential(tail, nn.Linear(shape[1], out))
    # the service's node "select"/"pool" is head.0 in the module: rename to match
    nodes[-2]["name"] = "head.0"
    nodes[-1]["inputs"] = ["head.0"]
    spec = {"input_shape": [c, h, w], "graph": {"nodes": nodes}}
    return spec, PatchNet(c, patch, d, tokens, cls, pos, blocks, head)


class MatMul(nn.Module):
    """torch.matmul as a module, so that hooks and FlopCounterMode name it."""

    def forward(self, a, b):
        self.k = a.shape[-1]
        return torch.matmul(a, b)


class Transpose(nn.Module):
    def forward(self, x):
        return x.transpose(1, 2)


class HandAttention(nn.Module):
    """Self-attention written with matmuls, as a course writes it: softmax(q @ k^T) @ v, then
    optionally times a learned matrix (an nn.Parameter) and a linear head on the mean token."""

    def __init__(self, d_in, d, e, bias, proj):
        super().__init__()
        self.q, self.k, self.v = (nn.Linear(d_in, d, bias=bias) for _ in range(3))
        self.kt, self.scores, self.attn, self.context = Transpose(), MatMul(), nn.Softmax(-1), MatMul()
        self.has_proj = proj
        if proj:
            self.proj = nn.Parameter(torch.randn(d, e) * 0.5)
            self.proj_mm = MatMul()

    def forward(self, x):
        c = self.context(self.attn(self.scores(self.q(x), self.kt(self.k(x)))), self.v(x))
        return self.proj_mm(c, self.proj) if self.has_proj else c


class View(nn.Module):
    """x.reshape(batch, *shape), as a module so that a unit can be picked at it."""

    def __init__(self, shape):
        super().__init__()
        self.shape = shape

    def forward(self, x):
        return x.reshape(x.shape[0], *self.shape)


class Permute(nn.Module):
    def __init__(self, dims):
        super().__init__()
        self.dims = dims

    def forward(self, x):
        return x.permute(*self.dims)


class CausalMask(nn.Module):
    """nanoGPT's masked_fill of a tril buffer: -inf above the diagonal of the last two axes."""

    def forward(self, x):
        n, m = x.shape[-2:]
        return x.masked_fill(torch.ones(n, m, dtype=torch.bool).triu(1), float("-inf"))


class SDPA(nn.Module):
    """F.scaled_dot_product_attention as a module, so that a unit can be picked at it."""

    def __init__(self, causal, scale):
        super().__init__()
        self.causal, self.scale = causal, scale

    def forward(self, q, k, v):
        # per sample: q k^T and the weights times v, every head
        self.macs = q.shape[1] * q.shape[2] * k.shape[2] * (q.shape[3] + v.shape[3])
        return nn.functional.scaled_dot_product_attention(q, k, v, is_causal=self.causal, scale=self.scale)


class HeadsAttention(nn.Module):
    """Multi-head self-attention written by hand, as nanoGPT and course notebooks write it: one
    fused qkv projection (or three), the features split into heads by a view, the heads moved
    in front by a transpose (k's straight to [H, d, L] by a permute, or by a second transpose),
    softmax(q @ k^T * scale) with a causal mask now and then, @ v, the heads moved back and
    merged, an output projection."""

    def __init__(self, length, d_in, heads, hd, fused, bias, causal, scale, proj, steps, flash=False, dropout=False):
        super().__init__()
        self.sdpa = SDPA(causal, scale or None) if flash else None
        self.ktf = Permute((0, 2, 1, 3)) if flash else None
        c = heads * hd
        self.fused, self.c = fused, c
        if fused:
            self.c_attn = nn.Linear(d_in, 3 * c, bias=bias)
        else:
            self.q, self.k, self.v = (nn.Linear(d_in, c, bias=bias) for _ in range(3))
        self.qh, self.kh, self.vh = (View([length, heads, hd]) for _ in range(3))
        self.qt, self.vt = Permute((0, 2, 1, 3)), Permute((0, 2, 1, 3))
        self.kt = Permute((0, 2, 3, 1)) if steps == 1 else nn.Sequential(Permute((0, 2, 1, 3)), Permute((0, 1, 3, 2)))
        self.scores, self.context = MatMul(), MatMul()
        self.scaled = Scale(scale) if scale else None
        self.masked = CausalMask() if causal else None
        self.attn = nn.Softmax(-1)
        self.drop = nn.Dropout(0.1) if dropout else None
        self.back, self.merged = Permute((0, 2, 1, 3)), View([length, c])
        self.c_proj = nn.Linear(c, proj) if proj else None

    def forward(self, x):
        if self.fused:
            qkv = self.c_attn(x)
            q, k, v = (qkv.narrow(2, i * self.c, self.c) for i in range(3))
        else:
            q, k, v = self.q(x), self.k(x), self.v(x)
        if self.sdpa is not None:
            y = self.merged(self.back(self.sdpa(self.qt(self.qh(q)), self.ktf(self.kh(k)), self.vt(self.vh(v)))))
            return self.c_proj(y) if self.c_proj is not None else y
        s = self.scores(self.qt(self.qh(q)), self.kt(self.kh(k)))
        if self.scaled is not None:
            s = self.scaled(s)
        if self.masked is not None:
            s = self.masked(s)
        a = self.attn(s)
        if self.drop is not None:
            a = self.drop(a)
        y = self.merged(self.back(self.context(a, self.vt(self.vh(v)))))
        return self.c_proj(y) if self.c_proj is not None else y


def random_heads_graph(rng, block=None):
    """Multi-head attention by hand (HeadsAttention) and its graph spec, node names as the
    module's paths. `block` (length, heads, head size): a transformer block's attention inside
    a larger graph, reading node "ln_1", its output projected back to the width, its nodes'
    names the module's paths under "attn"."""
    length, d_in, heads, hd = rng.randint(1, 9), rng.randint(1, 8), rng.randint(1, 4), rng.randint(1, 4)
    fused, bias, causal = rng.random() < 0.5, rng.random() < 0.7, rng.random() < 0.6
    scale = rng.choice([0, hd ** -0.5, rng.uniform(0.1, 2.0)])
    proj, steps = rng.choice([0, rng.randint(1, 6)]), rng.choice([1, 2])
    if block:
        length, heads, hd = block
        d_in = proj = heads * hd
    c = heads * hd
    if fused:
        nodes = [{"name": "c_attn", "type": "linear", "out_features": 3 * c, "bias": bias, "inputs": ["input"]}]
        nodes += [{"name": n, "type": "narrow", "dim": rng.choice([2, -1]), "start": i * c, "length": c, "inputs": ["c_attn"]}
                  for i, n in enumerate("qkv")]
    else:
        nodes = [{"name": n, "type": "linear", "out_features": c, "bias": bias, "inputs": ["input"]} for n in "qkv"]
    nodes += [{"name": n + "h", "type": "reshape", "shape": rng.choice([[length, heads, hd], [-1, heads, hd], [length, -1, hd]]),
               "inputs": [n]} for n in "qkv"]
    swap = lambda name, src: rng.choice([{"name": name, "type": "transpose", "dim0": 1, "dim1": 2, "inputs": [src]},  # noqa: E731
                                         {"name": name, "type": "permute", "dims": [0, 2, 1, 3], "inputs": [src]}])
    nodes += [swap("qt", "qh"), swap("vt", "vh")]
    # now and then F.scaled_dot_product_attention on the heads (nanoGPT's flash path)
    flash, dropout = rng.random() < 0.35, False
    if flash:
        nodes += [swap("ktf", "kh"),
                  dict({"name": "sdpa", "type": "scaled_dot_product_attention", "is_causal": causal, "inputs": ["qt", "ktf", "vt"]},
                       **({"scale": scale} if scale else {}))]
    else:
        if steps == 1:
            nodes.append({"name": "kt", "type": "permute", "dims": [0, 2, 3, 1], "inputs": ["kh"]})
            k = "kt"
        else:
            nodes += [swap("kt.0", "kh"), {"name": "kt.1", "type": "transpose", "dim0": rng.choice([-2, 2]), "dim1": rng.choice([-1, 3]),
                                            "inputs": ["kt.0"]}]
            k = "kt.1"
        nodes.append({"name": "scores", "type": "matmul", "inputs": ["qt", k]})
        if scale:
            nodes.append({"name": "scaled", "type": "scale", "factor": scale})
        if causal:
            nodes.append({"name": "masked", "type": "causal_mask"})
        nodes.append({"name": "attn", "type": "softmax", "dim": rng.choice([-1, 3])})
        # nanoGPT's attn_dropout (eval: the identity; its zeros stay zeros)
        dropout = rng.random() < 0.3
        if dropout:
            nodes.append({"name": "drop", "type": "dropout", "p": 0.1})
        nodes.append({"name": "context", "type": "matmul", "inputs": ["drop" if dropout else "attn", "vt"]})
    nodes += [swap("back", nodes[-1]["name"]), {"name": "merged", "type": "reshape", "shape": [length, c]}]
    if proj:
        nodes.append({"name": "c_proj", "type": "linear", "out_features": proj})
    model = HeadsAttention(length, d_in, heads, hd, fused, bias, causal, scale, proj, steps, flash=flash, dropout=dropout)
    if block:
        # every node named by its path in the block ("attn.qt"); the graph's input is ln_1
        for i, n in enumerate(nodes):
            n["inputs"] = ["ln_1" if x == "input" else "attn." + x for x in n.get("inputs", [nodes[i - 1]["name"]] if i else ["input"])]
        for n in nodes:
            n["name"] = "attn." + n["name"]
        return nodes, model
    spec = {"input_shape": [length, d_in], "graph": {"nodes": nodes, "outputs": [nodes[-1]["name"]]}}
    return spec, model


class PositionEmbedding(nn.Embedding):
    """nanoGPT's wpe(torch.arange(L)) as a module (so that its row and its weight have one path):
    rows 0..L of a table of `table` >= L rows, [1, L, D]."""

    def __init__(self, table, d, length):
        super().__init__(table, d)
        self.length = length

    def forward(self):
        return super().forward(torch.arange(self.length)).unsqueeze(0)


class GPT(nn.Module):
    """A whole nanoGPT: token and position embeddings, one block (x + attn(ln_1(x)), now and then
    x + mlp(ln_2(x))), ln_f, an lm_head whose weight is the token embedding's (GPT-2's weight
    tying: one tensor, `wte.weight` in named_parameters()) or its own."""

    def __init__(self, vocab, table, length, attn, mlp, tie, bias):
        super().__init__()
        c = attn.c
        self.wte = nn.Embedding(vocab, c)
        self.wpe = PositionEmbedding(table, c, length)
        self.ln_1 = nn.LayerNorm(c)
        self.attn = attn
        self.mlp_on = mlp
        if mlp:
            self.ln_2 = nn.LayerNorm(c)
            self.mlp = nn.Sequential(nn.Linear(c, 4 * c), nn.GELU(), nn.Linear(4 * c, c))
        self.ln_f = nn.LayerNorm(c)
        self.lm_head = nn.Linear(c, vocab, bias=bias)
        if tie:
            self.lm_head.weight = self.wte.weight

    def forward(self, idx):
        x = self.wte(idx) + self.wpe()
        x = x + self.attn(self.ln_1(x))
        if self.mlp_on:
            x = x + self.mlp(self.ln_2(x))
        return self.lm_head(self.ln_f(x))


def random_gpt_graph(rng):
    """A whole nanoGPT (GPT) and its graph spec: `embedding` with `positions` for wpe (its table
    longer than the sequence now and then), `weight_of` for the tied head (on the head, or on
    the token embedding naming the head: PyTorch names the tensor by its first module either
    way)."""
    length, heads, hd = rng.randint(1, 6), rng.randint(1, 3), rng.randint(1, 4)
    c = heads * hd
    vocab, table = rng.randint(2, 30), length + rng.choice([0, rng.randint(1, 5)])
    tie, mlp, bias = rng.random() < 0.7, rng.random() < 0.5, rng.random() < 0.3
    attn_nodes, attn = random_heads_graph(rng, (length, heads, hd))
    wte = {"name": "wte", "type": "embedding", "num_embeddings": vocab, "embedding_dim": c, "inputs": ["input"]}
    head = {"name": "lm_head", "type": "linear", "out_features": vocab, "bias": bias}
    if tie and rng.random() < 0.8:
        head["weight_of"] = "wte"
    elif tie:
        wte["weight_of"] = "lm_head"
    nodes = [wte, {"name": "wpe", "type": "embedding", "num_embeddings": table, "embedding_dim": c, "positions": length},
             {"name": "x0", "type": "add", "inputs": ["wte", "wpe"]}, {"name": "ln_1", "type": "layernorm", "normalized_shape": [c], "inputs": ["x0"]}]
    nodes += attn_nodes + [{"name": "x1", "type": "add", "inputs": ["x0", attn_nodes[-1]["name"]]}]
    last = "x1"
    if mlp:
        nodes += [{"name": "ln_2", "type": "layernorm", "normalized_shape": [c]}, {"name": "mlp.0", "type": "linear", "out_features": 4 * c},
                  {"name": "mlp.1", "type": "gelu"}, {"name": "mlp.2", "type": "linear", "out_features": c},
                  {"name": "x2", "type": "add", "inputs": ["x1", "mlp.2"]}]
        last = "x2"
    nodes += [{"name": "ln_f", "type": "layernorm", "normalized_shape": [c], "inputs": [last]}, head]
    spec = {"input_shape": [length], "input_dtype": "int64", "graph": {"nodes": nodes, "outputs": ["lm_head"]}}
    return spec, GPT(vocab, table, length, attn, mlp, tie, bias)


class CrossAttention(nn.MultiheadAttention):
    """Cross-attention as the service describes it: attn(q, kv, kv)[0] or attn(q, k, v)[0],
    batch_first; `lk` records the key tokens for the hand count."""

    def __init__(self, e, heads, bias, need_weights):
        super().__init__(e, heads, bias=bias, batch_first=True)
        self.need_weights = need_weights

    def forward(self, q, k, v=None):
        self.lk = k.shape[1]
        return super().forward(q, k, k if v is None else v, need_weights=self.need_weights)[0]


class CrossNet(nn.Module):
    """Three cross-attention patterns on one input sequence [L, D]: learned latent queries over
    the projected input (Perceiver), input queries over a learned memory, and input queries over
    keys and values of their own projections; a linear head now and then."""

    def __init__(self, mode, d_in, e, heads, lq, bias, need_weights, head):
        super().__init__()
        self.mode = mode
        self.q = nn.Linear(d_in, e)
        if mode == "latents":
            self.latents = nn.Parameter(torch.randn(lq, e) * 0.5)
        elif mode == "memory":
            self.memory = nn.Parameter(torch.randn(lq, e) * 0.5)
        else:
            self.k, self.v = nn.Linear(d_in, e), nn.Linear(d_in, e)
        self.cross = CrossAttention(e, heads, bias, need_weights)
        self.head = nn.Linear(e, head) if head else None

    def forward(self, x):
        q = self.q(x)
        n = x.shape[0]
        if self.mode == "latents":
            y = self.cross(self.latents.expand(n, -1, -1), q)
        elif self.mode == "memory":
            m = self.memory.expand(n, -1, -1)
            y = self.cross(q, m, m)
        else:
            y = self.cross(q, self.k(x), self.v(x))
        return self.head(y) if self.head is not None else y


def random_cross_graph(rng):
    """A random CrossNet and its graph spec (node names as the module's)."""
    mode = rng.choice(["latents", "memory", "qkv"])
    length, d_in = rng.randint(2, 9), rng.randint(1, 6)
    heads = rng.choice([1, 2, 3])
    e, lq = heads * rng.randint(1, 3), rng.randint(1, 6)
    bias, need_weights, head = rng.random() < 0.7, rng.random() < 0.3, rng.choice([0, 0, rng.randint(1, 4)])
    nodes = [{"name": "q", "type": "linear", "out_features": e, "inputs": ["input"]}]
    if mode == "latents":
        nodes += [{"name": "latents", "type": "parameter", "shape": [lq, e]}]
        reads = ["latents", "q"]
    elif mode == "memory":
        nodes += [{"name": "memory", "type": "parameter", "shape": [lq, e]}]
        reads = ["q", "memory", "memory"]
    else:
        nodes += [{"name": "k", "type": "linear", "out_features": e, "inputs": ["input"]},
                  {"name": "v", "type": "linear", "out_features": e, "inputs": ["input"]}]
        reads = ["q", "k", "v"]
    nodes.append({"name": "cross", "type": "multihead_attention", "embed_dim": e, "num_heads": heads, "bias": bias,
                  "need_weights": need_weights, "inputs": reads})
    if head:
        nodes.append({"name": "head", "type": "linear", "out_features": head})
    spec = {"input_shape": [length, d_in], "graph": {"nodes": nodes}}
    return spec, CrossNet(mode, d_in, e, heads, lq, bias, need_weights, head)


def random_matmul_graph(rng):
    """Attention by hand in the graph form: q, k, v linear layers on the input, k transposed,
    matmul, softmax over the last axis, matmul by v, and a learned projection by matmul."""
    length, d_in, d, e = rng.randint(2, 9), rng.randint(1, 8), rng.randint(1, 6), rng.randint(1, 5)
    bias, proj = rng.random() < 0.7, rng.random() < 0.6
    nodes = [{"name": n, "type": "linear", "out_features": d, "bias": bias, "inputs": ["input"]} for n in ("q", "k", "v")]
    nodes += [{"name": "kt", "type": "transpose", "dim0": 1, "dim1": 2, "inputs": ["k"]},
              {"name": "scores", "type": "matmul", "inputs": ["q", "kt"]},
              {"name": "attn", "type": "softmax", "dim": -1, "inputs": ["scores"]},
              {"name": "context", "type": "matmul", "inputs": ["attn", "v"]}]
    if proj:
        nodes += [{"name": "proj", "type": "parameter", "shape": [d, e]},
                  {"name": "proj_mm", "type": "matmul", "inputs": ["context", "proj"]}]
    spec = {"input_shape": [length, d_in], "graph": {"nodes": nodes, "outputs": [nodes[-1]["name"]]}}
    return spec, HandAttention(d_in, d, e, bias, proj)


def check_profiles(url, spec, model, x):
    """The real fvcore and ptflops on the module itself against the service's profiles: matmul
    (aten::matmul, torch.matmul's hook), attention and recurrent layers (fvcore's trace,
    ptflops' module hooks and its bmm/softmax hooks). This oracle's attention and recurrent
    modules subclass nn.MultiheadAttention and nn.LSTM/GRU/RNN (to take one input and return
    one tensor), which ptflops looks up by exact type: they get ptflops' own hooks for those
    types, as a model holding the torch.nn modules themselves (torchvision's ViT) does."""
    import logging
    from fvcore.nn import FlopCountAnalysis
    from ptflops import get_model_complexity_info
    from ptflops.pytorch_ops import multihead_attention_counter_hook, rnn_flops_counter_hook
    logging.disable(logging.WARNING)
    model = model.float()
    x = x[:1] if x.dtype == torch.long else x[:1].float()
    fa = FlopCountAnalysis(model, x)
    fa.unsupported_ops_warnings(False)
    fa.uncalled_modules_warnings(False)
    want = {"fvcore": fa.total()}
    if x.dtype != torch.long:
        hooks = {Attention: lambda m, i, o: multihead_attention_counter_hook(m, (i[0], i[0], i[0]), o),
                 CrossAttention: lambda m, i, o: multihead_attention_counter_hook(m, (i[0], i[1], i[-1]), o),
                 LSTM: rnn_flops_counter_hook, GRU: rnn_flops_counter_hook, RNN: rnn_flops_counter_hook}
        want["ptflops"], _ = get_model_complexity_info(model, tuple(spec["input_shape"]), print_per_layer_stat=False, as_strings=False,
                                                       verbose=False, custom_modules_hooks=hooks)
    model.double()
    return compare_profiles(url, spec, want, "profiles")


def random_spec(rng):
    length = rng.randint(2, 9)
    if rng.random() < 0.7:
        d = rng.randint(2, 12)
        vocab = rng.randint(length, 30)
        emb = {"type": "embedding", "num_embeddings": vocab, "embedding_dim": d}
        if rng.random() < 0.2:
            emb["padding_idx"] = rng.randrange(vocab)
        spec = {"input_shape": [length], "input_dtype": "int64", "layers": [emb]}
        shape = [length, d]
    else:
        shape = [length, rng.randint(2, 10)]
        spec = {"input_shape": list(shape), "layers": []}
    for _ in range(rng.randint(1, 4)):
        layer, shape = rand_block(rng, shape)
        spec["layers"].append(layer)
    tail = rng.random()
    if tail < 0.3:
        spec["layers"] += [{"type": "mean", "dim": 1, "keepdim": rng.random() < 0.3}, {"type": "linear", "out_features": rng.randint(1, 5)}]
    elif tail < 0.5:
        spec["layers"] += [{"type": "flatten"}, {"type": "linear", "out_features": rng.randint(1, 5)}]
    return spec


def module_at(model, path):
    m = model
    for part in path.split("."):
        m = m[int(part)] if part.isdigit() else getattr(m, part)
    return m


def module_or_none(model, path):
    try:
        return module_at(model, path)
    except (AttributeError, IndexError):
        return None


def owned(model, path):
    """Parameters of the module or nn.Parameter at a service path (a view or merge owns none), as
    the model's named_parameters() names them: a tensor two modules share (GPT-2's tied
    lm_head) is the first one's."""
    return sum(p.numel() for name, p in model.named_parameters() if name == path or name.startswith(path + "."))


def spec_paths(spec):
    if "graph" in spec:
        out = []
        for n in spec["graph"]["nodes"]:
            out.append(n["name"])
            if n["type"] == "residual":
                out += paths(n["body"], n["name"] + ".body.")
        return out
    return paths(spec["layers"])


def paths(layers, prefix=""):
    out = []
    for i, spec in enumerate(layers):
        p = f"{prefix}{i}"
        out.append(p)
        if spec["type"] == "residual":
            out += paths(spec["body"], p + ".body.")
    return out


def token_ids(spec, batch, gen):
    """Random token ids; with a padding_idx, the padding token is the first token of the first
    sample (so that its row's zero gradient is seen)."""
    first = spec["graph"]["nodes"][0] if "graph" in spec else spec["layers"][0]
    ids = torch.randint(0, first["num_embeddings"], (batch, *spec["input_shape"]), generator=gen)
    if first.get("padding_idx") is not None:
        ids[0, 0] = first["padding_idx"]
    return ids


def check_complexity(url, spec, model, x):
    problems = []
    status, resp = post(url + "/v1/complexity", {"model": spec, "profile": "torch_flop_counter", "verify": True, "batch_size": x.shape[0]})
    if status != 200:
        return [f"complexity: status {status}: {resp}"]
    # float32, as a model runs (in float64 PyTorch runs nn.LSTM step by step, and counts it),
    # with autograd on, as FlopCounterMode is used (under torch.no_grad() an eval-mode
    # nn.MultiheadAttention takes its fused fast path, which FlopCounterMode does not count)
    counter = FlopCounterMode(display=False)
    with counter:
        model.float()(x if x.dtype == torch.long else x.float())
    model.double()
    per = {}
    root = type(model).__name__ + "."
    for name, ops in counter.get_flop_counts().items():
        if name.startswith(root):
            per[name[len(root):]] = sum(ops.values())
    if resp["totals"]["flops"] != counter.get_total_flops():
        problems.append(f"total flops {resp['totals']['flops']} != FlopCounterMode {counter.get_total_flops()}")
    if resp["totals"]["params"] != sum(p.numel() for p in model.parameters()):
        problems.append(f"params {resp['totals']['params']} != {sum(p.numel() for p in model.parameters())}")
    shapes = {}
    # a residual's empty shortcut row has no module, nor do views, merges and parameters
    rows = [r for r in resp["rows"] if not r["path"].endswith(".shortcut")]
    modules = [r for r in rows if isinstance(module_or_none(model, r["path"]), nn.Module)]
    hooks = [module_at(model, r["path"]).register_forward_hook(lambda m, i, o, p=r["path"]: shapes.__setitem__(p, list(o.shape[1:]))) for r in modules]
    with torch.no_grad():
        model(x[:1])
    for h in hooks:
        h.remove()
    for row in rows:
        if row["flops"] != per.get(row["path"], 0) and not row["subtotal"]:
            problems.append(f"row {row['path']} ({row['type']}) flops {row['flops']} != FlopCounterMode {per.get(row['path'], 0)}")
        if row["params"] != owned(model, row["path"]):
            problems.append(f"row {row['path']} params {row['params']} != {owned(model, row['path'])}")
        if row["path"] in shapes and row["output_shape"] != shapes[row["path"]]:
            problems.append(f"row {row['path']} shape {row['output_shape']} != {shapes[row['path']]}")
    if not resp.get("verification", {}).get("agrees"):
        problems.append(f"libtorch verification: {resp.get('verification')}")
    # the conventions' totals: hand formulas (MACs per row, see the README)
    status, conv = post(url + "/v1/complexity", {"model": spec, "conventions": {"flops": "mac"}, "verify": False})
    want = 0
    for row in conv["rows"]:
        if row["subtotal"]:
            continue
        m = module_or_none(model, row["path"])
        if isinstance(m, nn.Conv2d):
            want += (m.weight.numel() // m.out_channels) * m.out_channels * row["output_shape"][1] * row["output_shape"][2]
        elif isinstance(m, SDPA):
            want += m.macs
        elif isinstance(m, MatMul):
            want += m.k * math.prod(row["output_shape"])
        elif isinstance(m, nn.Linear):
            want += row["output_shape"][0] * m.in_features * m.out_features if len(row["output_shape"]) == 2 else m.in_features * m.out_features
        elif isinstance(m, nn.MultiheadAttention):
            # queries and outputs L tokens, keys and values Lk (L for self-attention)
            length, e = row["output_shape"]
            lk = getattr(m, "lk", length)
            want += (2 * length + 2 * lk) * e * e + 2 * length * lk * e
        elif isinstance(m, (nn.LSTM, nn.GRU, nn.RNN)):
            gates = {"LSTM": 4, "GRU": 3, "RNN": 1}[type(m).__name__]
            dirs = 2 if m.bidirectional else 1
            length = row["output_shape"][0]
            for layer in range(m.num_layers):
                inp = m.input_size if layer == 0 else m.hidden_size * dirs
                want += dirs * length * gates * m.hidden_size * (inp + m.hidden_size)
    if conv["totals"]["flops"] != want:
        problems.append(f"MACs {conv['totals']['flops']} != hand count {want}")
    return problems


def oracle_rf(spec, model, path, index, channel):
    """Input tokens (and features) with a non-zero gradient of one unit, through the real
    module in float64: with respect to the embedding's output, or the input sequence."""
    gen = torch.Generator().manual_seed(7)
    captured = {}
    target = module_at(model, path)
    ids = spec.get("input_dtype") == "int64"
    if ids:
        leaf = {}

        def as_leaf(m, i, o):
            leaf["x"] = o.detach().requires_grad_()
            return leaf["x"]

        # registered first: the unit's hook (on the embedding itself too) sees the leaf
        h2 = (model.wte if isinstance(model, GPT) else model[0]).register_forward_hook(as_leaf)
        hook = target.register_forward_hook(lambda m, i, o: captured.__setitem__("y", o))
        model(token_ids(spec, 1, gen))
        h2.remove()
        x = leaf["x"]
    else:
        hook = target.register_forward_hook(lambda m, i, o: captured.__setitem__("y", o))
        x = torch.randn(1, *spec["input_shape"], dtype=torch.float64, generator=gen, requires_grad=True)
        model(x)
    hook.remove()
    y = captured["y"][0]
    if y.dim() == 3:
        col = y[:, index[0], index[1]]
        unit = col.sum() if channel is None else col[channel]
    elif y.dim() == 2:
        unit = y[index[0]].sum() if channel is None else y[index[0], channel]
    else:
        unit = y[index[0]]
    (g,) = torch.autograd.grad(unit, x, allow_unused=True)
    nz = (g[0] != 0) if g is not None else torch.zeros(x.shape[1:], dtype=torch.bool)

    def ranges(mask):
        out = []
        for i, v in enumerate(mask):
            if v:
                if out and out[-1][1] == i - 1:
                    out[-1][1] = i
                else:
                    out.append([i, i])
        return out

    if nz.dim() == 3:
        return {"input_channels": ranges(nz.any(2).any(1).tolist()), "input_rows": ranges(nz.any(2).any(0).tolist()),
                "input_cols": ranges(nz.any(1).any(0).tolist())}
    if ids:
        return {"input_tokens": ranges(nz.tolist())} if nz.dim() == 1 else {"input_tokens": ranges(nz.any(1).tolist())}
    return {"input_tokens": ranges(nz.any(1).tolist()), "input_features": ranges(nz.any(0).tolist())}


def autograd_sees_less(spec):
    """Whether autograd through the real module proves less than the network's structure (which
    the service answers for; its probe still checks the structure): a ReLU RNN's dead units have
    exactly zero gradients for some weights; a layernorm or softmax over one feature (a crop to
    one feature before it) outputs its bias (1) whatever the input; cross-attention on a learned
    memory of one token has a softmax over one key, 1 whatever the query."""
    nodes = {n["name"]: n for n in spec.get("graph", {}).get("nodes", [])}
    one_key = any(n["type"] == "multihead_attention" and len(n.get("inputs", [])) > 1
                  and nodes.get(n["inputs"][1], {}).get("type") == "parameter" and nodes[n["inputs"][1]]["shape"][0] == 1
                  for n in nodes.values())
    one_feature = any(layer["type"] == "narrow" and layer["dim"] in (2, -1) and layer["length"] == 1 for layer in spec.get("layers", []))
    one_feature = one_feature or '"normalized_shape": [1]' in json.dumps(spec)  # a GPT one feature wide
    return '"relu"' in json.dumps(spec) or one_feature or one_key


def check_rf(url, spec, model, rng):
    all_paths = [p for p in spec_paths(spec) if isinstance(module_or_none(model, p), nn.Module)]
    path = rng.choice(all_paths)
    # a layer at or after a top-level narrow (a crop of the tokens or features), half the time
    crops = [i for i, layer in enumerate(spec.get("layers", [])) if layer["type"] == "narrow"]
    if crops and rng.random() < 0.5 and str(crops[0]) in all_paths:
        path = rng.choice([p for p in all_paths if "." not in p and int(p) >= crops[0]])
    shapes = {}
    for p in all_paths:
        module_at(model, p).register_forward_hook(lambda m, i, o, p=p: shapes.__setitem__(p, list(o.shape[1:])))
    ids = spec.get("input_dtype") == "int64"
    x = token_ids(spec, 1, torch.Generator().manual_seed(1)) if ids else torch.zeros(1, *spec["input_shape"], dtype=torch.float64)
    with torch.no_grad():
        model(x)
    shape = shapes[path]
    index = [rng.randrange(shape[1]), rng.randrange(shape[2])] if len(shape) == 3 else [rng.randrange(shape[0])]
    # a layernorm's or softmax's features sum to a constant (and so do a dropout's or a
    # mean's after one): their sum has no gradient, so a unit there is one feature
    constant_sum = any(f'"{t}"' in json.dumps(spec) for t in ("layernorm", "softmax"))
    if len(shape) == 3:
        channel = rng.randrange(shape[0]) if rng.random() < 0.4 else None
    else:
        channel = rng.randrange(shape[1]) if len(shape) == 2 and (constant_sum or rng.random() < 0.4) else None
    position = {"layer": path, "index": index}
    if channel is not None:
        position["channel"] = channel
    status, resp = post(url + "/v1/receptive-field", {"model": spec, "position": position, "verify": True})
    for m in model.modules():
        m._forward_hooks.clear()
    if status != 200:
        return [f"rf: status {status}: {resp}"]
    problems = []
    got = resp["position"]
    # a softmax over one key (one token; row 0 under a causal mask) outputs 1 whatever its input
    nodes = {n["name"]: n for n in spec.get("graph", {}).get("nodes", [])}
    # (a GPT's attention nodes are named "attn.qt", ...)
    pre = "attn." if isinstance(model, GPT) else ""
    one_key = path in (pre + "attn", pre + "drop") and pre + "qt" in nodes and (spec["input_shape"][0] == 1 or (pre + "masked" in nodes and index[0] == 0))
    want = {} if autograd_sees_less(spec) or one_key else oracle_rf(spec, model, path, index, channel)
    for key, w in want.items():
        if got.get(key) != w:
            problems.append(f"rf {path} index {index} channel {channel}: {key} service {got.get(key)} != autograd {w}")
    if not resp["verification"].get("agrees"):
        problems.append(f"rf {path}: the service's probe disagrees: {resp['verification']}")
    # the per-layer kind must cover the exact set of a unit: its index along the axis that holds
    # the tokens (attention's heads written by hand hold them on another axis than the first;
    # a unit of a three-axis tensor is (channel, index[0], index[1]), without a channel the sum
    # over axis 0)
    row = next(r for r in resp["layers"] if r["path"] == path)
    toks = got.get("input_tokens") or []
    coords = [channel, *index] if len(shape) == 3 else [index[0], channel]
    t = coords[(row.get("tokens") or {}).get("axis", 0)] if row.get("tokens") else None
    if t is not None and row["kind"] == "token" and toks and toks != [[t, t]]:
        problems.append(f"rf {path}: kind token (axis {row['tokens'].get('axis', 0)}, i = {t}) but the unit reads {toks}")
    if t is not None and row["kind"] == "causal" and toks and toks[-1][1] > t:
        problems.append(f"rf {path}: kind causal (axis {row['tokens'].get('axis', 0)}, i = {t}) but the unit reads {toks}")
    if t is not None and row["kind"] == "anticausal" and toks and toks[0][0] < t:
        problems.append(f"rf {path}: kind anticausal (axis {row['tokens'].get('axis', 0)}, i = {t}) but the unit reads {toks}")
    return problems


def check_kinds(url, spec, rng):
    """Every layer whose kind is token, causal or anticausal against the exact set of one random
    unit of it (the exact sets are checked against autograd in check_rf): its index along the
    axis that holds the tokens (tokens.axis; attention's heads written by hand) bounds the
    tokens it reads."""
    status, resp = post(url + "/v1/receptive-field", {"model": spec, "verify": False})
    if status != 200:
        return [f"kinds: status {status}: {resp}"]
    problems = []
    for row in resp["layers"]:
        if row["kind"] not in ("token", "causal", "anticausal"):
            continue
        shape = row["output_shape"]
        coords = [rng.randrange(n) for n in shape]
        position = {"layer": row["path"], "index": coords[1:] if len(shape) == 3 else coords[:1]}
        if len(shape) >= 2:
            position["channel"] = coords[0] if len(shape) == 3 else coords[1]
        status, got = post(url + "/v1/receptive-field", {"model": spec, "position": position, "verify": False})
        if status != 200:
            problems.append(f"kinds: {position}: status {status}: {got}")
            continue
        t = coords[row["tokens"].get("axis", 0)]
        toks = got["position"].get("input_tokens") or []
        wrong = {"token": toks and toks != [[t, t]], "causal": toks and toks[-1][1] > t,
                 "anticausal": toks and toks[0][0] < t}[row["kind"]]
        if wrong:
            problems.append(f"kinds: {row['path']} is {row['kind']} (axis {row['tokens'].get('axis', 0)}) but unit {coords} reads {toks}")
    return problems


def check_gradients(url, spec, model, rng):
    batch = rng.randint(1, 3)
    gen = torch.Generator().manual_seed(rng.randrange(1 << 30))
    ids = spec.get("input_dtype") == "int64"
    x = token_ids(spec, batch, gen) if ids else torch.randn(batch, *spec["input_shape"], dtype=torch.float64, generator=gen)
    params = {}
    service_paths = spec_paths(spec)
    for name, p in model.named_parameters():
        if name in service_paths:
            # a parameter node: the tensor itself
            params[name] = {"weight": p.detach().flatten().tolist()}
            continue
        # the owning layer: the longest service path the name starts with
        mod_path = max((q for q in service_paths if name.startswith(q + ".")), key=len)
        rest = name[len(mod_path) + 1:]
        if isinstance(module_at(model, mod_path), nn.LayerNorm):
            continue  # PyTorch's init (ones, zeros): the service's too
        params.setdefault(mod_path, {})[rest] = p.detach().flatten().tolist()
    with torch.no_grad():
        out = model(x).flatten(1)
    # mean squared error against random targets (a sum of a layernorm's or softmax's outputs
    # is a constant, whose gradients are rounding noise)
    targets = torch.randn(out.shape, dtype=torch.float64, generator=gen)
    body = {"model": spec, "parameters": params, "inputs": {"values": x.flatten().tolist()}, "dtype": "float64",
            "objective": {"type": "mse", "targets": targets.tolist()}}
    status, resp = post(url + "/v1/gradient-diagnostics", body)
    weighted = (nn.Linear, nn.Embedding, nn.MultiheadAttention, nn.LSTM, nn.GRU, nn.RNN)
    if status == 422 and not any(isinstance(m, weighted) for m in model.modules()):
        return []  # nothing to diagnose: the service says so
    if status != 200:
        return [f"gradients: status {status}: {resp}"]
    model.zero_grad()
    y = model(x).flatten(1)
    ((y - targets) ** 2).mean().backward()
    grads = dict(model.named_parameters())
    problems = []
    scale = max(p.grad.norm().item() for p in model.parameters() if p.grad is not None)

    def close(a, b):
        return abs(a - b) <= 1e-6 * max(abs(a), abs(b)) + 1e-12 * scale

    for row in resp["layers"]:
        path = row["path"]
        wname = path + ".weight" if path + ".weight" in grads else path
        if wname not in grads:
            problems.append(f"gradients: row {path} names no PyTorch parameter")
            continue
        want = grads[wname].grad.norm().item()
        if not close(row["weight_grad"]["frobenius"], want):
            problems.append(f"gradients: {wname} {row['weight_grad']['frobenius']} != autograd {want}")
        bname = wname.replace("weight", "bias")
        if row["bias_grad"] is not None:
            want = grads[bname].grad.norm().item()
            if not close(row["bias_grad"]["frobenius"], want):
                problems.append(f"gradients: {bname} {row['bias_grad']['frobenius']} != autograd {want}")
        elif bname in grads and bname != wname:
            problems.append(f"gradients: row {path} reports no bias but PyTorch has {bname}")
    # a layernorm's weight and bias are beside the table, by PyTorch's name
    others = {o["path"]: o for o in resp["other_parameters"]}
    for name, p in grads.items():
        owner = name.rsplit(".", 1)[0]
        if not isinstance(module_at(model, owner), nn.LayerNorm) or p.grad is None:
            continue
        o = others.pop(name, None)
        if o is None:
            problems.append(f"gradients: PyTorch's {name} is not in other_parameters")
        elif not close(o["grad"]["frobenius"], p.grad.norm().item()):
            problems.append(f"gradients: {name} {o['grad']['frobenius']} != autograd {p.grad.norm().item()}")
    # a tied lm_head's own bias (its weight is wte's)
    for name in [n for n in others if n in grads and n.endswith(".bias") and n[:-5] + ".weight" not in grads]:
        o = others.pop(name)
        if not close(o["grad"]["frobenius"], grads[name].grad.norm().item()):
            problems.append(f"gradients: {name} {o['grad']['frobenius']} != autograd {grads[name].grad.norm().item()}")
    if others:
        problems.append(f"gradients: other_parameters that name no layernorm tensor: {sorted(others)}")
    reported = {r["path"] if r["path"] + ".weight" not in grads else r["path"] + ".weight" for r in resp["layers"]}
    for name in grads:
        if "weight" in name and name not in reported and not isinstance(module_at(model, name.rsplit(".", 1)[0]), nn.LayerNorm):
            if not any(name == r or name.startswith(r + ".") for r in reported):
                problems.append(f"gradients: PyTorch's {name} has no row")
    return problems


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("url")
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--seed", type=int, default=5)
    ap.add_argument("--heads", action="store_true", help="only multi-head attention written by hand")
    ap.add_argument("--gpt", action="store_true", help="only whole nanoGPTs (position embeddings, tied heads)")
    a = ap.parse_args()
    rng = random.Random(a.seed)
    torch.manual_seed(a.seed)
    failures = 0
    for case in range(a.n):
        if a.heads:
            spec, model = random_heads_graph(rng)
        elif a.gpt or case % 16 == 9:
            spec, model = random_gpt_graph(rng)
        elif case % 8 == 5:
            spec, model = random_cross_graph(rng)
        elif case % 8 == 7:
            spec, model = random_matmul_graph(rng) if case % 16 == 7 else random_heads_graph(rng)
        elif case % 4 == 3:
            spec, model = random_patch_graph(rng)
        else:
            spec = random_spec(rng)
            model, _ = build(spec["layers"], list(spec["input_shape"]))
        shape = list(spec["input_shape"])
        model = model.double().eval()
        ids = spec.get("input_dtype") == "int64"
        x = token_ids(spec, 2, torch.Generator().manual_seed(case)) if ids else torch.randn(2, *shape, dtype=torch.float64)
        problems = check_complexity(url=a.url, spec=spec, model=model, x=x)
        problems += check_rf(a.url, spec, model, rng)
        if "graph" in spec:
            problems += check_kinds(a.url, spec, rng)
        problems += check_gradients(a.url, spec, model, rng)
        problems += check_profiles(a.url, spec, model, x)
        if problems:
            failures += 1
            print(f"case {case} (seed {a.seed}): {json.dumps(spec)}")
            for p in problems[:8]:
                print("  " + p)
    print(f"sequence oracle: {a.n - failures} passed, {failures} failed")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
