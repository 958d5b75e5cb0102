"""Executor of MiouEvaluator: evaluate, write the report into ModelEvaluation, bless or not.

The ModelBlessing artifact is written exactly like TFX's Evaluator does it
(tfx/components/evaluator/executor.py): custom properties `blessed` (1/0), `current_model`,
`current_model_id`, `baseline_model`, `baseline_model_id` (when there is one), `component_id`,
and an empty BLESSED or NOT_BLESSED file in its directory. That is what the standard Pusher
(`model_utils.is_model_blessed`) and `LatestBlessedModelStrategy` read.
"""

import json
import logging
import os

from tfx.components.evaluator import constants
from tfx.dsl.components.base import base_beam_executor
from tfx.types import artifact_utils
from tfx.utils import io_utils, path_utils

from components.miou_evaluator.spec import (
    BASELINE_MODEL_KEY,
    BATCH_SIZE_KEY,
    BLESSING_KEY,
    DEFAULT_BATCH_SIZE,
    DEFAULT_MAX_EVAL_SKIPPED_FRACTION,
    DEFAULT_NUM_GALLERY,
    EVAL_SPLIT_KEY,
    EVALUATION_KEY,
    EXAMPLES_KEY,
    LABEL_MAP_KEY,
    MAX_EVAL_SKIPPED_FRACTION_KEY,
    MAX_IMAGES_KEY,
    MAX_REGRESSION_KEY,
    MIOU_THRESHOLD_KEY,
    MODEL_KEY,
    NUM_GALLERY_KEY,
    TTA_KEY,
)
from components.types import ArtifactDict, ExecProperties, optional_property

log = logging.getLogger(__name__)


def _model_dir(model):
    # The same path the standard Pusher pushes, so the model evaluated is the model pushed.
    return path_utils.serving_model_path(model.uri, path_utils.is_old_model_artifact(model))


def _split_pattern(examples, split):
    names = artifact_utils.decode_split_names(examples.split_names)
    if split not in names:
        raise ValueError(
            f"Examples artifact {examples.uri} has no split {split!r} (it has {names}); "
            "set MiouEvaluator(eval_split=...) to one of them"
        )
    return os.path.join(artifact_utils.get_split_uri([examples], split), "*")


class Executor(base_beam_executor.BaseBeamExecutor):
    """Runs components.miou_evaluator.evaluate.evaluate with this component's Beam pipeline."""

    def Do(self, input_dict: ArtifactDict, output_dict: ArtifactDict, exec_properties: ExecProperties) -> None:
        from components.miou_evaluator.evaluate import evaluate

        self._log_startup(input_dict, output_dict, exec_properties)
        examples = artifact_utils.get_single_instance(input_dict[EXAMPLES_KEY])
        model = artifact_utils.get_single_instance(input_dict[MODEL_KEY])
        baselines = input_dict.get(BASELINE_MODEL_KEY) or []
        if len(baselines) > 1:
            raise ValueError(f"there can be only one baseline model, got {len(baselines)}")
        baseline = baselines[0] if baselines else None
        evaluation = artifact_utils.get_single_instance(output_dict[EVALUATION_KEY])
        blessing = artifact_utils.get_single_instance(output_dict[BLESSING_KEY])

        # The spec's required parameters are always there; the optional ones may be absent (None) in a pipeline
        # compiled before they existed.
        split = exec_properties[EVAL_SPLIT_KEY]
        tta = json.loads(exec_properties[TTA_KEY])  # a TTAConfig dict, null or "export"
        label_map = optional_property(exec_properties, LABEL_MAP_KEY, None)
        result = evaluate(
            _model_dir(model),
            evaluation.uri,
            examples_pattern=_split_pattern(examples, split),
            baseline_model_dir=_model_dir(baseline) if baseline else None,
            tta=tta,
            miou_threshold=float(exec_properties[MIOU_THRESHOLD_KEY]),
            max_regression=float(exec_properties[MAX_REGRESSION_KEY]),
            make_pipeline=self._make_beam_pipeline,
            num_gallery=int(optional_property(exec_properties, NUM_GALLERY_KEY, DEFAULT_NUM_GALLERY)),
            max_images=optional_property(exec_properties, MAX_IMAGES_KEY, None),
            batch_size=int(optional_property(exec_properties, BATCH_SIZE_KEY, DEFAULT_BATCH_SIZE)),
            max_eval_skipped_fraction=float(
                optional_property(exec_properties, MAX_EVAL_SKIPPED_FRACTION_KEY, DEFAULT_MAX_EVAL_SKIPPED_FRACTION)
            ),
            data_description={"examples": examples.uri, "split": split},
            label_map=None if label_map is None else json.loads(label_map),
        )
        decision = result["blessing"]

        for key in ("miou", "pixel_accuracy", "mean_class_accuracy", "frequency_weighted_iou"):
            if result["metrics"][key] is not None:
                evaluation.set_float_custom_property(key, result["metrics"][key])
        evaluation.set_int_custom_property("images_evaluated", result["data"]["images_evaluated"])
        evaluation.set_int_custom_property("images_skipped", result["data"]["images_skipped"])
        evaluation.set_float_custom_property("skipped_fraction", result["data"]["skipped_fraction"])

        blessing.set_string_custom_property(constants.ARTIFACT_PROPERTY_CURRENT_MODEL_URI_KEY, model.uri)
        blessing.set_int_custom_property(constants.ARTIFACT_PROPERTY_CURRENT_MODEL_ID_KEY, model.id)
        if baseline:
            blessing.set_string_custom_property(constants.ARTIFACT_PROPERTY_BASELINE_MODEL_URI_KEY, baseline.uri)
            blessing.set_int_custom_property(constants.ARTIFACT_PROPERTY_BASELINE_MODEL_ID_KEY, baseline.id)
        if "current_component_id" in exec_properties:
            blessing.set_string_custom_property("component_id", exec_properties["current_component_id"])
        blessing.set_string_custom_property(constants.ARTIFACT_PROPERTY_BLESSING_MESSAGE_KEY, decision["message"])
        if result["metrics"]["miou"] is not None:
            blessing.set_float_custom_property("miou", result["metrics"]["miou"])
        if decision["blessed"]:
            io_utils.write_string_file(os.path.join(blessing.uri, constants.BLESSED_FILE_NAME), "")
            blessing.set_int_custom_property(constants.ARTIFACT_PROPERTY_BLESSED_KEY, constants.BLESSED_VALUE)
            log.info("Model %s %s", model.uri, decision["message"])
        else:
            io_utils.write_string_file(os.path.join(blessing.uri, constants.NOT_BLESSED_FILE_NAME), "")
            blessing.set_int_custom_property(constants.ARTIFACT_PROPERTY_BLESSED_KEY, constants.NOT_BLESSED_VALUE)
            log.warning("Model %s %s; the Pusher will not push it", model.uri, decision["message"])
        log.info("Evaluation report: %s", os.path.join(evaluation.uri, "index.html"))
