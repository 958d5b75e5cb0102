"""How much throughput a 2-core server could get by running concurrent requests side by side instead of
one at a time on both cores (bench/RESULTS.md row 38): images per second of `serving_default` on random JPEGs,
in-process, for

  one2  one TF session with 2 intra-op threads, one request at a time (what a lone client gets);
  two1  two sessions with 1 intra-op thread each (`use_per_session_threads`), each fed by its own thread;
  eager the TF2 signature (`tf.saved_model.load`), one request at a time: what `deeplab serve` runs.

    .venv/bin/python bench/serving_threads.py --model-dir /tmp/mnv2/1 [--size 513] [--batch 1] [--seconds 15]

two1 / one2 bounds what any scheduling of 8 clients can gain over 1 client on this machine. Prints one JSON line.
"""

import argparse
import io
import json
import os
import threading
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _session_runner(tf, model_dir, threads):
    graph = tf.Graph()
    config = tf.compat.v1.ConfigProto(
        intra_op_parallelism_threads=threads, inter_op_parallelism_threads=1, use_per_session_threads=True
    )
    session = tf.compat.v1.Session(graph=graph, config=config)
    with graph.as_default():
        meta_graph = tf.compat.v1.saved_model.loader.load(session, ["serve"], model_dir)
    signature = meta_graph.signature_def["serving_default"]
    (input_info,) = signature.inputs.values()
    outputs = [info.name for info in signature.outputs.values()]
    return lambda batch: session.run(outputs, {input_info.name: batch})


def _images_per_second(runners, batch, seconds):
    for run in runners:  # warm-up: oneDNN builds its primitives for the shape
        for _ in range(3):
            run(batch)
    stop, counts = threading.Event(), [0] * len(runners)

    def loop(i, run):
        while not stop.is_set():
            run(batch)
            counts[i] += 1

    threads = [threading.Thread(target=loop, args=(i, run)) for i, run in enumerate(runners)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    time.sleep(seconds)
    stop.set()
    for thread in threads:
        thread.join()
    return len(batch) * sum(counts) / (time.perf_counter() - started)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", required=True, help="an exported SavedModel (deeplab export)")
    parser.add_argument("--size", type=int, default=513, help="square JPEG side")
    parser.add_argument("--batch", type=int, default=1, help="images per call")
    parser.add_argument("--seconds", type=float, default=15.0, help="timed seconds per mode")
    args = parser.parse_args()

    import numpy as np
    import tensorflow as tf
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (args.size, args.size, 3), dtype=np.uint8)).save(
        buf, "JPEG"
    )
    batch = np.array([buf.getvalue()] * args.batch, dtype=object)
    signature = tf.saved_model.load(args.model_dir).signatures["serving_default"]
    (input_name,) = signature.structured_input_signature[1]
    modes = {
        "one2": [_session_runner(tf, args.model_dir, 2)],
        "two1": [_session_runner(tf, args.model_dir, 1), _session_runner(tf, args.model_dir, 1)],
        "eager": [lambda b: signature(**{input_name: tf.constant(b)})],
    }
    result = {"size": args.size, "batch": args.batch, "cpus": os.cpu_count(), "images_per_second": {}}
    for mode, runners in modes.items():
        result["images_per_second"][mode] = round(_images_per_second(runners, batch, args.seconds), 2)
    rates = result["images_per_second"]
    result["two1_over_one2"] = round(rates["two1"] / rates["one2"], 2)
    result["two1_over_eager"] = round(rates["two1"] / rates["eager"], 2)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
