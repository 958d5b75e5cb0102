"""Seconds per training step of the `demo` preset (MobileNetV2 0.35, crop 129, batch 16) through the real
`models.train.compile_model` + `Model.fit`, on a fixed random batch (no input pipeline in the figure).

    .venv/bin/python bench/demo_step.py plain 30          # float32 step
    NO_METRIC=1 .venv/bin/python bench/demo_step.py plain 30   # the same without the training mIoU metric
    .venv/bin/python bench/demo_step.py xla 20            # jit_compile (XLA); the first steps include compiling
    .venv/bin/python bench/demo_step.py plain 30 precision='"mixed_bfloat16"'   # any HParams field as NAME=JSON

Prints one JSON line. Measured 2026-12-03 on 2 AMD EPYC (Zen 4, avx512_bf16) cores: see bench/RESULTS.md rows 22-27.
"""

import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from models import hparams as hparams_lib  # noqa: E402
from models import model_io  # noqa: E402
from models import train as train_lib  # noqa: E402


def main(argv):
    mode = argv[0] if argv else "plain"
    steps = int(argv[1]) if len(argv) > 1 else 30
    overrides = {k: json.loads(v) for k, v in (item.split("=", 1) for item in argv[2:])}
    overrides.setdefault("precision", "float32")
    hp = hparams_lib.preset("demo", xla=(mode == "xla"), **overrides)
    model = model_io.build_model(hp.model, hp.precision, **hp.build_options())
    train_lib.compile_model(model, hp, hp.train_steps)
    if os.environ.get("NO_METRIC"):
        optimizer = train_lib.build_optimizer(hp, hp.train_steps)
        model.compile(optimizer=optimizer, loss=train_lib.MaskedSparseCrossEntropy())
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (hp.batch_size, hp.crop_size, hp.crop_size, 3)).astype(np.float32)
    y = rng.integers(0, hp.num_classes, (hp.batch_size, hp.crop_size, hp.crop_size, 1)).astype(np.int32)
    data = tf.data.Dataset.from_tensors((x, y)).repeat()
    started = time.time()
    model.fit(data, steps_per_epoch=2, epochs=1, verbose=0)  # tracing (and XLA compiling)
    first = time.time() - started
    started = time.time()
    model.fit(data, steps_per_epoch=steps, epochs=1, verbose=0)
    per_step = (time.time() - started) / steps
    result = {
        "mode": mode,
        "metric": not os.environ.get("NO_METRIC"),
        "overrides": overrides,
        "first_2_steps_s": round(first, 1),
        "s_per_step": round(per_step, 4),
        "loadavg": os.getloadavg()[0],
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1:])
