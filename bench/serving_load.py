"""Load on `deeplab serve` (gRPC and REST) against in-process calls of the same SavedModel, measured
in the same run: requests/s, p50/p95 latency and the served/in-process throughput ratio.

  .venv/bin/python bench/serving_load.py --out /tmp/serving_load [--model-dir EXPORTED_SAVEDMODEL]
      [--size 128 96 --requests 200 --threads 8 --malformed 0.1]

Without --model-dir a tiny random DeepLab V3 (mobilenet_v2, alpha 0.35) is exported first. The server
runs as a subprocess (`runner.py serve`), as in production, so client threads and server do not share
a Python interpreter. Every valid answer is checked against the in-process map; malformed requests
(not-an-image bytes, a 50000x50000 PNG header) must be refused with INVALID_ARGUMENT.

Writes OUT/serving_load.json and OUT/serving_load.png (latency distributions).

--batching measures server-side batching and response sizes instead (issue 8), on 513x513 JPEGs:

  .venv/bin/deeplab export --init random --backbone mobilenet_v2 --warmup-size 513 --output /tmp/mnv2/1
  .venv/bin/python bench/serving_load.py --batching --out /tmp/serving_batching --model-dir /tmp/mnv2/1

  * throughput of 8 concurrent gRPC clients over 1 client (closed loop, compact answers), with the
    server's batching on (the default) and, for reference, off (--no-batching);
  * bytes per response: the int64 segmentation_map (+ confidence) vs the compact segmentation_png;
  * the gRPC overhead at batch 1 over the in-process call of the same SavedModel (median latency,
    1 client, rounds interleaved with in-process rounds so a shared CPU's load hits both alike).

Writes OUT/serving_batching.json.
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

    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", 50000, 50000, 8, 2, 0, 0, 0))
        + chunk(b"IEND", b"")
    )


def _summary(latencies, wall, total):
    import numpy as np

    lat = np.array(latencies) * 1000.0
    return {
        "requests": total,
        "requests_per_s": round(total / wall, 2),
        "wall_s": round(wall, 3),
        "p50_ms": round(float(np.percentile(lat, 50)), 2),
        "p95_ms": round(float(np.percentile(lat, 95)), 2),
        "max_ms": round(float(lat.max()), 2),
    }


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
    parser.add_argument(
        "--batching",
        action="store_true",
        help="measure server-side batching, response bytes and gRPC overhead (see above)",
    )
    parser.add_argument("--batch-size", type=int, default=513, help="--batching: square image side (JPEG)")
    parser.add_argument("--clients", type=int, default=8, help="--batching: concurrent clients")
    parser.add_argument("--seconds", type=float, default=20.0, help="--batching: duration of each throughput run")
    parser.add_argument("--rounds", type=int, default=3, help="--batching: interleaved rounds for the overhead")
    parser.add_argument("--no-unbatched", action="store_true", help="--batching: skip the --no-batching run")
    parser.add_argument(
        "--server-args",
        default="",
        help="--batching: extra `deeplab serve` flags for the batched "
        "server, e.g. '--num-batch-threads 1 --max-batch-size 8'",
    )
    args = parser.parse_args(argv)
    if args.batching:
        return batching_bench(args)

    import numpy as np
    import tensorflow as tf
    from tqdm import tqdm

    from components.atomic_pusher.executor import publish_atomically
    from data.synthetic import render_sample
    from models import export, model_io
    from serving.grpc_client import GrpcClient
    from serving.rest_client import RestClient, ServingClientError

    os.makedirs(args.out, exist_ok=True)
    load_before = os.getloadavg()
    model_dir = args.model_dir
    if model_dir is None:
        from models.config import ModelConfig
        from models.deeplab import build_deeplab_v3

        kwargs = {"backbone": "mobilenet_v2", "alpha": 0.35, "aspp_filters": 16, "output_stride": 16}
        model_dir = os.path.join(args.out, "exported")
        if not os.path.exists(os.path.join(model_dir, "saved_model.pb")):
            model = model_io.randomize_weights(build_deeplab_v3(ModelConfig(**kwargs)))
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
        lat, results, wall = _run(
            lambda i: serving_default(images=tf.constant([encoded[i % 8]]))["segmentation_map"].numpy()[0],
            n,
            args.threads,
            progress,
        )
    rows["in_process"] = _summary([t for _, t in lat], wall, n)
    rows["in_process"]["correct"] = sum(np.array_equal(r, expected[i % 8]) for i, r in enumerate(results))

    proc = _spawn_server(base, rest_port="0", threads=args.threads)
    try:
        ports = json.loads(proc.stdout.readline())
        clients = {
            "grpc": GrpcClient(f"127.0.0.1:{ports['grpc_port']}", timeout=120, retries=0),
            "rest": RestClient(f"127.0.0.1:{ports['rest_port']}", timeout=120, retries=0),
        }
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
            rows[api]["ratio_vs_in_process"] = round(
                rows[api]["requests_per_s"] / rows["in_process"]["requests_per_s"], 3
            )
    finally:
        proc.terminate()
        proc.wait(timeout=30)

    report = {
        "image_size_wh": [w, h],
        "threads": args.threads,
        "requests_per_api": n,
        "malformed_fraction": args.malformed,
        "model_dir": model_dir,
        "results": rows,
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "note": "requests_per_s of the served APIs counts all requests (malformed ones included) over the "
        "wall time; latencies are of the valid requests. The CPU may be shared: see load averages.",
    }
    with open(os.path.join(args.out, "serving_load.json"), "w") as f:
        json.dump(report, f, indent=2)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.5))
    names = list(rows)
    ax.bar(names, [rows[k]["requests_per_s"] for k in names], color=["#888", "#1f77b4", "#ff7f0e"][: len(names)])
    for i, k in enumerate(names):
        ax.text(
            i,
            rows[k]["requests_per_s"],
            f"p50 {rows[k]['p50_ms']} ms\np95 {rows[k]['p95_ms']} ms",
            ha="center",
            va="bottom",
            fontsize=8,
        )
    ax.set_ylabel("requests / s")
    ax.set_title(f"serving_default, {w}x{h} PNG, {args.threads} threads")
    ax.margins(y=0.25)
    fig.tight_layout()
    fig.savefig(os.path.join(args.out, "serving_load.png"), dpi=110)
    print(json.dumps(rows, indent=2))
    bad = {
        api: r for api, r in rows.items() if api != "in_process" and (r.get("wrong map") or r.get("accepted malformed"))
    }
    return 1 if bad else 0


def _spawn_server(base, rest_port, threads, extra=()):
    """`runner.py serve` as a subprocess, as in production; its first stdout line is the JSON of its ports."""
    return subprocess.Popen(
        [
            sys.executable,
            os.path.join(REPO, "runner.py"),
            "--log-level",
            "WARNING",
            "serve",
            "--model-base-path",
            base,
            "--grpc-port",
            "0",
            "--rest-port",
            rest_port,
            "--poll-seconds",
            "0",
            "--threads",
            str(threads),
            *extra,
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )


def _start_server(base, extra=()):
    proc = _spawn_server(base, rest_port="-1", threads=16, extra=extra)
    return proc, json.loads(proc.stdout.readline())


def _one_vs_many(target, encoded, expected, args):
    """Closed-loop throughput of 1 and of args.clients concurrent gRPC clients, and their ratio."""
    from serving.grpc_client import GrpcClient

    def make():
        return GrpcClient(target, timeout=300, retries=0)

    one = _closed_loop(make, encoded, expected, 1, args.seconds)
    many = _closed_loop(make, encoded, expected, args.clients, args.seconds)
    return {
        "1 client": one,
        f"{args.clients} clients": many,
        "ratio": round(many["requests_per_s"] / one["requests_per_s"], 2),
    }


def _closed_loop(make_client, encoded, expected, clients, seconds):
    """`clients` threads, each with its own channel, sending one image per request for `seconds`;
    returns requests/s, median latency, and whether every answer was right."""
    import numpy as np

    stop_at = time.perf_counter() + seconds
    lock = threading.Lock()
    latencies, wrong = [], []
    start_gate = threading.Barrier(clients)

    def loop(k):
        client = make_client()
        client.segment([encoded[k % len(encoded)]])  # connect (not timed)
        start_gate.wait()
        i = k
        while time.perf_counter() < stop_at:
            t = time.perf_counter()
            label_map = client.segment([encoded[i % len(encoded)]])[0][0]
            dt = time.perf_counter() - t
            with lock:
                latencies.append(dt)
                if not np.array_equal(label_map, expected[i % len(encoded)]):
                    wrong.append(i)
            i += 1
        client.close()

    threads = [threading.Thread(target=loop, args=(k,)) for k in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    return {
        "clients": clients,
        "requests": len(latencies),
        "requests_per_s": round(len(latencies) / wall, 3),
        "p50_ms": round(float(np.median(latencies)) * 1000, 1),
        "wrong_maps": len(wrong),
    }


def batching_bench(args):
    import numpy as np
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    from components.atomic_pusher.executor import publish_atomically
    from data.synthetic import encode_jpeg, render_sample
    from serving.grpc_client import GrpcClient

    if not args.model_dir:
        raise SystemExit("--batching needs --model-dir (e.g. deeplab export --init random --backbone mobilenet_v2)")
    os.makedirs(args.out, exist_ok=True)
    load_before = os.getloadavg()
    base = os.path.join(args.out, "models", "deeplab")
    if not os.path.exists(base):
        publish_atomically(args.model_dir, base, 1)
    side = args.batch_size
    rng = np.random.default_rng(0)
    encoded = [encode_jpeg(render_sample(rng, side, side)[0]) for _ in range(8)]
    serving_default = tf.saved_model.load(args.model_dir).signatures["serving_default"]

    def in_process(data):
        return {k: v.numpy() for k, v in serving_default(images=tf.constant([data])).items()}

    expected = [in_process(e)["segmentation_map"][0] for e in encoded]
    report = {"image": f"{side}x{side} JPEG", "model_dir": args.model_dir, "clients": args.clients}

    report["server_args"] = args.server_args
    proc, ports = _start_server(base, args.server_args.split())
    try:
        target = f"127.0.0.1:{ports['grpc_port']}"
        client = GrpcClient(target, timeout=300, retries=0)
        # -- bytes per response (one 513x513 image) --
        sizes = {}
        for name, output_filter in (
            ("all outputs (int64 map + float32 confidence)", []),
            ("segmentation_map only (int64)", ["segmentation_map", "height", "width"]),
            ("compact: segmentation_png (client default)", ["segmentation_png", "height", "width"]),
        ):
            request = predict_pb2.PredictRequest()
            request.model_spec.name = "deeplab"
            request.inputs["images"].CopyFrom(tf.make_tensor_proto([encoded[0]]))
            request.output_filter.extend(output_filter)
            sizes[name] = client.predictions.Predict(request, 300.0).ByteSize()
        report["bytes_per_response"] = sizes
        report["int64_map_over_compact"] = round(
            sizes["segmentation_map only (int64)"] / sizes["compact: segmentation_png (client default)"], 1
        )

        # -- gRPC overhead at batch 1 (1 client) vs the in-process call, interleaved rounds --
        n = max(3, int(args.seconds / 4))
        lat = {"in_process": [], "grpc_compact": [], "grpc_all_outputs": []}
        for _ in range(args.rounds):
            for i in range(n):
                t = time.perf_counter()
                in_process(encoded[i % 8])
                lat["in_process"].append(time.perf_counter() - t)
            for i in range(n):
                t = time.perf_counter()
                client.segment([encoded[i % 8]])
                lat["grpc_compact"].append(time.perf_counter() - t)
            for i in range(max(2, n // 2)):
                t = time.perf_counter()
                client.segment([encoded[i % 8]], compact=False)
                lat["grpc_all_outputs"].append(time.perf_counter() - t)
        med = {k: float(np.median(v)) * 1000 for k, v in lat.items()}
        report["batch1_median_latency_ms"] = {k: round(v, 1) for k, v in med.items()}
        report["grpc_overhead_vs_in_process"] = {
            "compact (default)": round(med["grpc_compact"] / med["in_process"] - 1, 3),
            "all outputs (int64 map)": round(med["grpc_all_outputs"] / med["in_process"] - 1, 3),
        }
        client.close()

        # -- throughput, 1 vs N concurrent clients (compact answers) --
        report["throughput_batching_on"] = _one_vs_many(target, encoded, expected, args)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    if not args.no_unbatched:
        proc, ports = _start_server(base, ["--no-batching"])
        try:
            report["throughput_batching_off"] = _one_vs_many(f"127.0.0.1:{ports['grpc_port']}", encoded, expected, args)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    report["load_average_before"] = load_before
    report["load_average_after"] = os.getloadavg()
    report["cpus"] = os.cpu_count()
    with open(os.path.join(args.out, "serving_batching.json"), "w") as f:
        json.dump(report, f, indent=2)
    print(json.dumps(report, indent=2))
    wrong = sum(
        v.get("wrong_maps", 0)
        for key in ("throughput_batching_on", "throughput_batching_off")
        for v in report.get(key, {}).values()
        if isinstance(v, dict)
    )
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main())
