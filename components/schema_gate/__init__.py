"""SchemaGate: stops the model half of the pipeline when ExampleValidator found anomalies; see component.py."""
import os

# TFX 1.16 is built on Keras 2; TF 2.16's tf.keras is Keras 3 unless this is set before TensorFlow is imported.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
