"""The Python client (clients/python) against a running server, checked against PyTorch.

  PYTHONPATH=clients/python python client_check.py URL
"""
import sys
import warnings

import torch
from torch.utils.flop_counter import FlopCounterMode

from layerscope import Client, LayerscopeError

warnings.filterwarnings("ignore")
torch.set_num_threads(1)


def main(url):
    import torchvision
    ls = Client(url)
    problems = []
    # an nn.Module and an example input: exported and uploaded under the hood
    torch.manual_seed(0)
    model = torchvision.models.resnet18().eval()
    x = torch.zeros(1, 3, 224, 224)
    r = ls.complexity(model, x, profile="torch_flop_counter", verify=False)
    counter = FlopCounterMode(display=False)
    with counter:
        model(x)
    if r["totals"]["params"] != sum(p.numel() for p in model.parameters()):
        problems.append(f"resnet18 params {r['totals']['params']}")
    if r["totals"]["flops"] != counter.get_total_flops():
        problems.append(f"resnet18 flops {r['totals']['flops']} != {counter.get_total_flops()}")
    md = r.to_markdown(["path", "type", "params", "flops"])
    if not md.startswith("| path | type | params | flops |") or "| conv1 | conv2d | 9408 |" not in md:
        problems.append("markdown table: " + md[:300])
    # a preset, one-based
    r = ls.receptive_field("vgg_stem", position={"layer": 9, "index": [1, 1]}, index_base=1)
    if r["layers"][9]["receptive_field"]["height"]["text"] != "4i-9 <= m <= 4i+6":
        problems.append(f"vgg_stem pool2 {r['layers'][9]['receptive_field']['height']}")
    # diagnostics with the module's own weights, against autograd on the module
    net = torch.nn.Sequential(torch.nn.Conv2d(2, 3, 3), torch.nn.Tanh(), torch.nn.Flatten(), torch.nn.Linear(12, 2))
    xs = torch.randn(3, 2, 4, 4, dtype=torch.float64)
    g = ls.gradient_diagnostics(net, torch.zeros(1, 2, 4, 4), inputs={"values": xs.flatten().tolist()}, dtype="float64")
    net = net.double()
    net(xs).sum().backward()
    for row, m in zip(g["layers"], (net[0], net[3])):
        want = m.weight.grad.norm().item()
        if abs(row["weight_grad"]["frobenius"] - want) > 1e-9 * want:
            problems.append(f"{row['path']}: weight grad {row['weight_grad']['frobenius']} != autograd {want}")
    if [row["path"] for row in g["layers"]] != ["0", "3"]:
        problems.append(f"diagnostics names {[row['path'] for row in g['layers']]} are not the module's")
    # a module with attention (exported by the dynamo exporter under the hood): the module's
    # parameters and FlopCounterMode's total, and gradients with its weights equal autograd's
    problems += attention_block(ls)
    # one exception type, with the pointer
    try:
        ls.complexity("nosuch")
        problems.append("an unknown preset raised nothing")
    except LayerscopeError as e:
        if e.status != 422 or e.pointer != "/model/preset" or "nosuch" not in e.detail:
            problems.append(f"error {e.status} {e.pointer} {e.detail}")
    # Form I with alpha 0.1, beta 0.9 and gradient 1: theta goes 0, -0.1, -0.1 - 0.19 = -0.29
    m = ls.momentum(theta0=[0], gradients=[[1], [1]], alpha=0.1, beta=0.9)
    if "-0.29" not in str(m):
        problems.append(f"momentum answer {str(m)[:300]}")
    if "resnet18" not in ls.presets():
        problems.append("presets")
    for p in problems:
        print("client: " + p)
    print(f"client check: {'ok' if not problems else 'FAILED'}")
    return 1 if problems else 0


class Block(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.attn = torch.nn.MultiheadAttention(16, 2, batch_first=True)
        self.norm = torch.nn.LayerNorm(16)
        self.fc = torch.nn.Linear(16, 4)

    def forward(self, x):
        return self.fc(self.norm(x + self.attn(x, x, x, need_weights=False)[0]))


def attention_block(ls):
    torch.manual_seed(1)
    block, x = Block().eval(), torch.zeros(1, 6, 16)
    problems = []
    try:
        r = ls.complexity(block, x, profile="torch_flop_counter", verify=True)
    except LayerscopeError as e:
        return [f"attention block refused: {e}"]
    counter = FlopCounterMode(display=False)
    with counter:
        block(x)
    if r["totals"]["params"] != sum(p.numel() for p in block.parameters()):
        problems.append(f"attention block params {r['totals']['params']} != {sum(p.numel() for p in block.parameters())}")
    if r["totals"]["flops"] != counter.get_total_flops():
        problems.append(f"attention block flops {r['totals']['flops']} != FlopCounterMode {counter.get_total_flops()}")
    if not r["verification"].get("agrees"):
        problems.append("attention block: the libtorch check disagrees")
    xs = torch.randn(2, 6, 16, dtype=torch.float64)
    g = ls.gradient_diagnostics(block, x, inputs={"values": xs.flatten().tolist()}, dtype="float64")
    block = block.double()
    block(xs).sum().backward()
    params = dict(block.named_parameters())
    for row in g["layers"]:
        p = params.get(row["path"], params.get(row["path"] + ".weight"))
        if p is None:
            problems.append(f"attention block: diagnostics row {row['path']} names no parameter")
        elif abs(row["weight_grad"]["frobenius"] - p.grad.norm().item()) > 1e-9 * p.grad.norm().item():
            problems.append(f"attention block: {row['path']} grad {row['weight_grad']['frobenius']} != autograd {p.grad.norm().item()}")
    if "attn.in_proj_weight" not in [row["path"] for row in g["layers"]]:
        problems.append(f"attention block rows {[row['path'] for row in g['layers']]}")
    return problems


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
