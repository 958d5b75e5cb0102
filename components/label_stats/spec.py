"""LabelStatsGen's keys, artifact type, ComponentSpec and defaults: the one module component.py and executor.py
take them from (as TFX's own components do with tfx/types/standard_component_specs.py)."""

from tfx.types import artifact, standard_artifacts, standard_component_specs
from tfx.types.component_spec import ChannelParameter, ComponentSpec, ExecutionParameter

LABEL_STATISTICS_KEY = "label_statistics"
FAIL_ON_ANOMALY_KEY = "fail_on_anomaly"
NUM_CLASSES_KEY = "num_classes"
# JSON string of a data.label_map.LabelMap (json.dumps(label_map.to_json_dict(), sort_keys=True)); absent = VOC
# (or `num_classes` ids). When set, it gives the number of classes, their names, the ignore label and the colours.
LABEL_MAP_KEY = "label_map"

# Fail the run on labels outside the classes and the ignore label (or undecodable masks).
DEFAULT_FAIL_ON_ANOMALY = True


class LabelStatistics(artifact.Artifact):
    """Directory holding label_stats.json and label_stats.png for the splits in `split_names`."""

    # "<namespace>.<Name>": the form Kubeflow Pipelines v2 needs for a custom artifact schema title.
    # No typed PROPERTIES: Kubeflow v2 compiles custom types to the generic Artifact schema, which has none;
    # the split names go into the custom property `split_names`.
    TYPE_NAME = "deeplab.LabelStatistics"


class LabelStatsGenSpec(ComponentSpec):
    """Parameters of LabelStatsGen (documented on LabelStatsGen.__init__)."""

    PARAMETERS = {
        standard_component_specs.EXCLUDE_SPLITS_KEY: ExecutionParameter(type=str, optional=True),
        FAIL_ON_ANOMALY_KEY: ExecutionParameter(type=int, optional=True),
        NUM_CLASSES_KEY: ExecutionParameter(type=int, optional=True),
        LABEL_MAP_KEY: ExecutionParameter(type=str, optional=True),
    }
    INPUTS = {standard_component_specs.EXAMPLES_KEY: ChannelParameter(type=standard_artifacts.Examples)}
    OUTPUTS = {LABEL_STATISTICS_KEY: ChannelParameter(type=LabelStatistics)}
