"""SchemaGate's keys, artifact type, ComponentSpec and default: the one module component.py and executor.py take
them from (as TFX's own components do with tfx/types/standard_component_specs.py)."""

from tfx.types import artifact, standard_artifacts
from tfx.types.component_spec import ChannelParameter, ComponentSpec, ExecutionParameter

from components.schema_gate import DEFAULT_ALLOW_ANOMALIES  # noqa: F401  (re-exported: the default with the spec)

ANOMALIES_KEY = "anomalies"
RESULT_KEY = "result"
ALLOW_ANOMALIES_KEY = "allow_anomalies"


class ValidationResult(artifact.Artifact):
    """Directory holding validation.json: the schema anomalies per split the gate saw."""

    # "<namespace>.<Name>" as Kubeflow Pipelines v2 needs; no typed PROPERTIES (see LabelStatistics).
    TYPE_NAME = "deeplab.ValidationResult"


class SchemaGateSpec(ComponentSpec):
    """Parameters of SchemaGate (documented on SchemaGate.__init__)."""

    PARAMETERS = {ALLOW_ANOMALIES_KEY: ExecutionParameter(type=int)}
    INPUTS = {ANOMALIES_KEY: ChannelParameter(type=standard_artifacts.ExampleAnomalies)}
    OUTPUTS = {RESULT_KEY: ChannelParameter(type=ValidationResult)}
