import os

# TFX 1.16 and TFMA 0.47 are built on Keras 2; TF 2.16's tf.keras is Keras 3 unless this is set
# before TensorFlow is first imported.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
