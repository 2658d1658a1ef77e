"""Builds torch.nn modules from a layerscope layer spec, independently of the Rust service.

Module names mirror the service's layer paths: top-level layers are `Sequential.<i>`, concat
branches `<i>.branches.<b>.<k>`, residual parts `<i>.body.<k>` and `<i>.shortcut.<k>`, so that
torch.utils.flop_counter's per-module counts can be matched row by row.
"""
import math
import random

import torch
import torch.nn as nn
import torch.nn.functional as F


def pair(v):
    return tuple(v) if isinstance(v, list) else (v, v)


class Concat(nn.Module):
    def __init__(self, branches):
        super().__init__()
        self.branches = nn.ModuleList(branches)

    def forward(self, x):
        return torch.cat([b(x) for b in self.branches], 1)


class Residual(nn.Module):
    def __init__(self, body, shortcut):
        super().__init__()
        self.body = body
        self.shortcut = shortcut

    def forward(self, x):
        return self.body(x) + self.shortcut(x)


class SummingPool(nn.Module):
    """A pooling window that sums its inputs (the receptive-field probe's stand-in for max and
    average pooling), built on F.unfold. The output size is taken from the real pooling layer."""

    def __init__(self, real, kernel, stride, padding, dilation):
        super().__init__()
        self.real, self.k, self.s, self.p, self.d = real, kernel, stride, padding, dilation

    def forward(self, x):
        with torch.no_grad():
            oh, ow = self.real(x.detach()).shape[-2:]
        n, c, h, w = x.shape
        extra = []
        for size, k, s, p, d, o in zip((h, w), self.k, self.s, self.p, self.d, (oh, ow)):
            need = (o - 1) * s + d * (k - 1) + 1
            extra.append(max(0, need - (size + 2 * p)))
        xp = F.pad(x, (self.p[1], self.p[1] + extra[1], self.p[0], self.p[0] + extra[0]))
        cols = F.unfold(xp, self.k, dilation=self.d, stride=self.s)
        hh = (xp.shape[2] - self.d[0] * (self.k[0] - 1) - 1) // self.s[0] + 1
        ww = (xp.shape[3] - self.d[1] * (self.k[1] - 1) - 1) // self.s[1] + 1
        out = cols.view(n, c, self.k[0] * self.k[1], hh, ww).sum(2)
        return out[:, :, :oh, :ow]


class SummingPool3d(nn.Module):
    """The probe's stand-in for a 3-D max or average pool: the sum over each window (a depthwise
    all-ones conv3d with the pool's stride and dilation on the zero-padded input, padded on past
    the end as far as a ceil-mode window reaches), cut to the real pool's output size."""

    def __init__(self, real, kernel, stride, padding, dilation):
        super().__init__()
        self.real, self.k, self.s, self.p, self.d = real, kernel, stride, padding, dilation

    def forward(self, x):
        with torch.no_grad():
            out = self.real(x.detach()).shape[-3:]
        pads = []
        for size, k, s, p, d, o in reversed(list(zip(x.shape[-3:], self.k, self.s, self.p, self.d, out))):
            need = (o - 1) * s + d * (k - 1) + 1
            pads += [p, p + max(0, need - (size + 2 * p))]
        xp = F.pad(x, tuple(pads))
        c = x.shape[1]
        w = torch.ones(c, 1, *self.k, dtype=x.dtype)
        y = F.conv3d(xp, w, stride=self.s, dilation=self.d, groups=c)
        return y[:, :, :out[0], :out[1], :out[2]]


def triple(v):
    return tuple(v) if isinstance(v, list) else (v, v, v)


class Lift(nn.Module):
    """The probe's stand-in for a 1-D pooling: a module of the 2-D form on [N, C, 1, L]."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(x.unsqueeze(2)).squeeze(2)


def single(v):
    return v[0] if isinstance(v, list) else v


class Functional(nn.Module):
    """A layer the model calls as torch.nn.functional in its forward: no module of a type that
    module-hooking tools (ptflops) know, just the functional call."""

    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


class FunctionalPrelu(nn.Module):
    """F.prelu(x, weight) in a model's forward: the slopes are the model's parameter, the call
    is functional (ptflops's F.prelu hook alone sees it)."""

    def __init__(self, m):
        super().__init__()
        self.weight = m.weight

    def forward(self, x):
        return F.prelu(x, self.weight)


class Narrow(nn.Module):
    """x.narrow(dim, start, length): channels start..start+length (a part of x.chunk(k, 1)),
    or rows, columns or slices (a crop)."""

    def __init__(self, dim, start, length):
        super().__init__()
        self.dim, self.start, self.length = dim, start, length

    def forward(self, x):
        return x.narrow(self.dim, self.start, self.length)


class Scale(nn.Module):
    """x * factor (attention's 1/sqrt(d) by hand)."""

    def __init__(self, factor):
        super().__init__()
        self.factor = factor

    def forward(self, x):
        return x * self.factor


def channel_pick(rng, shape):
    """nn.ChannelShuffle over a divisor of the channels (an image or a volume), or a narrow
    to some of them; None when the channels allow neither."""
    c = shape[0]
    groups = [g for g in (2, 3, 4, c) if 1 < g <= c and c % g == 0 and (g < c or rng.random() < 0.2)]
    if len(shape) >= 2 and rng.random() < 0.35:
        # a crop along a spatial axis, a signal's positions or a sequence's features (PyTorch's
        # dim, negative now and then)
        axis = rng.randrange(1, len(shape))
        n = shape[axis]
        if n >= 2:
            start = rng.randrange(n - 1)
            dim = rng.choice([axis + 1, axis - len(shape)])
            return {"type": "narrow", "dim": dim, "start": start, "length": rng.randint(1, n - start)}
    if groups and len(shape) >= 3 and rng.random() < 0.6:
        return {"type": "channel_shuffle", "groups": rng.choice(groups)}
    if c >= 2:
        start = rng.randrange(c - 1)
        return {"type": "narrow", "dim": 1, "start": start, "length": rng.randint(1, c - start)}
    return None


def prelu(rng, shape):
    """nn.PReLU with one slope or one per channel (axis 0 of the sample), at PyTorch's init or
    another; the arguments left out now and then (PyTorch's defaults)."""
    spec = {"type": "prelu"}
    if rng.random() < 0.7:
        spec["num_parameters"] = rng.choice([1, shape[0]])
    if rng.random() < 0.5:
        spec["init"] = rng.choice([0.25, -0.5, 0.0, 1.5, round(rng.uniform(-1, 2), 3)])
    return spec


class SubclassConv1d(nn.Conv1d):
    pass


class SubclassConv2d(nn.Conv2d):
    pass


class SubclassConv3d(nn.Conv3d):
    """As torchvision's Conv3DSimple: nn.Conv3d under another type."""


def functional_form(m):
    """The functional call of an activation or pooling module."""
    if isinstance(m, nn.ReLU):
        return lambda x: F.relu(x)
    if isinstance(m, nn.ReLU6):
        return lambda x: F.relu6(x)
    if isinstance(m, nn.LeakyReLU):
        return lambda x: F.leaky_relu(x, m.negative_slope)
    if isinstance(m, nn.GELU):
        return lambda x: F.gelu(x)
    if isinstance(m, nn.SiLU):
        return lambda x: F.silu(x)
    if isinstance(m, (nn.Sigmoid, nn.Tanh, nn.Hardswish, nn.Hardsigmoid, nn.Mish, nn.Identity)):
        return {nn.Sigmoid: torch.sigmoid, nn.Tanh: torch.tanh, nn.Hardswish: F.hardswish, nn.Hardsigmoid: F.hardsigmoid,
                nn.Mish: F.mish, nn.Identity: lambda x: x}[type(m)]
    # the 1-D and 2-D pools: the functional of the module's own type, looked up when called
    # (ptflops replaces torch.nn.functional's functions with counting ones while it runs)
    name = {nn.MaxPool1d: "max_pool1d", nn.MaxPool2d: "max_pool2d", nn.AvgPool1d: "avg_pool1d", nn.AvgPool2d: "avg_pool2d",
            nn.AdaptiveAvgPool1d: "adaptive_avg_pool1d", nn.AdaptiveAvgPool2d: "adaptive_avg_pool2d",
            nn.AdaptiveMaxPool1d: "adaptive_max_pool1d", nn.AdaptiveMaxPool2d: "adaptive_max_pool2d",
            nn.MaxPool3d: "max_pool3d", nn.AvgPool3d: "avg_pool3d", nn.AdaptiveAvgPool3d: "adaptive_avg_pool3d",
            nn.AdaptiveMaxPool3d: "adaptive_max_pool3d"}.get(type(m))
    if isinstance(m, (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d)):
        return lambda x: getattr(F, name)(x, m.kernel_size, m.stride, m.padding, m.dilation, ceil_mode=m.ceil_mode)
    if isinstance(m, (nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d)):
        return lambda x: getattr(F, name)(x, m.kernel_size, m.stride, m.padding, ceil_mode=m.ceil_mode, count_include_pad=m.count_include_pad)
    if name is not None:
        return lambda x: getattr(F, name)(x, m.output_size)
    if isinstance(m, nn.Upsample):
        return lambda x: F.interpolate(x, size=m.size, scale_factor=m.scale_factor, mode=m.mode, align_corners=m.align_corners)
    raise ValueError(f"no functional form for {m}")


class CoupledSum(nn.Module):
    """The probe's stand-in for a normalization or softmax: each element plus the sum of the
    elements its statistics read (taken from the PyTorch module's own definition). The real
    module would do: its outputs sum to zero over a group, so a later sum over the group would
    cancel exactly and hide dependences that generic parameters have."""

    def __init__(self, real, rank):
        super().__init__()
        self.real, self.rank = real, rank

    def forward(self, x):
        n, c = x.shape[:2]
        r = self.real
        if isinstance(r, nn.GroupNorm):
            g = x.reshape(n, r.num_groups, -1)
            return (g + g.sum(2, keepdim=True)).reshape(x.shape)
        if isinstance(r, (nn.InstanceNorm2d, nn.InstanceNorm3d)):
            return x + x.sum(tuple(range(2, x.dim())), keepdim=True)
        if isinstance(r, nn.LayerNorm):
            dims = tuple(range(x.dim() - len(r.normalized_shape), x.dim()))
            return x + x.sum(dims, keepdim=True)
        return x + x.sum(r.dim, keepdim=True)


class Mean(nn.Module):
    """x.mean(dim, keepdim), as a model's forward writes it."""

    def __init__(self, dim, keepdim):
        super().__init__()
        self.dim, self.keepdim = dim, keepdim

    def forward(self, x):
        return x.mean(self.dim, keepdim=self.keepdim)


class Reshape(nn.Module):
    """x.reshape(batch, *shape), as a model's forward writes it."""

    def __init__(self, shape):
        super().__init__()
        self.shape = tuple(shape)

    def forward(self, x):
        return x.reshape(x.shape[0], *self.shape)


class Add(nn.Module):
    def forward(self, *xs):
        out = xs[0]
        for x in xs[1:]:
            out = out + x
        return out


class Mul(nn.Module):
    """The product; in the probe, the sum. The probe has no biases, so a factor can be exactly
    zero where the real network's factor is a bias (a window entirely in the padding), and a
    product would hide a dependence that the network has for generic parameters; the service
    defines dependence for generic parameters, and so does this oracle."""

    def __init__(self, probe=False):
        super().__init__()
        self.probe = probe

    def forward(self, *xs):
        out = xs[0]
        for x in xs[1:]:
            out = out + x if self.probe else out * x
        return out


class Cat(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.dim = dim

    def forward(self, *xs):
        return torch.cat(xs, self.dim)


class GraphNet(nn.Module):
    """The graph form: one submodule per node, registered under the node's name, run in an order
    where every node follows its inputs; returns the outputs (a tuple when there are several)."""

    def __init__(self, graph, in_shape, probe=False):
        super().__init__()
        self.reads, self.outputs = {}, graph.get("outputs") or [graph["nodes"][-1]["name"]]
        shapes, order, prev = {"input": list(in_shape)}, [], "input"
        nodes = []
        for n in graph["nodes"]:
            nodes.append((n, n.get("inputs") or [prev]))
            prev = n["name"]
        while nodes:
            for k, (n, ins) in enumerate(nodes):
                if all(i in shapes for i in ins):
                    break
            else:
                raise ValueError("cycle")
            nodes.pop(k)
            t = n["type"].replace("_", "").lower()
            if t == "add":
                m = Add()
            elif t == "mul":
                m = Mul(probe)
            elif t == "concat" and "branches" not in n:
                m = Cat(n.get("dim", 1))
            else:
                m, _ = build_layer(n, shapes[ins[0]], probe)
            # module names cannot hold "." (torchvision-style node names do): a key per node
            self.add_module(self.key(n["name"]), m)
            self.reads[n["name"]] = ins
            order.append(n["name"])
            with torch.no_grad():
                shapes[n["name"]] = list(m(*[torch.zeros(1, *shapes[i], dtype=torch.float64) for i in ins]).shape[1:])
        self.order, self.shapes = order, shapes

    @staticmethod
    def key(name):
        return name.replace(".", "__")

    def node_path(self, module_name):
        """A submodule's name (relative to this module) as the service's path."""
        head, _, rest = module_name.partition(".")
        name = next(n for n in self.reads if self.key(n) == head)
        return name + ("." + rest if rest else "")

    def module_at(self, path):
        """The module of a node path: a node's name, or a composite part inside one."""
        if path in self.reads:
            return getattr(self, self.key(path))
        name = max((n for n in self.reads if path.startswith(n + ".")), key=len)
        return module_at(getattr(self, self.key(name)), path[len(name) + 1:])

    def forward(self, x):
        vals = {"input": x}
        for name in self.order:
            vals[name] = getattr(self, self.key(name))(*[vals[i] for i in self.reads[name]])
        outs = tuple(vals[o] for o in self.outputs)
        return outs[0] if len(outs) == 1 else outs


def build_model(spec, probe=False):
    """The module of a spec in either form (no presets)."""
    if "graph" in spec:
        return GraphNet(spec["graph"], spec["input_shape"], probe)
    return build(spec["layers"], spec["input_shape"], probe)[0]


def build(layers, in_shape, probe=False):
    """Returns (module, out_shape). `probe` builds the receptive-field probe: positive weights,
    no biases, summing pools, identity activations/batchnorm."""
    mods = []
    shape = list(in_shape)
    for spec in layers:
        m, shape = build_layer(spec, shape, probe)
        mods.append(m)
    return nn.Sequential(*mods), shape


def out_shape(m, shape):
    with torch.no_grad():
        return list(m(torch.zeros(1, *shape, dtype=torch.float64)).shape[1:])


def positive_(t):
    with torch.no_grad():
        t.uniform_(0.5, 1.5)


def build_layer(spec, shape, probe):
    t = spec["type"].replace("_", "").lower()
    if t in ("conv1d", "conv2d", "conv3d"):
        # PyTorch's 1-D, 2-D and 3-D convolutions, sizes as ints or lists of one to three
        size = {"conv1d": single, "conv2d": pair, "conv3d": triple}[t]
        pad = spec.get("padding", 0)
        m = {"conv1d": nn.Conv1d, "conv2d": nn.Conv2d, "conv3d": nn.Conv3d}[t](
            shape[0], spec["out_channels"], size(spec["kernel_size"]), stride=size(spec.get("stride", 1)),
            padding=pad if isinstance(pad, str) else size(pad), dilation=size(spec.get("dilation", 1)),
            groups=spec.get("groups", 1), bias=spec.get("bias", True) and not probe,
            padding_mode=spec.get("padding_mode", "zeros")).double()
        if probe:
            positive_(m.weight)
    elif t in ("maxpool3d", "avgpool3d"):
        k, p = triple(spec["kernel_size"]), triple(spec.get("padding", 0))
        s_ = triple(spec.get("stride") or spec["kernel_size"])
        d = triple(spec.get("dilation", 1))
        ceil = spec.get("ceil_mode", False)
        if t == "maxpool3d":
            real = nn.MaxPool3d(k, s_, p, d, ceil_mode=ceil)
        else:
            real = nn.AvgPool3d(k, s_, p, ceil_mode=ceil, count_include_pad=spec.get("count_include_pad", True))
        m = SummingPool3d(real, k, s_, p, d) if probe else real
    elif t in ("adaptiveavgpool3d", "adaptivemaxpool3d"):
        o = spec["output_size"]
        o = tuple(o) if isinstance(o, list) else o
        # the probe sums every pooling window: an adaptive max pool's windows are the average's
        m = nn.AdaptiveAvgPool3d(o) if t == "adaptiveavgpool3d" or probe else nn.AdaptiveMaxPool3d(o)
    elif t in ("convtranspose1d", "convtranspose2d", "convtranspose3d"):
        size = {"convtranspose1d": single, "convtranspose2d": pair, "convtranspose3d": triple}[t]
        m = {"convtranspose1d": nn.ConvTranspose1d, "convtranspose2d": nn.ConvTranspose2d, "convtranspose3d": nn.ConvTranspose3d}[t](
            shape[0], spec["out_channels"], size(spec["kernel_size"]), stride=size(spec.get("stride", 1)),
            padding=size(spec.get("padding", 0)), output_padding=size(spec.get("output_padding", 0)),
            groups=spec.get("groups", 1), bias=spec.get("bias", True) and not probe,
            dilation=size(spec.get("dilation", 1))).double()
        if probe:
            positive_(m.weight)
    elif t in ("maxpool1d", "avgpool1d"):
        k = single(spec["kernel_size"])
        s_ = single(spec.get("stride") or spec["kernel_size"])
        p = single(spec.get("padding", 0))
        d = single(spec.get("dilation", 1))
        ceil = spec.get("ceil_mode", False)
        if probe:
            # the 2-D form's windows, summed, on a height of 1
            real = (nn.MaxPool2d((1, k), (1, s_), (0, p), (1, d), ceil_mode=ceil) if t == "maxpool1d" else
                    nn.AvgPool2d((1, k), (1, s_), (0, p), ceil_mode=ceil, count_include_pad=spec.get("count_include_pad", True)))
            m = Lift(SummingPool(real, (1, k), (1, s_), (0, p), (1, d)))
        elif t == "maxpool1d":
            m = nn.MaxPool1d(k, s_, p, d, ceil_mode=ceil)
        else:
            m = nn.AvgPool1d(k, s_, p, ceil_mode=ceil, count_include_pad=spec.get("count_include_pad", True))
    elif t in ("adaptiveavgpool1d", "adaptivemaxpool1d"):
        o = single(spec["output_size"])
        m = nn.AdaptiveAvgPool1d(o) if t == "adaptiveavgpool1d" or probe else nn.AdaptiveMaxPool1d(o)
    elif t == "upsample":
        sf = spec.get("scale_factor")
        m = nn.Upsample(size=tuple(spec["size"]) if isinstance(spec.get("size"), list) else spec.get("size"),
                        scale_factor=tuple(float(v) for v in sf) if isinstance(sf, list) else sf, mode=spec.get("mode", "nearest"),
                        align_corners=spec.get("align_corners"))
    elif t in ("groupnorm", "instancenorm2d", "instancenorm3d", "layernorm", "softmax"):
        if t == "groupnorm":
            real = nn.GroupNorm(spec["num_groups"], shape[0], eps=spec.get("eps", 1e-5), affine=spec.get("affine", True))
        elif t in ("instancenorm2d", "instancenorm3d"):
            cls = nn.InstanceNorm3d if t == "instancenorm3d" else nn.InstanceNorm2d
            real = cls(shape[0], eps=spec.get("eps", 1e-5), affine=spec.get("affine", False))
        elif t == "layernorm":
            ns = spec["normalized_shape"]
            real = nn.LayerNorm(ns, eps=spec.get("eps", 1e-5), elementwise_affine=spec.get("elementwise_affine", True), bias=spec.get("bias", True))
        else:
            real = nn.Softmax(dim=spec["dim"])
        m = CoupledSum(real, len(shape)) if probe else real.double().eval()
    elif t == "mean":
        m = Mean(spec["dim"], spec.get("keepdim", False))
    elif t in ("zeropad2d", "reflectionpad2d", "replicationpad2d", "circularpad2d"):
        pad = spec["padding"]
        m = {"zeropad2d": nn.ZeroPad2d, "reflectionpad2d": nn.ReflectionPad2d, "replicationpad2d": nn.ReplicationPad2d,
             "circularpad2d": nn.CircularPad2d}[t](
            tuple(pad) if isinstance(pad, list) else pad)
    elif t in ("zeropad3d", "reflectionpad3d", "replicationpad3d", "circularpad3d"):
        pad = spec["padding"]
        m = {"zeropad3d": nn.ZeroPad3d, "reflectionpad3d": nn.ReflectionPad3d, "replicationpad3d": nn.ReplicationPad3d,
             "circularpad3d": nn.CircularPad3d}[t](tuple(pad) if isinstance(pad, list) else pad)
    elif t in ("zeropad1d", "reflectionpad1d", "replicationpad1d", "circularpad1d"):
        pad = spec["padding"]
        m = {"zeropad1d": nn.ZeroPad1d, "reflectionpad1d": nn.ReflectionPad1d, "replicationpad1d": nn.ReplicationPad1d,
             "circularpad1d": nn.CircularPad1d}[t](tuple(pad) if isinstance(pad, list) else pad)
    elif t == "linear":
        m = nn.Linear(shape[0], spec["out_features"], bias=spec.get("bias", True) and not probe).double()
        if probe:
            positive_(m.weight)
    elif t in ("maxpool2d", "avgpool2d"):
        k = pair(spec["kernel_size"])
        s = pair(spec.get("stride") or spec["kernel_size"])
        p = pair(spec.get("padding", 0))
        d = pair(spec.get("dilation", 1))
        if t == "maxpool2d":
            real = nn.MaxPool2d(k, s, p, d, ceil_mode=spec.get("ceil_mode", False))
        else:
            real = nn.AvgPool2d(k, s, p, ceil_mode=spec.get("ceil_mode", False), count_include_pad=spec.get("count_include_pad", True))
        m = SummingPool(real, k, s, p, d) if probe else real
    elif t in ("adaptiveavgpool2d", "adaptivemaxpool2d"):
        o = spec["output_size"]
        o = tuple(o) if isinstance(o, list) else o
        # the probe sums every pooling window: an adaptive max pool's windows are the average's
        m = nn.AdaptiveAvgPool2d(o) if t == "adaptiveavgpool2d" or probe else nn.AdaptiveMaxPool2d(o)
    elif t in ("batchnorm2d", "batchnorm1d", "batchnorm3d"):
        if probe:
            m = nn.Identity()
        else:
            cls = {4: nn.BatchNorm3d, 3: nn.BatchNorm2d}.get(len(shape), nn.BatchNorm1d)
            m = cls(shape[0], eps=spec.get("eps", 1e-5), affine=spec.get("affine", True)).double().eval()
    elif t in ("relu", "relu6", "leakyrelu", "sigmoid", "tanh", "gelu", "silu", "hardswish", "hardsigmoid", "mish", "identity"):
        m = nn.Identity() if probe else {
            "relu": nn.ReLU, "relu6": nn.ReLU6, "leakyrelu": nn.LeakyReLU, "sigmoid": nn.Sigmoid,
            "tanh": nn.Tanh, "gelu": nn.GELU, "silu": nn.SiLU, "hardswish": nn.Hardswish,
            "hardsigmoid": nn.Hardsigmoid, "mish": nn.Mish, "identity": nn.Identity}[t]()
    elif t == "narrow":
        m = Narrow(spec["dim"], spec["start"], spec["length"])
    elif t == "scale":
        m = Scale(spec["factor"])
    elif t == "channelshuffle":
        m = nn.ChannelShuffle(spec["groups"])
    elif t == "prelu":
        m = nn.Identity() if probe else nn.PReLU(spec.get("num_parameters", 1), init=spec.get("init", 0.25)).double()
    elif t == "dropout":
        m = nn.Identity() if probe else nn.Dropout(spec.get("p", 0.5)).eval()
    elif t == "flatten":
        m = nn.Flatten(spec.get("start_dim", 1), spec.get("end_dim", -1))
    elif t in ("reshape", "view"):
        m = Reshape(spec["shape"])
    elif t == "unflatten":
        m = nn.Unflatten(spec["dim"], tuple(spec["unflattened_size"]))
    elif t == "concat":
        m = Concat([build(b, shape, probe)[0] for b in spec["branches"]])
    elif t == "residual":
        m = Residual(build(spec.get("body", []), shape, probe)[0], build(spec.get("shortcut", []), shape, probe)[0])
    else:
        raise ValueError(f"unknown layer type {spec['type']}")
    if spec.get("functional") and not probe and isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
        # a subclass of the module (torchvision's Conv3DSimple): the same layer, a type
        # module-hooking tools (ptflops) do not know
        m.__class__ = {nn.Conv1d: SubclassConv1d, nn.Conv2d: SubclassConv2d, nn.Conv3d: SubclassConv3d}[type(m)]
    elif spec.get("functional") and not probe and isinstance(m, nn.PReLU):
        m = FunctionalPrelu(m)
    elif spec.get("functional") and not probe:
        m = Functional(functional_form(m))
    return m, out_shape(m, shape)


# ---------------------------------------------------------------------------------------------
# Random specs


def rand_conv(rng, shape, same=False, stride=None):
    c = shape[0]
    out = rng.choice([1, 2, 3, 4, 6])
    groups = rng.choice([g for g in (1, 2, 3) if c % g == 0 and out % g == 0])
    k = [rng.randint(1, 7), rng.randint(1, 7)] if rng.random() < 0.3 else rng.randint(1, 7)
    spec = {"type": "conv2d", "out_channels": out, "kernel_size": k, "groups": groups, "bias": rng.random() < 0.7}
    if same:
        spec["padding"] = "same"
        spec["dilation"] = rng.randint(1, 2)
    else:
        spec["stride"] = stride or ([rng.randint(1, 3), rng.randint(1, 3)] if rng.random() < 0.2 else rng.randint(1, 3))
        spec["dilation"] = rng.choice([1, 1, 2, 3])
        spec["padding"] = rng.randint(0, 3)
    # padding that holds input values: the mirrored rows (smaller than the input), the edge row,
    # or the rows wrapped around from the other side
    if rng.random() < 0.2 and len(shape) == 3 and min(shape[1:]) > 4:
        spec["padding_mode"] = rng.choice(["reflect", "replicate", "circular"])
    return spec


def rand_transposed(rng, shape):
    """A transposed convolution (U-Net decoders, DCGAN generators): stride, padding,
    output_padding, dilation and groups drawn together so that PyTorch accepts them."""
    c = shape[0]
    out = rng.choice([1, 2, 3, 4, 6])
    groups = rng.choice([g for g in (1, 2, 3) if c % g == 0 and out % g == 0])
    k = [rng.randint(1, 5), rng.randint(1, 5)] if rng.random() < 0.3 else rng.randint(1, 5)
    s = [rng.randint(1, 3), rng.randint(1, 3)] if rng.random() < 0.3 else rng.randint(1, 3)
    d = rng.choice([1, 1, 2])
    smax = max(s) if isinstance(s, list) else s
    spec = {"type": "conv_transpose2d", "out_channels": out, "kernel_size": k, "stride": s, "dilation": d, "groups": groups,
            "padding": rng.randint(0, 2), "output_padding": rng.randint(0, max(0, min(smax, d) - 1)) if rng.random() < 0.5 else 0,
            "bias": rng.random() < 0.7}
    return spec


def linear_size(rng, n):
    """An output size for a linear upsampling of n positions whose source positions PyTorch's
    float arithmetic places the same in float32 and float64: a power-of-two multiple, or a size
    whose ratio to n, in lowest terms, has an even term (no position falls on an input row)."""
    for _ in range(20):
        m = rng.randint(max(1, n // 2), 3 * n + 2)
        g = math.gcd(n, m)
        if (n // g) % 2 == 0 or (m // g) % 2 == 0:
            return m
    return 2 * n


def rand_upsample(rng, shape):
    if rng.random() < 0.4:
        # bilinear: powers of two and other factors whose positions never fall on an input row
        # (1.5 and 2.5 step by 2/3 and 2/5, 6 by 1/6), any size of that kind, align_corners from
        # n+1 to 2n+1 or 4n+1 rows
        r = rng.random()
        if r < 0.4:
            return {"type": "upsample", "mode": "bilinear",
                    "scale_factor": rng.choice([1, 2, 4, [2, 1], [1, 4], [4, 2], 1.5, [2.5, 2], [6, 1.5]] + ([0.5] if min(shape[1:]) > 1 else []))}
        if r < 0.75 or min(shape[1:]) < 2:
            return {"type": "upsample", "mode": "bilinear", "size": [linear_size(rng, shape[1]), linear_size(rng, shape[2])],
                    "align_corners": False}
        return {"type": "upsample", "mode": "bilinear", "align_corners": True,
                "size": [(shape[1] - 1) * rng.choice([1, 2, 4]) + 1, (shape[2] - 1) * rng.choice([1, 2]) + 1]}
    if rng.random() < 0.5:
        f = rng.choice([1, 2, 3, [2, 1], [1, 3], 1.5, [0.75, 2.5], 1.7, [3, 0.5]])
        if min(shape[1:]) < 2:
            f = rng.choice([1, 2, 3, 1.5])
        return {"type": "upsample", "scale_factor": f, "mode": "nearest"}
    if rng.random() < 0.5:
        # any size, a non-multiple too
        return {"type": "upsample", "size": [rng.randint(max(1, shape[1] // 2), 3 * shape[1]), rng.randint(max(1, shape[2] // 2), 3 * shape[2])]}
    return {"type": "upsample", "size": [shape[1] * rng.randint(1, 3), shape[2] * rng.randint(1, 3)]}


def rand_norm(rng, shape):
    """A normalization or softmax over any of the axes PyTorch allows."""
    c = shape[0]
    kind = rng.choice(["groupnorm", "instancenorm2d", "layernorm", "softmax"])
    if kind == "groupnorm":
        return {"type": kind, "num_groups": rng.choice([g for g in (1, 2, 3, c) if c % g == 0]), "affine": rng.random() < 0.7}
    if kind == "instancenorm2d":
        return {"type": kind, "affine": rng.random() < 0.4}
    if kind == "layernorm":
        k = rng.randint(1, len(shape))
        spec = {"type": kind, "normalized_shape": shape[len(shape) - k:] if k > 1 or rng.random() < 0.5 else shape[-1]}
        if rng.random() < 0.3:
            spec["elementwise_affine"] = False
        elif rng.random() < 0.3:
            spec["bias"] = False
        return spec
    return {"type": kind, "dim": rng.choice([1, 2, 3, -1, -2, -3][:len(shape)] if len(shape) == 3 else [1, -1])}


def rand_reshape(rng, shape, single=False):
    """The same elements regrouped: rows folded into channels, a [C, W, H] reading of [C, H, W],
    a flatten undone by an unflatten, or (a decoder) features made an image by a linear layer."""
    c, h, w = shape
    r = rng.random() * (0.4 if single else 1)
    if r < 0.25:
        k = rng.choice([d for d in (2, 3) if h % d == 0] or [1])
        return [{"type": rng.choice(["reshape", "view"]), "shape": [c * k, -1, w]}]
    if r < 0.4:
        return [{"type": "reshape", "shape": [c, w, h]}]
    if r < 0.55:
        return [{"type": "flatten", "start_dim": 1, "end_dim": 2}, {"type": "unflatten", "dim": 1, "unflattened_size": [c, h]}]
    if r < 0.7:
        return [{"type": "flatten", "start_dim": rng.choice([2, -2])}, {"type": "unflatten", "dim": -1, "unflattened_size": [h, -1]}]
    c2, h2, w2 = rng.randint(1, 3), rng.randint(3, 8), rng.randint(3, 8)
    return [{"type": "reshape", "shape": [-1]}, {"type": "linear", "out_features": c2 * h2 * w2},
            {"type": "unflatten", "dim": 1, "unflattened_size": [c2, h2, w2]}]


def rand_pool(rng):
    k = rng.randint(1, 4)
    spec = {"type": rng.choice(["maxpool2d", "avgpool2d"]), "kernel_size": k, "stride": rng.randint(1, 3),
            "padding": rng.randint(0, k // 2), "ceil_mode": rng.random() < 0.4}
    if spec["type"] == "maxpool2d":
        spec["dilation"] = rng.choice([1, 1, 2])
    return spec


def rand_branch_layers(rng, shape, stride):
    """A branch that keeps the spatial size after an optional common stride."""
    first = {"type": "conv2d", "out_channels": rng.randint(1, 4), "kernel_size": 1, "stride": stride}
    layers = [first]
    if rng.random() < 0.6:
        layers.append({"type": "conv2d", "out_channels": rng.randint(1, 4), "kernel_size": rng.choice([1, 3, 5]), "padding": "same"})
    if rng.random() < 0.3:
        layers.append({"type": "maxpool2d", "kernel_size": 3, "stride": 1, "padding": 1})
    return layers


def with_scale(rng, layers):
    """A `scale` (x * factor: attention's 1/sqrt(d) by hand) inserted at a random place after
    the first layer, a third of the time: it keeps every shape."""
    if layers and rng.random() < 0.35:
        layers.insert(rng.randint(1, len(layers)), {"type": "scale", "factor": rng.choice([0.125, -2.0, 1 / 3, 7.5])})
    return layers


def random_spec(rng):
    c, h, w = rng.randint(1, 4), rng.randint(10, 40), rng.randint(10, 40)
    shape = [c, h, w]
    layers = []
    for _ in range(rng.randint(1, 6)):
        r = rng.random()
        if r < 0.4:
            cand = rand_conv(rng, shape, same=rng.random() < 0.2)
        elif r < 0.6:
            cand = rand_pool(rng)
        elif r < 0.65:
            # adaptive pools, windows that overlap or not, an axis kept (None) now and then
            out = [rng.choice([None, rng.randint(1, max(1, shape[1])), rng.randint(1, 4)]), rng.randint(1, max(1, shape[2]))]
            cand = {"type": rng.choice(["adaptive_avgpool2d", "adaptive_maxpool2d"]), "output_size": out}
        elif r < 0.7 and shape[1] * shape[2] < 2500:
            cand = rand_transposed(rng, shape) if rng.random() < 0.6 else rand_upsample(rng, shape)
        elif r < 0.72:
            cand = rand_norm(rng, shape) if rng.random() < 0.7 else {
                "type": rng.choice(["zeropad2d", "reflectionpad2d", "replicationpad2d", "circularpad2d"]),
                "padding": rng.choice([rng.randint(0, 3), [rng.randint(0, 3) for _ in range(4)]])}
        elif r < 0.75:
            cand = (prelu(rng, shape) if rng.random() < 0.5 else channel_pick(rng, shape) or prelu(rng, shape)) if rng.random() < 0.25 else {"type": rng.choice(["relu", "sigmoid", "batchnorm2d", "identity", "dropout", "tanh", "leaky_relu", "relu6", "gelu",
                                        "silu", "hardswish", "hardsigmoid", "mish"])}
        elif r < 0.81:
            cand = rand_reshape(rng, shape)
        elif r < 0.88:
            stride = rng.randint(1, 2)
            cand = {"type": "concat", "branches": [rand_branch_layers(rng, shape, stride) for _ in range(rng.randint(2, 3))]}
        else:
            k = rng.choice([1, 3, 5])
            s = rng.randint(1, 2)
            out = rng.randint(1, 4)
            body = [{"type": "conv2d", "out_channels": out, "kernel_size": k, "stride": s, "padding": k // 2}, {"type": "relu"},
                    {"type": "conv2d", "out_channels": out, "kernel_size": 3, "padding": 1}]
            shortcut = [] if (s == 1 and out == shape[0]) else [{"type": "conv2d", "out_channels": out, "kernel_size": 1, "stride": s}]
            cand = {"type": "residual", "body": body, "shortcut": shortcut}
        group = cand if isinstance(cand, list) else [cand]
        if group[0]["type"] in ("relu", "relu6", "leaky_relu", "prelu", "gelu", "silu", "sigmoid", "maxpool2d", "avgpool2d", "adaptive_avgpool2d",
                                "adaptive_maxpool2d", "upsample") and rng.random() < 0.3:
            group[0]["functional"] = True
        try:
            new_shape = shape
            for layer in group:
                _, new_shape = build_layer(layer, new_shape, False)
        except Exception:
            continue
        if len(new_shape) != 3 or new_shape[1] < 1 or new_shape[2] < 1:
            continue
        layers.extend(group)
        shape = new_shape
    if not layers:
        layers.append({"type": "relu"})
    r = rng.random()
    if r < 0.15:
        layers += [{"type": "flatten"}, {"type": "linear", "out_features": rng.randint(1, 5)}]
    elif r < 0.25:
        # a global average written as a mean, then a classifier
        layers += [{"type": "mean", "dim": rng.choice([[2, 3], [-1, -2]])}, {"type": "linear", "out_features": rng.randint(1, 5)}]
    elif r < 0.35:
        layers.append(rng.choice([{"type": "mean", "dim": [2, 3], "keepdim": True}, {"type": "mean", "dim": rng.choice([2, 3, -1]), "keepdim": True},
                                  {"type": "mean", "dim": 1, "keepdim": True}]))
    return {"input_shape": [c, h, w], "layers": with_scale(rng, layers)}


def random_signal_spec(rng):
    """A random 1-D network on a signal [C, L] (audio, time series): conv1d with stride,
    dilation, padding (numbers, "same", reflect/replicate/circular), groups; 1-D max and average
    pools with ceil mode; transposed 1-D convs; adaptive pools; batchnorm1d and activations;
    residual blocks and channel concatenations of conv1d branches; a classifier head now and then."""
    c, length = rng.randint(1, 4), rng.randint(12, 160)
    first = rng.randint(1, 4)
    # the input is a signal because a 1-D layer reads it, directly or through element-wise layers
    layers = [{"type": "relu"}] if rng.random() < 0.2 else []
    layers.append({"type": "conv1d", "out_channels": first, "kernel_size": 3, "padding": 1})
    shape = [first, length]
    for _ in range(rng.randint(1, 7)):
        r = rng.random()
        if rng.random() < 0.08 and shape[1] < 300:
            # nn.Upsample on a signal: nearest by an int, or linear (align_corners false) by a
            # power of two, as a factor or a size, an int or a one-element list
            linear = rng.random() < 0.5
            f = rng.choice([1, 2, 4, 1.5, 6] if linear else [1, 2, 3, 1.5, 2.2])
            cand = {"type": "upsample", "mode": "linear" if linear else "nearest"}
            if rng.random() < 0.5:
                cand["scale_factor"] = rng.choice([f, [f]])
            elif linear and rng.random() < 0.5:
                # any size whose positions are placed the same in float32 and float64, or
                # align_corners from n+1 to 2n+1 positions
                if rng.random() < 0.5 and shape[1] > 1:
                    cand.update(size=2 * shape[1] - 1, align_corners=True)
                else:
                    cand.update(size=[linear_size(rng, shape[1])], align_corners=False)
            elif not linear and rng.random() < 0.5:
                cand["size"] = [rng.randint(max(1, shape[1] // 2), 3 * shape[1])]
            else:
                cand["size"] = rng.choice([int(shape[1] * f), [int(shape[1] * f)]])
        elif rng.random() < 0.1 and shape[1] >= 2:
            # x.narrow: a crop of the positions (x[:, :, a:b]), or some channels
            start = rng.randrange(shape[1] - 1)
            cand = {"type": "narrow", "dim": rng.choice([2, -1]), "start": start, "length": rng.randint(1, shape[1] - start)} \
                if rng.random() < 0.7 else channel_pick(rng, shape) or {"type": "relu"}
        elif r < 0.4:
            out = rng.choice([1, 2, 3, 4, 6])
            groups = rng.choice([g for g in (1, 2, 3) if shape[0] % g == 0 and out % g == 0])
            cand = {"type": "conv1d", "out_channels": out, "kernel_size": rng.choice([rng.randint(1, 9), [rng.randint(1, 9)]]),
                    "groups": groups, "bias": rng.random() < 0.7}
            if rng.random() < 0.2:
                cand.update(padding="same", dilation=rng.randint(1, 3))
            else:
                cand.update(stride=rng.randint(1, 3), dilation=rng.choice([1, 1, 2, 3]), padding=rng.randint(0, 4))
            if rng.random() < 0.2 and shape[1] > 6:
                cand["padding_mode"] = rng.choice(["reflect", "replicate", "circular"])
        elif r < 0.6:
            k = rng.randint(1, 5)
            cand = {"type": rng.choice(["maxpool1d", "avgpool1d"]), "kernel_size": k, "stride": rng.randint(1, 3),
                    "padding": rng.randint(0, k // 2), "ceil_mode": rng.random() < 0.4}
            if cand["type"] == "maxpool1d":
                cand["dilation"] = rng.choice([1, 1, 2])
            else:
                cand["count_include_pad"] = rng.random() < 0.7
        elif r < 0.68 and shape[1] < 400:
            out = rng.choice([1, 2, 3, 4])
            groups = rng.choice([g for g in (1, 2) if shape[0] % g == 0 and out % g == 0])
            s_, d = rng.randint(1, 3), rng.choice([1, 1, 2])
            cand = {"type": "conv_transpose1d", "out_channels": out, "kernel_size": rng.randint(1, 5), "stride": s_, "dilation": d,
                    "groups": groups, "padding": rng.randint(0, 2), "output_padding": rng.randint(0, max(0, min(s_, d) - 1)),
                    "bias": rng.random() < 0.7}
        elif r < 0.73:
            cand = {"type": rng.choice(["adaptive_avgpool1d", "adaptive_maxpool1d"]),
                    "output_size": rng.choice([rng.randint(1, shape[1]), rng.randint(1, 4), [rng.randint(1, 4)]])}
        elif r < 0.77:
            cand = {"type": rng.choice(["zeropad1d", "reflectionpad1d", "replicationpad1d", "circularpad1d"]),
                    "padding": rng.choice([rng.randint(0, 4), [rng.randint(0, 4), rng.randint(0, 4)]])}
        elif r < 0.82:
            cand = prelu(rng, shape) if rng.random() < 0.15 else {"type": rng.choice(["relu", "batchnorm1d", "sigmoid", "tanh", "gelu", "silu", "dropout", "hardswish"])}
        elif r < 0.9:
            stride = rng.randint(1, 2)
            cand = {"type": "concat", "branches": [
                [{"type": "conv1d", "out_channels": rng.randint(1, 4), "kernel_size": 1, "stride": stride}]
                + ([{"type": "conv1d", "out_channels": rng.randint(1, 4), "kernel_size": rng.choice([1, 3, 5]), "padding": "same"}]
                   if rng.random() < 0.6 else [])
                for _ in range(rng.randint(2, 3))]}
        else:
            k, s_, out = rng.choice([1, 3, 5]), rng.randint(1, 2), rng.randint(1, 4)
            body = [{"type": "conv1d", "out_channels": out, "kernel_size": k, "stride": s_, "padding": k // 2}, {"type": "relu"},
                    {"type": "conv1d", "out_channels": out, "kernel_size": 3, "padding": 1}]
            shortcut = [] if (s_ == 1 and out == shape[0]) else [{"type": "conv1d", "out_channels": out, "kernel_size": 1, "stride": s_}]
            cand = {"type": "residual", "body": body, "shortcut": shortcut}
        if cand["type"] in ("relu", "gelu", "silu", "sigmoid", "maxpool1d", "avgpool1d", "adaptive_avgpool1d", "adaptive_maxpool1d") \
                and rng.random() < 0.3:
            cand["functional"] = True
        try:
            _, new_shape = build_layer(cand, shape, False)
        except Exception:
            continue
        if len(new_shape) != 2 or new_shape[1] < 1:
            continue
        layers.append(cand)
        shape = new_shape
    if rng.random() < 0.3:
        layers += [{"type": "adaptive_avgpool1d", "output_size": 1}, {"type": "flatten"}, {"type": "linear", "out_features": rng.randint(1, 5)}]
    return {"input_shape": [c, length], "layers": with_scale(rng, layers)}


def random_volume_spec(rng):
    """A random 3-D network on a volume [C, D, H, W] (a clip of frames, a scan): conv3d with
    per-axis kernels, strides, dilation, padding (numbers, "same", reflect/replicate/circular),
    groups; transposed 3-D convolutions and upsampling (nearest, trilinear); 3-D max and
    average pools with ceil mode; the 3-D
    pads; batchnorm3d, groupnorm,
    instancenorm3d, layernorm over the last axes and activations; residual
    blocks and channel concatenations of conv3d branches; an adaptive pool and classifier head
    now and then."""
    c = rng.randint(1, 3)
    shape = [c, rng.randint(3, 10), rng.randint(6, 20), rng.randint(6, 20)]
    first = shape
    layers = []
    per_axis = lambda lo, hi: [rng.randint(lo, hi) for _ in range(3)] if rng.random() < 0.5 else rng.randint(lo, hi)
    for _ in range(rng.randint(1, 6)):
        r = rng.random()
        if r < 0.45:
            out = rng.choice([1, 2, 3, 4])
            groups = rng.choice([g for g in (1, 2) if shape[0] % g == 0 and out % g == 0])
            cand = {"type": "conv3d", "out_channels": out, "kernel_size": per_axis(1, 4), "groups": groups, "bias": rng.random() < 0.7}
            if rng.random() < 0.15:
                cand.update(padding="same", dilation=per_axis(1, 2))
            else:
                cand.update(stride=per_axis(1, 2), dilation=rng.choice([1, 1, [1, 2, 1], 2]), padding=per_axis(0, 2))
            if rng.random() < 0.15 and min(shape[1:]) > 3:
                cand["padding_mode"] = rng.choice(["reflect", "replicate", "circular"])
        elif r < 0.55 and max(shape[1:]) * shape[0] < 400:
            # (a decoder's upsampling: output_padding below the stride or the dilation)
            s_, d = per_axis(1, 2), rng.choice([1, 1, 2])
            out = rng.choice([1, 2, 3, 4])
            groups = rng.choice([g for g in (1, 2) if shape[0] % g == 0 and out % g == 0])
            smin = min(s_) if isinstance(s_, list) else s_
            cand = {"type": "conv_transpose3d", "out_channels": out, "kernel_size": per_axis(1, 3), "stride": s_, "dilation": d,
                    "groups": groups, "padding": rng.randint(0, 1), "bias": rng.random() < 0.7,
                    "output_padding": rng.randint(0, max(0, min(smin, d) - 1)) if rng.random() < 0.5 else 0}
            if rng.random() < 0.5:
                # nearest by integer factors (an int takes every axis), trilinear by powers of two
                mode = rng.choice(["nearest", "trilinear"])
                f = [rng.choice([1, 2]) for _ in range(3)] if rng.random() < 0.5 else rng.choice([1, 2])
                if mode == "nearest" and rng.random() < 0.3:
                    f = [rng.choice([1, 2, 3]) for _ in range(3)]
                cand = {"type": "upsample", "mode": mode, "scale_factor": f}
                if rng.random() < 0.2:
                    cand["scale_factor"] = rng.choice([1.5, [1, 1.5, 2]])
                if rng.random() < 0.3:
                    cand = {"type": "upsample", "mode": mode, "size": [n * rng.choice([1, 2]) for n in shape[1:]]}
                elif rng.random() < 0.2:
                    # any size (trilinear: one whose positions float32 and float64 place alike)
                    cand = {"type": "upsample", "mode": mode,
                            "size": [linear_size(rng, n) if mode == "trilinear" else rng.randint(max(1, n // 2), 2 * n) for n in shape[1:]]}
        elif r < 0.65:
            k = per_axis(1, 3)
            ks = k if isinstance(k, list) else [k] * 3
            cand = {"type": rng.choice(["maxpool3d", "avgpool3d"]), "kernel_size": k, "stride": per_axis(1, 2),
                    "padding": [rng.randint(0, kk // 2) for kk in ks], "ceil_mode": rng.random() < 0.4}
            if cand["type"] == "maxpool3d":
                cand["dilation"] = rng.choice([1, 1, [1, 2, 1]])
            else:
                cand["count_include_pad"] = rng.random() < 0.7
        elif r < 0.8:
            cand = {"type": rng.choice(["relu", "batchnorm3d", "sigmoid", "gelu", "silu", "dropout", "hardswish", "norm", "norm", "pad", "pad", "prelu"])}
            if cand["type"] == "prelu":
                cand = prelu(rng, shape) if rng.random() < 0.6 else channel_pick(rng, shape) or prelu(rng, shape)
            if cand["type"] == "pad":
                cand = {"type": rng.choice(["zeropad3d", "reflectionpad3d", "replicationpad3d", "circularpad3d"]),
                        "padding": rng.choice([rng.randint(0, 2), [rng.randint(0, 2) for _ in range(6)]])}
            # a normalization over every position (per channel group, or per channel), or a
            # layernorm over the last 1 to 4 axes
            r2 = rng.random()
            if cand["type"] == "norm" and r2 < 0.4:
                cand = {"type": "groupnorm", "num_groups": rng.choice([g for g in (1, 2, 3, shape[0]) if shape[0] % g == 0]),
                        "affine": rng.random() < 0.7}
            elif cand["type"] == "norm" and r2 < 0.7:
                cand = {"type": "instancenorm3d", "affine": rng.random() < 0.4}
            elif cand["type"] == "norm":
                k = rng.randint(1, 4)
                cand = {"type": "layernorm", "normalized_shape": shape[4 - k:], "elementwise_affine": rng.random() < 0.7}
        elif r < 0.9:
            cand = {"type": "concat", "branches": [
                [{"type": "conv3d", "out_channels": rng.randint(1, 3), "kernel_size": 1}]
                + ([{"type": "conv3d", "out_channels": rng.randint(1, 3), "kernel_size": rng.choice([1, 3]), "padding": "same"}]
                   if rng.random() < 0.6 else [])
                for _ in range(2)]}
        else:
            s_, out = rng.randint(1, 2), rng.randint(1, 3)
            body = [{"type": "conv3d", "out_channels": out, "kernel_size": 3, "stride": s_, "padding": 1}, {"type": "relu"},
                    {"type": "conv3d", "out_channels": out, "kernel_size": [1, 3, 3], "padding": [0, 1, 1]}]
            shortcut = [] if (s_ == 1 and out == shape[0]) else [{"type": "conv3d", "out_channels": out, "kernel_size": 1, "stride": s_}]
            cand = {"type": "residual", "body": body, "shortcut": shortcut}
        if cand["type"] in ("conv3d", "maxpool3d", "avgpool3d", "relu", "gelu") and rng.random() < 0.2:
            cand["functional"] = True
        try:
            _, new_shape = build_layer(cand, shape, False)
        except Exception:
            continue
        if len(new_shape) != 4 or min(new_shape) < 1:
            continue
        layers.append(cand)
        shape = new_shape
    if not layers:
        layers.append({"type": "conv3d", "out_channels": rng.randint(1, 3), "kernel_size": 1})
    if rng.random() < 0.3:
        out = rng.choice([1, [1, 2, 2], [None, 1, 1], [2, 3, None]])
        layers.append({"type": rng.choice(["adaptive_avgpool3d", "adaptive_maxpool3d"]), "output_size": out})
        if rng.random() < 0.6:
            layers += [{"type": "flatten"}, {"type": "linear", "out_features": rng.randint(1, 5)}]
    return {"input_shape": first, "layers": layers}


def random_graph(rng):
    """A random DAG over an image: convs, pools and activations on any earlier tensor, skips
    joined by add, broadcast squeeze-and-excitation gates joined by mul, concatenation along
    channels or a spatial axis, a sequential residual inside a node, and one or two outputs."""
    c, h, w = rng.randint(1, 4), rng.randint(10, 36), rng.randint(10, 36)
    # channels picked or shuffled straight from the input (before any conv mixes them), now
    # and then, so that a unit's input channels show the permutation (of 6 or 8 channels: a
    # shuffle of C channels in C groups, or of 2 in 2, is the identity)
    pick_first = rng.random() < 0.15
    if pick_first:
        c = rng.choice([6, 8])
    shapes = {"input": [c, h, w]}
    nodes = []

    def add(spec, ins):
        name = f"n{len(nodes)}"
        spec = dict(spec, name=name, inputs=ins)
        t = spec["type"].replace("_", "").lower()
        try:
            if t in ("add", "mul") or (t == "concat" and "branches" not in spec):
                m = {"add": Add(), "mul": Mul()}.get(t) or Cat(spec.get("dim", 1))
            else:
                m, _ = build_layer(spec, shapes[ins[0]], False)
            with torch.no_grad():
                shape = list(m(*[torch.zeros(1, *shapes[i], dtype=torch.float64) for i in ins]).shape[1:])
        except Exception:
            return None
        if len(shape) != 3 or min(shape) < 1:
            return None
        nodes.append(spec)
        shapes[name] = shape
        return name

    if pick_first:
        add(channel_pick(rng, shapes["input"]) or {"type": "relu"}, ["input"])
    for _ in range(rng.randint(2, 9)):
        names = list(shapes)
        src = rng.choice(names[-3:] if rng.random() < 0.7 else names)
        s = shapes[src]
        r = rng.random()
        if r < 0.3:
            add(rand_conv(rng, s, same=rng.random() < 0.4), [src])
        elif r < 0.4:
            add(rand_pool(rng), [src])
        elif r < 0.48:
            if rng.random() < 0.4:
                add(rand_norm(rng, s), [src])
            elif rng.random() < 0.1:
                add({"type": "mean", "dim": rng.choice([[2, 3], 2, 3, 1]), "keepdim": True}, [src])
            else:
                add(prelu(rng, s) if rng.random() < 0.15 else {"type": rng.choice(["relu", "sigmoid", "batchnorm2d", "silu", "hardswish", "gelu", "identity"])}, [src])
        elif r < 0.63:
            # a skip: a same-shape branch added back, or any two tensors of one shape
            same = [n for n in names if n != src and shapes[n] == s]
            if same and rng.random() < 0.5:
                add({"type": "add"}, [src, rng.choice(same)])
            else:
                k = rng.choice([1, 3, 5])
                b = add({"type": "conv2d", "out_channels": s[0], "kernel_size": k, "padding": k // 2, "dilation": 1}, [src])
                if b:
                    add({"type": "add"}, [b, src] if rng.random() < 0.5 else [src, b])
        elif r < 0.73:
            # squeeze-and-excitation: [C,1,1] gate times [C,H,W]; sometimes a [1,H,W] spatial map
            r2 = rng.random()
            if r2 < 0.7:
                pool = {"type": "adaptive_avgpool2d", "output_size": 1} if r2 < 0.45 else {"type": "mean", "dim": [2, 3], "keepdim": True}
                g = add(pool, [src])
                g = g and add({"type": "conv2d", "out_channels": s[0], "kernel_size": 1}, [g])
            elif r2 < 0.85:
                # a spatial attention map from the channel mean
                g = add({"type": "mean", "dim": 1, "keepdim": True}, [src])
                g = g and add({"type": "conv2d", "out_channels": 1, "kernel_size": 3, "padding": 1}, [g])
            else:
                g = add({"type": "conv2d", "out_channels": 1, "kernel_size": 3, "padding": 1}, [src])
            g = g and add({"type": "sigmoid"}, [g])
            if g:
                add({"type": "mul"}, [src, g] if rng.random() < 0.5 else [g, src])
        elif r < 0.88:
            # concatenation: along channels with a same-size tensor, or along a spatial axis
            if rng.random() < 0.7:
                same = [n for n in names if shapes[n][1:] == s[1:]]
                other = rng.choice(same)
                add({"type": "concat", "dim": rng.choice([1, -3])}, [src, other])
            else:
                dim = rng.choice([2, 3])
                same = [n for n in names if all(shapes[n][a] == s[a] for a in range(3) if a != dim - 1)]
                add({"type": "concat", "dim": rng.choice([dim, dim - 4])}, [src, rng.choice(same)])
        elif r < 0.91 and rng.random() < 0.3 and min(s[1:]) >= 8:
            # the original U-Net's level: valid convs, a 2x upsampling, the skip cropped to fit
            d = add({"type": "maxpool2d", "kernel_size": 2}, [src])
            d = d and add({"type": "conv2d", "out_channels": rng.randint(1, 3), "kernel_size": 3}, [d])
            u = d and add({"type": "conv_transpose2d", "out_channels": rng.randint(1, 3), "kernel_size": 2, "stride": 2}, [d])
            if u:
                uh, uw = shapes[u][1], shapes[u][2]
                top, left = (s[1] - uh) // 2, (s[2] - uw) // 2
                ch = add({"type": "narrow", "dim": 2, "start": top, "length": uh}, [src])
                ch = ch and add({"type": "narrow", "dim": -1, "start": left, "length": uw}, [ch])
                if ch:
                    add({"type": "concat", "dim": 1}, [ch, u])
        elif r < 0.91 and s[0] >= 2 and rng.random() < 0.8:
            # a ShuffleNet unit: the channels split in two, one half through a conv, joined, shuffled
            half = rng.randint(1, s[0] - 1)
            a = add({"type": "narrow", "dim": 1, "start": 0, "length": half}, [src])
            b = add({"type": "narrow", "dim": 1, "start": half, "length": s[0] - half}, [src])
            out = rng.randint(1, 4)
            b = b and add({"type": "conv2d", "out_channels": out, "kernel_size": 3, "padding": 1,
                           "groups": rng.choice([1, s[0] - half] if out % (s[0] - half) == 0 else [1])}, [b])
            j = a and b and add({"type": "concat", "dim": 1}, [a, b])
            if j:
                g = rng.choice([d for d in (2, 3, half + out) if (half + out) % d == 0 and d > 1] or [1])
                if g > 1:
                    add({"type": "channel_shuffle", "groups": g}, [j])
        elif r < 0.91:
            add(rand_reshape(rng, s, single=True)[0], [src])
        elif r < 0.95 and s[1] % 2 == 0 and s[2] % 2 == 0:
            # a U-Net level: down by a pool, a conv, back up by a transposed conv or an
            # upsampling, then concatenated with the skip
            d = add({"type": "maxpool2d", "kernel_size": 2}, [src])
            d = d and add({"type": "conv2d", "out_channels": rng.randint(1, 4), "kernel_size": 3, "padding": 1}, [d])
            if d and rng.random() < 0.5:
                u = add({"type": "conv_transpose2d", "out_channels": rng.randint(1, 4), "kernel_size": 2, "stride": 2}, [d])
            else:
                u = d and add({"type": "upsample", "scale_factor": 2, "mode": rng.choice(["nearest", "bilinear"])}, [d])
            if u:
                add({"type": "concat", "dim": 1}, [src, u] if rng.random() < 0.5 else [u, src])
        elif r < 0.97 and s[1] * s[2] < 2500:
            add(rand_transposed(rng, s), [src])
        else:
            k = rng.choice([1, 3])
            add({"type": "residual", "body": [{"type": "conv2d", "out_channels": s[0], "kernel_size": k, "padding": k // 2},
                                              {"type": "relu"}]}, [src])
    if not nodes:
        add({"type": "relu"}, ["input"])
    outputs = [nodes[-1]["name"]]
    if len(nodes) > 2 and rng.random() < 0.3:
        outputs.append(rng.choice([n["name"] for n in nodes[:-1]]))
    if rng.random() < 0.3:
        rng.shuffle(nodes)  # the service sorts them
    return {"input_shape": [c, h, w], "graph": {"nodes": nodes, "outputs": outputs}}


def graph_paths(spec):
    """Every node path of a graph spec, composites' children included."""
    out = []
    for n in spec["graph"]["nodes"]:
        out.append(n["name"])
        if n["type"] == "residual":
            out += paths(n.get("body", []), f"{n['name']}.body.")
            out += paths(n.get("shortcut", []), f"{n['name']}.shortcut.")
    return out


def all_paths(spec):
    return graph_paths(spec) if "graph" in spec else paths(spec["layers"])


def paths(layers, prefix=""):
    """Every layer path, depth first, as the service names them."""
    out = []
    for i, spec in enumerate(layers):
        p = f"{prefix}{i}"
        out.append(p)
        t = spec["type"].replace("_", "").lower()
        if t == "concat":
            for b, br in enumerate(spec["branches"]):
                out += paths(br, f"{p}.branches.{b}.")
        elif t == "residual":
            out += paths(spec.get("body", []), f"{p}.body.")
            out += paths(spec.get("shortcut", []), f"{p}.shortcut.")
    return out


def module_at(root, path):
    if isinstance(root, GraphNet):
        return root.module_at(path)
    m = root
    for part in path.split("."):
        m = m[int(part)] if part.isdigit() else getattr(m, part)
    return m


__all__ = ["build", "build_model", "random_spec", "random_graph", "paths", "all_paths", "module_at", "random"]
