import importlib.abc
import importlib.util
import sys

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


class _RuleOnceTfKerasLoads(importlib.abc.MetaPathFinder):
    """Applies the rule right after tf_keras is first imported (by models/ or by any library), so that importing
    `models` itself stays free of TensorFlow: `deeplab train --help` and the light modules (config, hparams)
    do not pay ~3 s and TensorFlow's start-up lines for it."""

    def find_spec(self, name, path=None, target=None):
        if name != "tf_keras" or self not in sys.meta_path:
            return None
        sys.meta_path.remove(self)  # find the real spec (TensorFlow also asks for it without importing)
        try:
            spec = importlib.util.find_spec(name)
        finally:
            sys.meta_path.insert(0, self)
        if spec is None or spec.loader is None:
            return spec
        exec_module = spec.loader.exec_module

        def exec_then_rule(module):
            exec_module(module)
            if self in sys.meta_path:
                sys.meta_path.remove(self)
            _autograph_leaves_tf_keras_alone()

        spec.loader.exec_module = exec_then_rule
        return spec


if "tf_keras" in sys.modules:
    _autograph_leaves_tf_keras_alone()
elif not any(isinstance(f, _RuleOnceTfKerasLoads) for f in sys.meta_path):
    sys.meta_path.insert(0, _RuleOnceTfKerasLoads())
