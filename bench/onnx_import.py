"""Analysing resnet50 (or another torchvision model) from its ONNX file over HTTP (upload +
parse + table), against the Python tools on the same model, in the same run.

  python bench/onnx_import.py URL [--repeat 5] [--model convnext_tiny]

Prints median seconds and the ratio to layerscope. The file is exported once (legacy exporter,
BatchNorm kept), 102 MB; each layerscope request uploads it raw.
"""
import argparse
import io
import json
import statistics
import time
import urllib.request
import warnings

import torch
import torchvision

warnings.filterwarnings("ignore")


def timed(fn, repeat):
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("url")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--model", default="resnet50")
    a = ap.parse_args()
    model = getattr(torchvision.models, a.model)().eval()
    params = sum(p.numel() for p in model.parameters())
    x = torch.zeros(1, 3, 224, 224)
    buf = io.BytesIO()
    torch.onnx.export(model, (x,), buf, dynamo=False, training=torch.onnx.TrainingMode.PRESERVE)
    data = buf.getvalue()

    def layerscope():
        req = urllib.request.Request(a.url + "/v1/complexity?request=%7B%22verify%22%3Afalse%7D", data=data, headers={"content-type": "application/octet-stream"})
        with urllib.request.urlopen(req, timeout=300) as r:
            assert json.loads(r.read())["totals"]["params"] == params

    def flop_counter():
        from torch.utils.flop_counter import FlopCounterMode
        with FlopCounterMode(display=False):
            model(x)

    def fvcore():
        from fvcore.nn import FlopCountAnalysis
        f = FlopCountAnalysis(model, x)
        f.unsupported_ops_warnings(False)
        f.total()

    def ptflops():
        from ptflops import get_model_complexity_info
        get_model_complexity_info(model, (3, 224, 224), print_per_layer_stat=False, as_strings=False, verbose=False)

    def torchinfo():
        import torchinfo as ti
        ti.summary(model, input_size=(1, 3, 224, 224), verbose=0)

    rows = [("layerscope, ONNX upload + parse + table over HTTP", timed(layerscope, a.repeat))]
    for name, fn in [("torch FlopCounterMode (module)", flop_counter), ("fvcore (module)", fvcore), ("ptflops (module)", ptflops), ("torchinfo (module)", torchinfo)]:
        try:
            rows.append((name, timed(fn, a.repeat)))
        except ImportError as e:
            print(f"{name}: not installed ({e})")
    base = rows[0][1]
    print(f"{a.model}, file {len(data) / 1e6:.1f} MB, median of {a.repeat}")
    for name, t in rows:
        print(f"| {name} | {t * 1000:.0f} ms | {t / base:.2f}x layerscope |")


if __name__ == "__main__":
    main()
