"""mIoU evaluation and gating (blessing) of DeepLab models.

Modules: metrics (NumPy confusion-matrix metrics), beam_eval (the Beam evaluation), evaluate (run +
blessing rule + report), report (JSON/CSV/PNG/HTML/TensorBoard), component + executor (the TFX
MiouEvaluator, its keys and spec in spec.py), cli (`deeplab evaluate`). Importing this package imports nothing heavy.
"""
# TF_USE_LEGACY_KERAS is set by components/__init__.py (data.use_legacy_keras), imported first.

# MiouEvaluator's defaults: plain values here, so `deeplab evaluate`'s flags, the Beam workers (beam_eval) and
# pipeline/configs.py read them without importing TFX; spec.py re-exports them with the keys and the spec.

# The split of the Examples evaluated.
DEFAULT_EVAL_SPLIT = "val"
# The gate's tolerance for evaluation records that could not be evaluated (unreadable, labels out of range, ...):
# 0.0, so a model is blessed only on a complete evaluation.
DEFAULT_MAX_EVAL_SKIPPED_FRACTION = 0.0
# At most this many images of one size per model call (the numbers do not depend on it; 1: one image per call).
DEFAULT_BATCH_SIZE = 8
# Best and worst images shown in the report's gallery.
DEFAULT_NUM_GALLERY = 4
