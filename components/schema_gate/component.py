"""SchemaGate: the Trainer runs only when ExampleValidator found no anomalies (or they are allowed).

ExampleValidator only records what breaks the schema (pipeline/schema/schema.pbtxt, loaded by
ImportSchemaGen) in its `ExampleAnomalies` artifact; nothing in TFX stops a run on them. This component
reads each split's `SchemaDiff.pb` and fails, naming every anomaly and its split, unless
`allow_anomalies` is set: then it logs them as a warning and passes. The pipeline makes the Trainer
depend on it (`trainer.add_upstream_node(gate)`), so a failing gate stops the run before training.

Its `ValidationResult` artifact holds `validation.json` (the anomalies per split) and the custom
properties `blessed` (1: no anomalies) and `num_anomalies`.
"""

from tfx import types
from tfx.dsl.components.base import base_component, executor_spec

from components.schema_gate import executor
from components.schema_gate.spec import DEFAULT_ALLOW_ANOMALIES, SchemaGateSpec, ValidationResult

__all__ = ["SchemaGate", "SchemaGateSpec", "ValidationResult"]


class SchemaGate(base_component.BaseComponent):
    """Fails the run when an `ExampleAnomalies` artifact holds schema anomalies (unless allowed).

    Example:
      gate = SchemaGate(anomalies=example_validator.outputs["anomalies"])
      trainer.add_upstream_node(gate)
    """

    SPEC_CLASS = SchemaGateSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)

    def __init__(self, anomalies: types.BaseChannel, allow_anomalies: bool = DEFAULT_ALLOW_ANOMALIES):
        """Builds the component.

        Args:
          anomalies: ExampleValidator's `anomalies` channel.
          allow_anomalies: log the anomalies as a warning and pass instead of failing.
        """
        spec = SchemaGateSpec(
            anomalies=anomalies, allow_anomalies=int(bool(allow_anomalies)), result=types.Channel(type=ValidationResult)
        )
        super().__init__(spec=spec)
