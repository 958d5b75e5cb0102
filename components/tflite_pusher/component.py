"""TflitePusher: the pushed model as TFLite beside its SavedModel, when it passes the parity gate.

    tflite = TflitePusher(
        model=trainer.outputs["model"], pushed_model=pusher.outputs["pushed_model"],
        examples=example_gen.outputs["examples"], quantize="int8", input_size=513)

The conversion and the gate are models/tflite_export.py's; executor.py says where the files go.
"""

from tfx import types
from tfx.dsl.components.base import base_component, executor_spec

from components.tflite_pusher import executor
from components.tflite_pusher.spec import TfliteModel, TflitePusherSpec
from models import tflite_gate


class TflitePusher(base_component.BaseComponent):
    """Converts the model AtomicPusher pushed to TFLite and writes it beside the SavedModel if it passes the gate."""

    SPEC_CLASS = TflitePusherSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)

    def __init__(
        self,
        model: types.BaseChannel,
        pushed_model: types.BaseChannel,
        examples: types.BaseChannel,
        quantize: str = "none",
        input_size: int = tflite_gate.DEFAULT_INPUT_SIZE,
        train_split: str = "train",
        eval_split: str = "val",
        max_parity_images: int = tflite_gate.DEFAULT_PARITY_IMAGES,
        min_agreement: float = tflite_gate.FLOAT_MIN_AGREEMENT,
        max_miou_drop: float = tflite_gate.INT8_MAX_MIOU_DROP,
    ):
        """Args: model (Trainer), pushed_model (AtomicPusher), examples (ExampleGen: `eval_split` feeds the parity
        gate, `train_split` the int8 calibration); quantize none|float16|int8; input_size: the static square input;
        max_parity_images, min_agreement (none/float16), max_miou_drop (int8): the gate (models/tflite_export.py)."""
        spec = TflitePusherSpec(
            model=model,
            pushed_model=pushed_model,
            examples=examples,
            quantize=tflite_gate.check_quantize(quantize),
            input_size=tflite_gate.check_input_size(input_size),
            train_split=train_split,
            eval_split=eval_split,
            max_parity_images=int(max_parity_images),
            min_agreement=float(min_agreement),
            max_miou_drop=float(max_miou_drop),
            tflite_model=types.Channel(type=TfliteModel),
        )
        super().__init__(spec=spec)
