"""mIoU evaluation and gating (blessing) of DeepLab models.

Modules: metrics (NumPy confusion-matrix metrics), beam_eval (the Beam evaluation), evaluate (run +
blessing rule + report), report (JSON/CSV/PNG/HTML/TensorBoard), component + executor (the TFX
MiouEvaluator), cli (`deeplab evaluate`). Importing this package imports nothing heavy.
"""
# TF_USE_LEGACY_KERAS is set by components/__init__.py (data.use_legacy_keras), imported first.

# The gate's default tolerance for evaluation records that could not be evaluated (unreadable, labels out of
# range, ...): 0.0, so a model is blessed only on a complete evaluation. Here, light, so that `deeplab evaluate`
# can show it without importing Beam; MiouEvaluator takes it as component.DEFAULT_MAX_EVAL_SKIPPED_FRACTION.
DEFAULT_MAX_EVAL_SKIPPED_FRACTION = 0.0
# At most this many images of one size per model call (the numbers do not depend on it; 1: one image per call).
DEFAULT_BATCH_SIZE = 8
# Best and worst images shown in the report's gallery.
DEFAULT_NUM_GALLERY = 4
