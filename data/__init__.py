"""Data layer of deeplab-tfx; also the one place that sets TF_USE_LEGACY_KERAS.

TFX 1.16 and TFMA 0.47 are built on Keras 2; TF 2.16's tf.keras is Keras 3 unless TF_USE_LEGACY_KERAS=1 is set
before TensorFlow is first imported. `data` is the bottom package: every other package __init__ (models,
components, pipeline, serving) calls `use_legacy_keras()` from here first, so every entry point (runner.py,
the TFX executors and drivers, Beam workers unpickling components.* / models.* code, the Trainer's
models.trainer_module, tests/conftest.py) has it set before it can import TensorFlow.
"""

import os


def use_legacy_keras():
    """Sets TF_USE_LEGACY_KERAS=1 unless the environment already says otherwise (idempotent)."""
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")


use_legacy_keras()
