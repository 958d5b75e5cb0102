"""Load on `deeplab serve` (gRPC and REST) against in-process calls of the same SavedModel, measured
in the same run: requests/s, p50/p95 latency and the served/in-process throughput ratio.

  .venv/bin/python bench/serving_load.py --out /tmp/serving_load [--model-dir EXPORTED_SAVEDMODEL]
      [--size 128 96 --requests 200 --threads 8 --malformed 0.1]

Without --model-dir a tiny random DeepLab V3 (mobilenet_v2, alpha 0.35) is exported first. The server
runs as a subprocess (`runner.py serve`), as in production, so client threads and server do not share
a Python interpreter. Every valid answer is checked against the in-process map; malformed requests
(not-an-image bytes, a 50000x50000 PNG header) must be refused with INVALID_ARGUMENT.

Writes OUT/serving_load.json and OUT/serving_load.png (latency distributions).
"""
import argparse
import concurrent.futures
import json
import os
import subprocess
import sys
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _bomb():
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 50000, 50000, 8, 2, 0, 0, 0))
            + chunk(b"IEND", b""))


def _summary(latencies, wall, total):
    import numpy as np
    lat = np.array(latencies) * 1000.0
    return {"requests": total, "requests_per_s": round(total / wall, 2), "wall_s": round(wall, 3),
            "p50_ms": round(float(np.percentile(lat, 50)), 2), "p95_ms": round(float(np.percentile(lat, 95)), 2),
            "max_ms": round(float(lat.max()), 2)}


def _run(call, n, threads, progress):
    """Run call(i) for i < n on `threads` threads; returns (latencies of successes, results, wall)."""
    latencies, results = [], [None] * n
    lock = threading.Lock()

    def one(i):
        start = time.perf_counter()
        results[i] = call(i)
        with lock:
            latencies.append((i, time.perf_counter() - start))
        progress.update(1)

    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        list(pool.map(one, range(n)))
    return latencies, results, time.perf_counter() - start


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--model-dir", help="an exported SavedModel (default: export a tiny random model)")
    parser.add_argument("--size", type=int, nargs=2, default=(128, 96), metavar=("W", "H"))
    parser.add_argument("--requests", type=int, default=200, help="requests per API")
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--malformed", type=float, default=0.1, help="fraction of malformed requests")
    args = parser.parse_args(argv)

    import numpy as np
    import tensorflow as tf
    from tqdm import tqdm

    from components.atomic_pusher.executor import publish_atomically
    from data.synthetic import render_sample
    from models import export
    from serving.grpc_client import GrpcClient
    from serving.rest_client import RestClient, ServingClientError

    os.makedirs(args.out, exist_ok=True)
    load_before = os.getloadavg()
    model_dir = args.model_dir
    if model_dir is None:
        from models.deeplab import build_deeplab_v3
        kwargs = {"backbone": "mobilenet_v2", "alpha": 0.35, "aspp_filters": 16, "output_stride": 16}
        model_dir = os.path.join(args.out, "exported")
        if not os.path.exists(os.path.join(model_dir, "saved_model.pb")):
            model = export.randomize_weights(build_deeplab_v3(**kwargs))
            w, h = args.size
            export.export_serving_model(model, model_dir, hparams={"model": kwargs}, warmup_sizes=[(h, w)])
    base = os.path.join(args.out, "models", "deeplab")
    if not os.path.exists(base):
        publish_atomically(model_dir, base, 1)

    w, h = args.size
    rng = np.random.default_rng(0)
    images = [render_sample(rng, h, w)[0] for _ in range(8)]
    encoded = [tf.io.encode_png(im).numpy() for im in images]
    loaded = tf.saved_model.load(model_dir)
    serving_default = loaded.signatures["serving_default"]
    expected = [serving_default(images=tf.constant([e]))["segmentation_map"].numpy()[0] for e in encoded]

    n = args.requests
    bad_every = int(round(1 / args.malformed)) if args.malformed > 0 else 0
    malformed = [b"not an image at all", _bomb()]
    rows = {}

    # Baseline: the same requests as in-process signature calls, same number of threads.
    with tqdm(total=n, desc="in-process", unit="req") as progress:
        lat, results, wall = _run(lambda i: serving_default(images=tf.constant([encoded[i % 8]]))["segmentation_map"]
                                  .numpy()[0], n, args.threads, progress)
    rows["in_process"] = _summary([t for _, t in lat], wall, n)
    rows["in_process"]["correct"] = sum(np.array_equal(r, expected[i % 8]) for i, r in enumerate(results))

    proc = subprocess.Popen([sys.executable, os.path.join(REPO, "runner.py"), "--log-level", "WARNING", "serve",
                             "--model-base-path", base, "--grpc-port", "0", "--rest-port", "0",
                             "--poll-seconds", "0", "--threads", str(args.threads)],
                            cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        ports = json.loads(proc.stdout.readline())
        clients = {"grpc": GrpcClient(f"127.0.0.1:{ports['grpc_port']}", timeout=120, retries=0),
                   "rest": RestClient(f"127.0.0.1:{ports['rest_port']}", timeout=120, retries=0)}
        for api, client in clients.items():
            def call(i, client=client):
                if bad_every and i % bad_every == bad_every // 2:
                    try:
                        client.segment([malformed[(i // bad_every) % 2]])
                        return "accepted malformed"
                    except ServingClientError as e:
                        return "refused" if e.code == "INVALID_ARGUMENT" else f"wrong code {e.code}"
                label_map, _ = client.segment([encoded[i % 8]])[0]
                return "ok" if np.array_equal(label_map, expected[i % 8]) else "wrong map"

            with tqdm(total=n, desc=f"deeplab serve {api}", unit="req") as progress:
                lat, results, wall = _run(call, n, args.threads, progress)
            valid = [t for i, t in lat if results[i] == "ok"]
            rows[api] = _summary(valid, wall, n)
            rows[api].update({k: results.count(k) for k in sorted(set(results))})
            rows[api]["ratio_vs_in_process"] = round(rows[api]["requests_per_s"] / rows["in_process"]["requests_per_s"], 3)
    finally:
        proc.terminate()
        proc.wait(timeout=30)

    report = {"image_size_wh": [w, h], "threads": args.threads, "requests_per_api": n,
              "malformed_fraction": args.malformed, "model_dir": model_dir, "results": rows,
              "load_average_before": load_before, "load_average_after": os.getloadavg(),
              "note": "requests_per_s of the served APIs counts all requests (malformed ones included) over the "
                      "wall time; latencies are of the valid requests. The CPU may be shared: see load averages."}
    with open(os.path.join(args.out, "serving_load.json"), "w") as f:
        json.dump(report, f, indent=2)

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 3.5))
    names = list(rows)
    ax.bar(names, [rows[k]["requests_per_s"] for k in names], color=["#888", "#1f77b4", "#ff7f0e"][:len(names)])
    for i, k in enumerate(names):
        ax.text(i, rows[k]["requests_per_s"], f"p50 {rows[k]['p50_ms']} ms\np95 {rows[k]['p95_ms']} ms",
                ha="center", va="bottom", fontsize=8)
    ax.set_ylabel("requests / s")
    ax.set_title(f"serving_default, {w}x{h} PNG, {args.threads} threads")
    ax.margins(y=0.25)
    fig.tight_layout()
    fig.savefig(os.path.join(args.out, "serving_load.png"), dpi=110)
    print(json.dumps(rows, indent=2))
    bad = {api: r for api, r in rows.items() if api != "in_process" and (r.get("wrong map") or r.get("accepted malformed"))}
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
