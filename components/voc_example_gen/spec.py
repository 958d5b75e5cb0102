"""VocExampleGen's parameter keys, ComponentSpec and defaults: the one module component.py and executor.py take
them from (as TFX's own components do with tfx/types/standard_component_specs.py).

The keys are the snake_case names of VocExampleGen's (and create_pipeline()'s) arguments; the standard ExampleGen
keys come from `tfx.types.standard_component_specs` and keep their standard meaning. The defaults are plain values
of the package `__init__` (re-exported here), so pipeline/configs.py can re-export them without importing TFX.
"""

from tfx.proto import example_gen_pb2
from tfx.types import standard_artifacts, standard_component_specs
from tfx.types.component_spec import ChannelParameter, ComponentSpec, ExecutionParameter

from components.voc_example_gen import (  # noqa: F401  (re-exported: the defaults belong with the spec)
    DEFAULT_GENERIC_SPLIT_RECIPES,
    DEFAULT_MAX_REJECTED_FRACTION,
    DEFAULT_NUM_SHARDS,
    DEFAULT_SPLIT_RECIPES,
)

VOC_ROOT_KEY = "voc_root"
SBD_ROOT_KEY = "sbd_root"
MAX_REJECTED_FRACTION_KEY = "max_rejected_fraction"
NUM_SHARDS_KEY = "num_shards"
# JSON string of a data.label_map.LabelMap (json.dumps(label_map.to_json_dict(), sort_keys=True)); absent = VOC.
LABEL_MAP_KEY = "label_map"
# 'generic', 'cityscapes' or 'ade20k' reads that dataset at `data_root` (data.layouts.open_dataset; split patterns
# are its split names); absent or 'voc': VOCdevkit / SBD recipes.
LAYOUT_KEY = "layout"
DATA_ROOT_KEY = "data_root"


class VocExampleGenSpec(ComponentSpec):
    """Parameters of VocExampleGen (documented on VocExampleGen.__init__)."""

    PARAMETERS = {
        standard_component_specs.INPUT_CONFIG_KEY: ExecutionParameter(type=example_gen_pb2.Input),
        standard_component_specs.OUTPUT_CONFIG_KEY: ExecutionParameter(type=example_gen_pb2.Output),
        standard_component_specs.OUTPUT_DATA_FORMAT_KEY: ExecutionParameter(type=int),
        standard_component_specs.OUTPUT_FILE_FORMAT_KEY: ExecutionParameter(type=int),
        VOC_ROOT_KEY: ExecutionParameter(type=str, optional=True),
        SBD_ROOT_KEY: ExecutionParameter(type=str, optional=True),
        MAX_REJECTED_FRACTION_KEY: ExecutionParameter(type=float),
        NUM_SHARDS_KEY: ExecutionParameter(type=int),
        LABEL_MAP_KEY: ExecutionParameter(type=str, optional=True),
        LAYOUT_KEY: ExecutionParameter(type=str, optional=True),
        DATA_ROOT_KEY: ExecutionParameter(type=str, optional=True),
    }
    INPUTS = {}
    OUTPUTS = {standard_component_specs.EXAMPLES_KEY: ChannelParameter(type=standard_artifacts.Examples)}
