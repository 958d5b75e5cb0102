"""MiouEvaluator: a TFX component that evaluates segmentation mIoU and blesses (gates) the model.

Inputs and outputs use the standard artifact types and keys of TFX's own Evaluator
(`examples`, `model`, `baseline_model` -> `evaluation`, `blessing`), so it drops into a pipeline in
its place: the standard Pusher gates on `blessing`, and `LatestBlessedModelStrategy` finds the
models it blessed.

    baseline = Resolver(strategy_class=LatestBlessedModelStrategy, model=Channel(type=Model),
                        model_blessing=Channel(type=ModelBlessing)).with_id("latest_blessed_model_resolver")
    evaluator = MiouEvaluator(examples=example_gen.outputs["examples"], model=trainer.outputs["model"],
                              baseline_model=baseline.outputs["model"], miou_threshold=0.70,
                              max_regression=0.005, tta={"scales": [0.5, 0.75, 1.0], "flip": True})
    pusher = Pusher(model=trainer.outputs["model"], model_blessing=evaluator.outputs["blessing"], ...)
"""

import json
from typing import Any, Dict, Optional, Union

from tfx import types
from tfx.dsl.components.base import base_beam_component, executor_spec
from tfx.types import standard_artifacts

from components.miou_evaluator import executor
from components.miou_evaluator.evaluate import check_max_eval_skipped_fraction
from components.miou_evaluator.spec import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_EVAL_SPLIT,
    DEFAULT_MAX_EVAL_SKIPPED_FRACTION,
    DEFAULT_NUM_GALLERY,
    MiouEvaluatorSpec,
)


def tta_json(tta):
    """JSON string of a TTAConfig / dict / None / 'export' (validated here, at pipeline definition time)."""
    from components.miou_evaluator.evaluate import TTA_FROM_EXPORT, resolve_tta

    if tta == TTA_FROM_EXPORT:
        return json.dumps(TTA_FROM_EXPORT)
    return json.dumps(resolve_tta(tta).to_json_dict(), sort_keys=True)


class MiouEvaluator(base_beam_component.BaseBeamComponent):
    """Dataset-level mIoU of a segmentation model (and of the last blessed model), with a gate."""

    SPEC_CLASS = MiouEvaluatorSpec
    EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(executor.Executor)

    def __init__(
        self,
        examples: types.BaseChannel,
        model: types.BaseChannel,
        baseline_model: Optional[types.BaseChannel] = None,
        eval_split: str = DEFAULT_EVAL_SPLIT,
        miou_threshold: float = 0.0,
        max_regression: float = 0.0,
        tta: Union[None, Dict[str, Any], Any] = None,
        num_gallery: int = DEFAULT_NUM_GALLERY,
        max_images: Optional[int] = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
        max_eval_skipped_fraction: float = DEFAULT_MAX_EVAL_SKIPPED_FRACTION,
        label_map: Optional[Any] = None,
    ):
        """Args:
        examples: Examples (ExampleGen output) holding `eval_split`.
        model: Model whose `Format-Serving` SavedModel has the `logits` signature (models.export).
        baseline_model: optional Model to compare with, normally the latest blessed model from a
          Resolver with LatestBlessedModelStrategy; evaluated on the same data in the same run.
        eval_split: split of `examples` to evaluate (default 'val').
        miou_threshold: absolute gate: blessed only if mIoU >= this.
        max_regression: tolerance vs the baseline: blessed only if mIoU >= baseline mIoU - this.
        tta: test-time augmentation, a models.inference.TTAConfig or its dict
          (e.g. {"scales": [0.5, 0.75, 1.0, 1.25, 1.5, 1.75], "flip": True}); default whole image;
          "export": the TTA baked into the model's serving signatures by models.export, so the
          gate measures exactly what TF Serving answers.
        num_gallery: how many best and worst images the report shows.
        max_images: evaluate a random sample of this many images (smoke runs only).
        batch_size: at most this many images per model call; images the model sees at the same
          size (same size, or same padded canvas with TTA `pad_multiple`) share a call. The
          confusion matrices do not depend on it; 1 runs one image per call.
        max_eval_skipped_fraction: gate on completeness: blessed only if at most this fraction of
          the evaluation records were skipped (unreadable, labels out of range, ...), i.e.
          skipped / (evaluated + skipped) <= this; default DEFAULT_MAX_EVAL_SKIPPED_FRACTION (0.0):
          a model is not blessed on a partial evaluation. Count, fraction, threshold and reasons
          are in evaluation.json ('blessing' and 'data'), the report and the blessing message.
        label_map: the dataset's classes (None: VOC; a data.label_map.LabelMap, its dict, a built-in name, a
          JSON/YAML path or its JSON string): number of classes, per-class names in evaluation.json and the
          report, the ignore label and the gallery colours.
        """
        from components.voc_example_gen.component import label_map_json

        if not 0.0 <= float(miou_threshold) <= 1.0:
            raise ValueError(f"miou_threshold is an mIoU in [0, 1], got {miou_threshold!r}")
        if float(max_regression) < 0.0:
            raise ValueError(f"max_regression is a non-negative mIoU tolerance, got {max_regression!r}")
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size!r}")
        max_eval_skipped_fraction = check_max_eval_skipped_fraction(max_eval_skipped_fraction)
        spec = MiouEvaluatorSpec(
            examples=examples,
            model=model,
            baseline_model=baseline_model,
            eval_split=eval_split,
            miou_threshold=float(miou_threshold),
            max_regression=float(max_regression),
            tta=tta_json(tta),
            num_gallery=int(num_gallery),
            max_images=max_images,
            batch_size=int(batch_size),
            max_eval_skipped_fraction=max_eval_skipped_fraction,
            label_map=label_map_json(label_map),
            evaluation=types.Channel(type=standard_artifacts.ModelEvaluation),
            blessing=types.Channel(type=standard_artifacts.ModelBlessing),
        )
        super().__init__(spec=spec)
