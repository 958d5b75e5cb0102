"""Milliseconds per image of an export's `logits` signature on 60 images of 60 different sizes (160-320 px,
like the demo's val set), twice, and on one size repeated: how much of evaluation is per-shape set-up.

    .venv/bin/python bench/eval_shapes.py runs/demo/serving/deeplab/<version>
    TF_ENABLE_ONEDNN_OPTS=0 .venv/bin/python bench/eval_shapes.py runs/demo/serving/deeplab/<version>

Measured 2026-12-03 on 2 AMD EPYC (Zen 4) cores, demo model: oneDNN (default there) 51.6 ms first pass, 33.9 ms
second, 19.1 ms same shape; TF's own kernels 22.0 / 13.8 / 16.0 ms (bench/RESULTS.md row 26).
"""

import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402


def main(export_dir, count=60):
    logits = tf.saved_model.load(export_dir).signatures["logits"]
    rng = np.random.default_rng(0)
    sizes = [(int(rng.integers(160, 321)), int(rng.integers(160, 321))) for _ in range(count)]
    images = [rng.uniform(0, 255, (1, h, w, 3)).astype(np.float32) for h, w in sizes]
    onednn = os.environ.get("TF_ENABLE_ONEDNN_OPTS", "default")
    for attempt in ("first pass", "second pass"):
        started = time.time()
        for image in images:
            logits(images=tf.constant(image))
        print(f"TF_ENABLE_ONEDNN_OPTS={onednn} {attempt}: {(time.time() - started) / count * 1000:.1f} ms/image")
    started = time.time()
    for _ in range(20):
        logits(images=tf.constant(images[0]))
    print(f"TF_ENABLE_ONEDNN_OPTS={onednn} one size repeated: {(time.time() - started) / 20 * 1000:.1f} ms/image")


if __name__ == "__main__":
    main(sys.argv[1])
