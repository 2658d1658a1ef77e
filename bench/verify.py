"""What libtorch verification costs: every preset's receptive-field answer (default unit) and
complexity table with `verify` on and off, over HTTP, in one run.

  python bench/verify.py http://127.0.0.1:8080 [--baseline http://127.0.0.1:8081]

Prints a Markdown table of medians (11 sequential requests each, after one warm-up) and the
ratio of verified to analytic time. Start the server with LAYERSCOPE_RESPONSE_CACHE_BYTES=0, or
the repeated analytic requests are answered from the answer cache. With --baseline, the same for another server (e.g. an older
build) in the same run.
"""
import argparse
import json
import statistics
import time
import urllib.request

PRESETS = ["vgg_stem", "inception_naive", "inception_reduced", "vgg16", "alexnet", "resnet18", "resnet50", "mobilenet_v2", "googlenet", "mobilenet_v3_small", "efficientnet_b0", "unet_small", "r3d_18"]


def median_ms(url, body, n=11):
    data = json.dumps(body).encode()

    def once():
        req = urllib.request.Request(url, data=data, headers={"content-type": "application/json"})
        with urllib.request.urlopen(req) as r:
            return json.loads(r.read())

    first = once()
    times = []
    for _ in range(n):
        t = time.perf_counter()
        once()
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times), first


def measure(base):
    rows = []
    known = {p["name"] for p in json.loads(urllib.request.urlopen(f"{base}/v1/presets").read())["presets"]}
    for endpoint in ["receptive-field", "complexity"]:
        for p in [p for p in PRESETS if p in known]:  # an older baseline may lack newer presets
            off, _ = median_ms(f"{base}/v1/{endpoint}", {"model": {"preset": p}, "verify": False, "index_base": 0} if endpoint == "receptive-field" else {"model": {"preset": p}, "verify": False, "batch_size": 1})
            on, resp = median_ms(f"{base}/v1/{endpoint}", {"model": {"preset": p}})
            v = resp.get("verification", {})
            rows.append((endpoint, p, off, on, v.get("agrees"), v.get("probe_channels"), v.get("dtype")))
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("url")
    ap.add_argument("--baseline")
    a = ap.parse_args()
    servers = [("layerscope", a.url)] + ([("baseline", a.baseline)] if a.baseline else [])
    print("| server | endpoint | preset | verify off ms | verify on ms | on / off | agrees | probe channels | probe dtype |")
    print("|---|---|---|---|---|---|---|---|---|")
    for label, url in servers:
        for endpoint, p, off, on, agrees, width, dtype in measure(url):
            print(f"| {label} | {endpoint} | {p} | {off:.2f} | {on:.2f} | {on / off:.1f}x | {agrees} | {width if width is not None else ''} | {dtype or ''} |")


if __name__ == "__main__":
    main()
