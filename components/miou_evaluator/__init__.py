"""mIoU evaluation and gating (blessing) of DeepLab models.

Modules: metrics (NumPy confusion-matrix metrics), beam_eval (the Beam evaluation), evaluate (run +
blessing rule + report), report (JSON/CSV/PNG/HTML/TensorBoard), component + executor (the TFX
MiouEvaluator), cli (`deeplab evaluate`). Importing this package imports nothing heavy.
"""
import os

# TFX 1.16 and TFMA 0.47 are built on Keras 2; TF 2.16's tf.keras is Keras 3 unless this is set
# before TensorFlow is first imported.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
