"""TflitePusher executor: the pushed SavedModel -> .tflite (models/tflite_export.py) -> parity gate -> the
.tflite and its sidecar JSON written into the pushed version folder, beside saved_model.pb.

It runs after AtomicPusher and only for a model that was pushed (its PushedModel `pushed` = 1): the .tflite
belongs to that TF Serving version (`<serving_dir>/<model_name>/<version>/deeplab.tflite` + `.tflite.json`;
TF Serving and `deeplab serve` ignore the extra files). A model below the gate is not written there; its
figures are in the output artifact either way (`tflite_parity.json`, custom properties `passed`, `pushed`,
`pixel_agreement`, `miou_tflite`, `miou_saved_model`, `not_pushed_reason`). A passing .tflite is also kept
in the artifact.
"""

import json
import os

from absl import logging
from tfx.dsl.components.base import base_executor
from tfx.types import artifact_utils
from tfx.utils import io_utils, path_utils

from components.tflite_pusher.spec import (
    EVAL_SPLIT_KEY,
    EXAMPLES_KEY,
    INPUT_SIZE_KEY,
    MAX_MIOU_DROP_KEY,
    MAX_PARITY_IMAGES_KEY,
    MIN_AGREEMENT_KEY,
    MODEL_KEY,
    PUSHED_MODEL_KEY,
    QUANTIZE_KEY,
    TFLITE_MODEL_KEY,
    TRAIN_SPLIT_KEY,
)
from components.types import ArtifactDict, ExecProperties
from models import tflite_export

REPORT_FILE = "tflite_parity.json"


def _split_dir(examples, split):
    uri = artifact_utils.get_split_uri(examples, split)
    return os.path.join(uri, "*")


class Executor(base_executor.BaseExecutor):
    def Do(self, input_dict: ArtifactDict, output_dict: ArtifactDict, exec_properties: ExecProperties) -> None:
        self._log_startup(input_dict, output_dict, exec_properties)
        out = artifact_utils.get_single_instance(output_dict[TFLITE_MODEL_KEY])
        pushed = artifact_utils.get_single_instance(input_dict[PUSHED_MODEL_KEY])
        quantize = tflite_export.check_quantize(exec_properties[QUANTIZE_KEY])
        out.set_string_custom_property(QUANTIZE_KEY, quantize)
        if pushed.get_int_custom_property("pushed") != 1:
            self._not_pushed(out, "the SavedModel was not pushed (not blessed), so neither is its TFLite model")
            return
        model = artifact_utils.get_single_instance(input_dict[MODEL_KEY])
        model_dir = path_utils.serving_model_path(model.uri, path_utils.is_old_model_artifact(model))
        examples = input_dict[EXAMPLES_KEY]
        try:
            path, metadata = tflite_export.export_tflite(
                model_dir,
                out.uri,
                quantize=quantize,
                input_size=int(exec_properties[INPUT_SIZE_KEY]),
                representative_examples=(
                    _split_dir(examples, exec_properties[TRAIN_SPLIT_KEY]) if quantize == "int8" else None
                ),
                parity_examples=_split_dir(examples, exec_properties[EVAL_SPLIT_KEY]),
                max_parity_images=int(exec_properties[MAX_PARITY_IMAGES_KEY]),
                min_agreement=float(exec_properties[MIN_AGREEMENT_KEY]),
                max_miou_drop=float(exec_properties[MAX_MIOU_DROP_KEY]),
            )
        except tflite_export.ParityError as e:
            self._record(out, e.report)
            self._not_pushed(out, str(e))
            return
        self._record(out, metadata)
        destination = pushed.get_string_custom_property("pushed_destination")
        pushed_path = tflite_export.write_tflite(destination, io_utils.read_bytes_file(path), metadata)
        out.set_int_custom_property("pushed", 1)
        out.set_string_custom_property("pushed_destination", pushed_path)
        logging.info("TFLite model (%s) pushed beside the SavedModel: %s", quantize, pushed_path)

    @staticmethod
    def _record(out, metadata):
        parity = metadata["parity"]
        io_utils.write_string_file(os.path.join(out.uri, REPORT_FILE), json.dumps(metadata, indent=2))
        out.set_int_custom_property("passed", int(parity["passed"]))
        for key in ("pixel_agreement", "miou_tflite", "miou_saved_model"):
            if parity[key] is not None:
                out.set_float_custom_property(key, float(parity[key]))

    @staticmethod
    def _not_pushed(out, reason):
        logging.warning("Not pushing the TFLite model: %s", reason)
        out.set_int_custom_property("pushed", 0)
        out.set_string_custom_property("not_pushed_reason", reason)
