"""Bounded load test on loopback: heavy gradient-diagnostics runs mixed with light analytic
requests (receptive field and complexity without verify), as a class submitting before a deadline.

  python bench/load.py URL [--seconds 20] [--heavy-clients 4] [--light-clients 8] [--max-requests 5000]

Stops by itself after --seconds or --max-requests. Exits non-zero if any response is other than
200, 429 or 503 (the documented back-pressure answers), or if the light requests' p99 latency is
over --light-p99-limit seconds.
"""
import argparse
import json
import threading
import time
import urllib.error
import urllib.request


def heavy_body():
    layers = []
    for _ in range(8):
        layers += [{"type": "linear", "out_features": 512}, {"type": "sigmoid"}]
    return {"model": {"input_shape": [512], "layers": layers}, "inputs": {"batch_size": 256}}


LIGHT = [
    ("/v1/receptive-field", {"model": {"preset": "vgg16"}, "verify": False, "index_base": 1}),
    ("/v1/complexity", {"model": {"preset": "resnet50"}, "verify": False}),
    ("/v1/receptive-field", {"model": {"preset": "inception_reduced"}, "position": {"index": [3, 3]}, "verify": False}),
]


def post(url, path, body):
    req = urllib.request.Request(url + path, data=json.dumps(body).encode(), headers={"content-type": "application/json"})
    t = time.perf_counter()
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            r.read()
            status = r.status
    except urllib.error.HTTPError as e:
        e.read()
        status = e.code
    except Exception:  # noqa: BLE001
        status = -1
    return status, time.perf_counter() - t


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("url")
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--heavy-clients", type=int, default=4)
    ap.add_argument("--light-clients", type=int, default=8)
    ap.add_argument("--max-requests", type=int, default=5000)
    ap.add_argument("--light-p99-limit", type=float, default=1.0)
    a = ap.parse_args()
    stop = time.perf_counter() + a.seconds
    lock = threading.Lock()
    results = {"heavy": [], "light": []}
    count = [0]

    def client(kind, i):
        n = 0
        while time.perf_counter() < stop:
            with lock:
                if count[0] >= a.max_requests:
                    return
                count[0] += 1
            if kind == "heavy":
                status, dt = post(a.url, "/v1/gradient-diagnostics", heavy_body())
            else:
                path, body = LIGHT[(i + n) % len(LIGHT)]
                status, dt = post(a.url, path, body)
            n += 1
            with lock:
                results[kind].append((status, dt))

    threads = [threading.Thread(target=client, args=("heavy", i)) for i in range(a.heavy_clients)]
    threads += [threading.Thread(target=client, args=("light", i)) for i in range(a.light_clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    bad = 0
    print("| traffic | requests | 200 | 429 | 503 | other | p50 ms | p99 ms |")
    print("|---|---|---|---|---|---|---|---|")
    p99 = {}
    for kind, rs in results.items():
        lat = sorted(dt for _, dt in rs)
        codes = [s for s, _ in rs]
        other = sum(1 for s in codes if s not in (200, 429, 503))
        bad += other
        q = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))] * 1e3 if lat else float("nan")  # noqa: E731
        p99[kind] = q(0.99) / 1e3
        print(f"| {kind} | {len(rs)} | {codes.count(200)} | {codes.count(429)} | {codes.count(503)} | {other} | {q(0.5):.1f} | {q(0.99):.1f} |")
    ok = bad == 0 and results["light"] and p99["light"] <= a.light_p99_limit
    print(f"load: {'passed' if ok else 'failed'}: {bad} unexpected statuses, light p99 {p99.get('light', float('nan')) * 1e3:.1f} ms (limit {a.light_p99_limit * 1e3:.0f} ms)")
    raise SystemExit(0 if ok else 1)


if __name__ == "__main__":
    main()
