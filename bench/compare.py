"""Benchmarks layerscope over HTTP against the Python tools people use today, in one run.

  python bench/compare.py http://127.0.0.1:8080
  python bench/compare.py http://127.0.0.1:8080 --presets r3d_18,vit_b_16

Prints a Markdown table: median wall time per answer and the ratio to the Python baseline
measured in the same run. The service's times are whole HTTP requests with the response body
read (not parsed: a Python client spends about 1 ms more decoding a 90 KB table). Start the
server with LAYERSCOPE_RESPONSE_CACHE_BYTES=0, or repeated requests come from the answer cache. fvcore and ptflops are timed when installed (pip install fvcore ptflops).
"""
import json
import statistics
import sys
import time
import urllib.request

import torch

sys.path.insert(0, __import__("os").path.join(__import__("os").path.dirname(__file__), "..", "tests", "oracle"))
import torchspec  # noqa: E402

URL = sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:8080"


def post(path, body):
    req = urllib.request.Request(URL + path, data=json.dumps(body).encode(), headers={"content-type": "application/json"})
    with urllib.request.urlopen(req) as r:
        return json.loads(r.read())


def fetch(path, body):
    """One request, the response body read but not parsed: the service's side of the time."""
    req = urllib.request.Request(URL + path, data=json.dumps(body).encode(), headers={"content-type": "application/json"})
    with urllib.request.urlopen(req) as r:
        return r.read()


def median_ms(fn, n):
    fn()
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def flop_total(model, x):
    """torch.utils.flop_counter's total for one forward."""
    from torch.utils.flop_counter import FlopCounterMode
    with torch.no_grad():
        c = FlopCounterMode(display=False)
        with c:
            model(x)
        return c.get_total_flops()


def resnet50():
    spec = json.loads(urllib.request.urlopen(URL + "/v1/presets/resnet50").read())["spec"]
    model, _ = torchspec.build(spec["layers"], spec["input_shape"])
    return model.float().eval()


def main():
    rows = []
    model = resnet50()
    x = torch.zeros(1, 3, 224, 224)

    base = median_ms(lambda: flop_total(model, x), 10)
    rows.append(("resnet50 FLOP total: torch.utils.flop_counter (Python, model already built)", base))
    try:
        from fvcore.nn import FlopCountAnalysis
        rows.append(("resnet50 FLOP total: fvcore FlopCountAnalysis", median_ms(lambda: FlopCountAnalysis(model, x).total(), 5)))
    except Exception as e:  # noqa: BLE001
        print(f"(fvcore not timed: {e})", file=sys.stderr)
    try:
        from ptflops import get_model_complexity_info
        rows.append(("resnet50 FLOP total: ptflops", median_ms(lambda: get_model_complexity_info(model, (3, 224, 224), print_per_layer_stat=False, as_strings=False), 5)))
    except Exception as e:  # noqa: BLE001
        print(f"(ptflops not timed: {e})", file=sys.stderr)
    http_c = median_ms(lambda: fetch("/v1/complexity", {"model": {"preset": "resnet50"}, "profile": "torch_flop_counter", "verify": False}), 50)
    rows.append(("resnet50 full table: layerscope over HTTP (verify=false)", http_c))
    http_v = median_ms(lambda: fetch("/v1/complexity", {"model": {"preset": "resnet50"}, "profile": "torch_flop_counter"}), 10)
    rows.append(("resnet50 full table: layerscope over HTTP (verify=true, libtorch empty batch)", http_v))
    http_rf = median_ms(lambda: fetch("/v1/receptive-field", {"model": {"preset": "vgg16"}, "verify": False}), 50)
    rows.append(("vgg16 receptive-field table: layerscope over HTTP (verify=false)", http_rf))
    print("| what | median ms | vs torch.utils.flop_counter |")
    print("|---|---|---|")
    for name, ms in rows:
        print(f"| {name} | {ms:.3f} | {ms / base:.3f}x |")
    graph_presets()


def graph_presets(names=("efficientnet_b0", "mobilenet_v3_small", "vit_b_16", "r3d_18")):
    """The graph-form presets against the Python tools run on torchvision's own modules (when
    torchvision is installed): each tool's total, timed, and the service's full table with the
    same tool's profile, over HTTP, with the ratio to the fastest tool."""
    try:
        import torchvision
    except ImportError:
        print("(torchvision not installed: graph presets not timed)", file=sys.stderr)
        return
    import logging
    logging.disable(logging.WARNING)
    print()
    print("| model | what | median ms | vs the fastest Python tool |")
    print("|---|---|---|---|")
    for name in names:
        # the video ResNet reads a 16-frame clip
        video = name == "r3d_18"
        model = getattr(torchvision.models.video if video else torchvision.models, name)().eval()
        shape = (3, 16, 112, 112) if video else (3, 224, 224)
        x = torch.zeros(1, *shape)

        tools = [("torch.utils.flop_counter", median_ms(lambda: flop_total(model, x), 5))]
        try:
            from fvcore.nn import FlopCountAnalysis

            def fv():
                fa = FlopCountAnalysis(model, x)
                fa.unsupported_ops_warnings(False)
                fa.uncalled_modules_warnings(False)
                return fa.total()
            tools.append(("fvcore FlopCountAnalysis", median_ms(fv, 3)))
        except ImportError:
            pass
        try:
            from ptflops import get_model_complexity_info
            tools.append(("ptflops", median_ms(lambda: get_model_complexity_info(model, shape, print_per_layer_stat=False, as_strings=False, verbose=False), 3)))
        except ImportError:
            pass
        try:
            import torchinfo
            tools.append(("torchinfo summary", median_ms(lambda: torchinfo.summary(model, (1, *shape), verbose=0), 3)))
        except ImportError:
            pass
        fastest = min(ms for _, ms in tools)
        for tool, ms in tools:
            print(f"| {name} | {tool} | {ms:.2f} | {ms / fastest:.2f}x |")
        http = median_ms(lambda: fetch("/v1/complexity", {"model": {"preset": name}, "profile": "torch_flop_counter", "verify": False}), 50)
        print(f"| {name} | layerscope full table over HTTP (verify=false) | {http:.3f} | {http / fastest:.4f}x ({fastest / http:.0f} times faster) |")


if __name__ == "__main__":
    if sys.argv[2:3] == ["--presets"]:
        # only the graph-form (and video) presets: python bench/compare.py URL --presets r3d_18
        graph_presets(tuple(sys.argv[3].split(",")))
    else:
        main()
