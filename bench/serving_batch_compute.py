"""What server-side batching can buy on this machine: milliseconds per image of one SavedModel signature called
in-process on batches of 1, 2, 4 and 8 random JPEGs of one size (bench/RESULTS.md row 35). If an image costs about
the same at every batch size, merging concurrent requests cannot raise throughput beyond the share of time a
server spends outside the model.

    .venv/bin/python bench/serving_batch_compute.py --model-dir /tmp/mnv2/1 [--size 513] [--images 16]

Prints one JSON line: ms per batch and per image for each batch size, and the batch-1 / best per-image ratio.
"""

import argparse
import io
import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", required=True, help="an exported SavedModel (deeplab export)")
    parser.add_argument("--signature", default="serving_default")
    parser.add_argument("--size", type=int, default=513, help="square JPEG side")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--images", type=int, default=16, help="images timed per batch size (after 2 warm-up calls)")
    args = parser.parse_args()

    import numpy as np
    import tensorflow as tf
    from PIL import Image

    fn = tf.saved_model.load(args.model_dir).signatures[args.signature]
    (input_name,) = fn.structured_input_signature[1]
    rng = np.random.default_rng(0)
    jpegs = []
    for _ in range(max(args.batch_sizes)):
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (args.size, args.size, 3), dtype=np.uint8)).save(buf, "JPEG")
        jpegs.append(buf.getvalue())
    per_image = {}
    result = {"signature": args.signature, "size": args.size, "batches": {}}
    for batch in args.batch_sizes:
        images = tf.constant(jpegs[:batch])
        for _ in range(2):  # oneDNN builds its primitives for a new shape on the first call
            fn(**{input_name: images})
        calls = max(2, args.images // batch)
        started = time.perf_counter()
        for _ in range(calls):
            fn(**{input_name: images})
        seconds = (time.perf_counter() - started) / calls
        per_image[batch] = 1000 * seconds / batch
        result["batches"][str(batch)] = {
            "ms_per_batch": round(1000 * seconds, 1),
            "ms_per_image": round(per_image[batch], 1),
        }
    if 1 in per_image:
        result["batch1_over_best_per_image"] = round(per_image[1] / min(per_image.values()), 2)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
