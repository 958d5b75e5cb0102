"""MiouEvaluator's keys, ComponentSpec and defaults: the one module component.py and executor.py take them from
(as TFX's own components do with tfx/types/standard_component_specs.py).

The channel keys are the standard Evaluator's; the parameters have the same snake_case names as MiouEvaluator's
and create_pipeline()'s arguments. The defaults are plain values of the package `__init__` (re-exported here),
which the CLI and the Beam workers read without TFX.
"""

from tfx.types import standard_artifacts
from tfx.types.component_spec import ChannelParameter, ComponentSpec, ExecutionParameter

from components.miou_evaluator import (  # noqa: F401  (re-exported: the defaults belong with the spec)
    DEFAULT_BATCH_SIZE,
    DEFAULT_EVAL_SPLIT,
    DEFAULT_MAX_EVAL_SKIPPED_FRACTION,
    DEFAULT_NUM_GALLERY,
)

EXAMPLES_KEY = "examples"
MODEL_KEY = "model"
BASELINE_MODEL_KEY = "baseline_model"
EVALUATION_KEY = "evaluation"
BLESSING_KEY = "blessing"
EVAL_SPLIT_KEY = "eval_split"
MIOU_THRESHOLD_KEY = "miou_threshold"
MAX_REGRESSION_KEY = "max_regression"
TTA_KEY = "tta"
NUM_GALLERY_KEY = "num_gallery"
MAX_IMAGES_KEY = "max_images"
BATCH_SIZE_KEY = "batch_size"
MAX_EVAL_SKIPPED_FRACTION_KEY = "max_eval_skipped_fraction"
# JSON string of a data.label_map.LabelMap (json.dumps(label_map.to_json_dict(), sort_keys=True)); absent = VOC.
LABEL_MAP_KEY = "label_map"


class MiouEvaluatorSpec(ComponentSpec):
    """Spec of MiouEvaluator (parameters are documented on MiouEvaluator.__init__)."""

    PARAMETERS = {
        EVAL_SPLIT_KEY: ExecutionParameter(type=str),
        MIOU_THRESHOLD_KEY: ExecutionParameter(type=float),
        MAX_REGRESSION_KEY: ExecutionParameter(type=float),
        TTA_KEY: ExecutionParameter(type=str),  # JSON of models.inference.TTAConfig
        NUM_GALLERY_KEY: ExecutionParameter(type=int, optional=True),
        MAX_IMAGES_KEY: ExecutionParameter(type=int, optional=True),
        BATCH_SIZE_KEY: ExecutionParameter(type=int, optional=True),
        MAX_EVAL_SKIPPED_FRACTION_KEY: ExecutionParameter(type=float, optional=True),
        LABEL_MAP_KEY: ExecutionParameter(type=str, optional=True),  # JSON of data.label_map.LabelMap
    }
    INPUTS = {
        EXAMPLES_KEY: ChannelParameter(type=standard_artifacts.Examples),
        MODEL_KEY: ChannelParameter(type=standard_artifacts.Model),
        BASELINE_MODEL_KEY: ChannelParameter(type=standard_artifacts.Model, optional=True),
    }
    OUTPUTS = {
        EVALUATION_KEY: ChannelParameter(type=standard_artifacts.ModelEvaluation),
        BLESSING_KEY: ChannelParameter(type=standard_artifacts.ModelBlessing),
    }
