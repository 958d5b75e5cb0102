from data import use_legacy_keras

use_legacy_keras()  # before anything here imports TensorFlow (see data/__init__.py)


def _autograph_leaves_tf_keras_alone():
    """AutoGraph's DoNotConvert rules name `keras` (Keras 3, and Keras 2 until it was renamed) but not `tf_keras`,
    so under TF_USE_LEGACY_KERAS every tf.function that calls a tf_keras model (Model.fit's train step, the
    export signatures) also converts Keras' own internals: ~16,800 conversions and ~20 s of tracing before the
    demo model's first training step, against 44 with this rule (bench/RESULTS.md). tf_keras then runs
    unconverted, as Keras 2 always did; the layers in models/ are still converted. Idempotent."""
    from tensorflow.python.autograph.core import config

    if not any(isinstance(r, config.DoNotConvert) and r.matches("tf_keras") for r in config.CONVERSION_RULES):
        config.CONVERSION_RULES = (config.DoNotConvert("tf_keras"),) + tuple(config.CONVERSION_RULES)


_autograph_leaves_tf_keras_alone()
