"""SchemaGate: stops the model half of the pipeline when ExampleValidator found anomalies; see component.py."""
# TF_USE_LEGACY_KERAS is set by components/__init__.py (data.use_legacy_keras), imported first.
