"""SchemaGate: stops the model half of the pipeline when ExampleValidator found anomalies; see component.py."""
# TF_USE_LEGACY_KERAS is set by components/__init__.py (data.use_legacy_keras), imported first.

# Fail on any anomaly; True logs them as a warning and passes. A plain value here (no TFX) for pipeline/configs.py;
# spec.py re-exports it with the keys and the spec.
DEFAULT_ALLOW_ANOMALIES = False
