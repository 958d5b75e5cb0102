"""TflitePusher's keys, artifact type and ComponentSpec: the one module component.py and executor.py take them from
(as TFX's own components do with tfx/types/standard_component_specs.py). The gate's defaults are
models/tflite_export.py's."""

from tfx.types import artifact, standard_artifacts, standard_component_specs
from tfx.types.component_spec import ChannelParameter, ComponentSpec, ExecutionParameter

# Keys of the component's inputs, outputs and parameters (snake_case, as its __init__ arguments).
MODEL_KEY = standard_component_specs.MODEL_KEY
PUSHED_MODEL_KEY = standard_component_specs.PUSHED_MODEL_KEY
EXAMPLES_KEY = standard_component_specs.EXAMPLES_KEY
TFLITE_MODEL_KEY = "tflite_model"
QUANTIZE_KEY = "quantize"
INPUT_SIZE_KEY = "input_size"
TRAIN_SPLIT_KEY = "train_split"
EVAL_SPLIT_KEY = "eval_split"
MAX_PARITY_IMAGES_KEY = "max_parity_images"
MIN_AGREEMENT_KEY = "min_agreement"
MAX_MIOU_DROP_KEY = "max_miou_drop"


class TfliteModel(artifact.Artifact):
    """Directory holding tflite_parity.json (sidecar + parity figures) and, when it passed, deeplab.tflite."""

    TYPE_NAME = "deeplab.TfliteModel"  # "<namespace>.<Name>", no typed PROPERTIES (Kubeflow V2)


class TflitePusherSpec(ComponentSpec):
    PARAMETERS = {
        QUANTIZE_KEY: ExecutionParameter(type=str),
        INPUT_SIZE_KEY: ExecutionParameter(type=int),
        TRAIN_SPLIT_KEY: ExecutionParameter(type=str),
        EVAL_SPLIT_KEY: ExecutionParameter(type=str),
        MAX_PARITY_IMAGES_KEY: ExecutionParameter(type=int),
        MIN_AGREEMENT_KEY: ExecutionParameter(type=float),
        MAX_MIOU_DROP_KEY: ExecutionParameter(type=float),
    }
    INPUTS = {
        MODEL_KEY: ChannelParameter(type=standard_artifacts.Model),
        PUSHED_MODEL_KEY: ChannelParameter(type=standard_artifacts.PushedModel),
        EXAMPLES_KEY: ChannelParameter(type=standard_artifacts.Examples),
    }
    OUTPUTS = {TFLITE_MODEL_KEY: ChannelParameter(type=TfliteModel)}
