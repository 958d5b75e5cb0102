"""One evaluation, start to finish: Beam run -> metrics -> blessing decision -> report.

`evaluate()` is what both the TFX executor and `deeplab evaluate` call, so a model evaluated
from the command line gets exactly the numbers (and the report) the pipeline's gate saw.
"""

import datetime
import logging

import numpy as np

from components.miou_evaluator import DEFAULT_MAX_EVAL_SKIPPED_FRACTION, beam_eval, metrics
from data.voc import IGNORE_LABEL, VOC_CLASSES

log = logging.getLogger(__name__)

FORMAT_VERSION = 1


def check_max_eval_skipped_fraction(value, name="max_eval_skipped_fraction"):
    """`value` as a float in [0, 1], or ValueError."""
    try:
        fraction = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} is a fraction in [0, 1], got {value!r}") from None
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"{name} is a fraction in [0, 1], got {value!r}")
    return fraction


def skipped_records_check(
    images_evaluated,
    images_skipped,
    max_eval_skipped_fraction=DEFAULT_MAX_EVAL_SKIPPED_FRACTION,
    skipped_by_reason=None,
):
    """The 'skipped_records' check of the gate: passed iff skipped / (evaluated + skipped) <=
    max_eval_skipped_fraction (equal passes), so a model is not blessed on a partial evaluation.
    Returns (check {'name', 'passed', 'detail'}, {threshold, count, total, fraction, reasons})."""
    threshold = check_max_eval_skipped_fraction(max_eval_skipped_fraction)
    skipped, evaluated = int(images_skipped or 0), int(images_evaluated or 0)
    total = evaluated + skipped
    fraction = skipped / total if total else 0.0
    passed = bool(fraction <= threshold)
    reasons = dict(sorted((skipped_by_reason or {}).items()))
    counted = f"{skipped} of {total}" if images_evaluated is not None else f"{skipped}"
    detail = (
        f"{counted} evaluation records skipped (fraction {fraction:.4f}) "
        f"{'<=' if passed else '>'} max_eval_skipped_fraction {threshold:.4f}"
    )
    if skipped:
        detail += " (reasons: " + (", ".join(f"{r} {n}" for r, n in reasons.items()) or "unknown") + ")"
    check = {"name": "skipped_records", "passed": passed, "detail": detail}
    numbers = {
        "max_eval_skipped_fraction": threshold,
        "images_skipped": skipped,
        "images_total": total,
        "skipped_fraction": fraction,
        "skipped_by_reason": reasons,
    }
    return check, numbers


def decide_blessing(
    miou,
    miou_threshold=None,
    baseline_miou=None,
    max_regression=0.0,
    *,
    images_evaluated=None,
    images_skipped=0,
    skipped_by_reason=None,
    max_eval_skipped_fraction=DEFAULT_MAX_EVAL_SKIPPED_FRACTION,
    regression_skipped=None,
):
    """The gate: blessed iff mIoU >= miou_threshold (when set) AND, when a baseline was evaluated,
    mIoU >= baseline mIoU - max_regression AND at most `max_eval_skipped_fraction` of the evaluation
    records were skipped (images_skipped / (images_evaluated + images_skipped); equal passes, so the
    default 0.0 blesses only a complete evaluation). A model without an mIoU (no labelled pixels) is
    never blessed. `regression_skipped`: why there is no baseline mIoU to compare with although a baseline
    model exists (its label map differs): the regression check is skipped, saying so in every message.
    Returns {'blessed', 'checks': [...], 'message', ...}; every check states its numbers."""
    if images_skipped and images_evaluated is None:
        raise ValueError("decide_blessing needs images_evaluated to weigh images_skipped")
    skipped_check, skipped_numbers = skipped_records_check(
        images_evaluated, images_skipped, max_eval_skipped_fraction, skipped_by_reason
    )
    checks = []
    if miou is None:
        checks.append(
            {
                "name": "has_miou",
                "passed": False,
                "detail": "no labelled pixels were evaluated, so there is no mIoU to gate on",
            }
        )
    else:
        if miou_threshold is not None:
            checks.append(
                {
                    "name": "miou_threshold",
                    "passed": bool(miou >= miou_threshold),
                    "detail": f"mIoU {miou:.4f} {'>=' if miou >= miou_threshold else '<'} "
                    f"threshold {miou_threshold:.4f}",
                }
            )
        if baseline_miou is not None:
            floor = baseline_miou - (max_regression or 0.0)
            checks.append(
                {
                    "name": "max_regression",
                    "passed": bool(miou >= floor),
                    "detail": f"mIoU {miou:.4f} {'>=' if miou >= floor else '<'} baseline mIoU "
                    f"{baseline_miou:.4f} - max_regression {max_regression or 0.0:.4f} "
                    f"= {floor:.4f} (change {miou - baseline_miou:+.4f})",
                }
            )
        else:
            checks.append(
                {
                    "name": "max_regression",
                    "passed": True,
                    "skipped": True,
                    "detail": f"regression check skipped: {regression_skipped}"
                    if regression_skipped
                    else "no baseline model (no blessed model yet): regression check skipped",
                }
            )
    checks.append(skipped_check)
    blessed = all(c["passed"] for c in checks)
    failed = [c["detail"] for c in checks if not c["passed"]]
    if regression_skipped and not blessed:  # the blessing line says why the baseline did not count
        failed += [c["detail"] for c in checks if c.get("skipped")]
    message = "BLESSED: " + "; ".join(c["detail"] for c in checks) if blessed else "NOT BLESSED: " + "; ".join(failed)
    return {
        "blessed": blessed,
        "miou_threshold": miou_threshold,
        "max_regression": max_regression,
        "baseline_miou": baseline_miou,
        "regression_skipped": regression_skipped,
        **skipped_numbers,
        "checks": checks,
        "message": message,
    }


def _model_section(cm, images, class_names):
    m = metrics.metrics_from_confusion(cm, class_names)
    per_image = metrics.per_image_average([s for _, s in images])
    headline = {k: m[k] for k in ("miou", "pixel_accuracy", "mean_class_accuracy", "frequency_weighted_iou")}
    headline.update(per_image)
    return {
        "metrics": headline,
        "per_class": m["per_class"],
        "absent_classes": m["absent_classes"],
        "num_classes_present": m["num_classes_present"],
        "num_pixels": m["num_pixels"],
        "invalid_predictions": m["invalid_predictions"],
        "confusion_matrix": np.asarray(cm).tolist(),
    }


def summarize(raw, class_names=VOC_CLASSES, tta=None, data_description=None, max_images=None):
    """The JSON-ready evaluation (everything but the blessing) from `run_beam_evaluation`'s output."""
    images = raw["images"][beam_eval.CURRENT]
    skipped_by_reason = {}
    for reason, _, _ in raw["skipped"]:
        skipped_by_reason[reason] = skipped_by_reason.get(reason, 0) + 1
    result = {
        "format_version": FORMAT_VERSION,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "model": {"path": raw["model_dirs"][beam_eval.CURRENT]},
        "baseline_model": (
            {"path": raw["model_dirs"][beam_eval.BASELINE]} if beam_eval.BASELINE in raw["model_dirs"] else None
        ),
        "data": dict(
            data_description or {},
            images_evaluated=len(images),
            images_skipped=len(raw["skipped"]),
            skipped_by_reason=skipped_by_reason,
            images_total=len(images) + len(raw["skipped"]),
            skipped_fraction=(
                len(raw["skipped"]) / (len(images) + len(raw["skipped"])) if images or raw["skipped"] else 0.0
            ),
            skipped=[
                {"reason": r, "record": n, "detail": d} for r, n, d in raw["skipped"][: beam_eval.MAX_SKIPPED_LISTED]
            ],
            sampled_max_images=max_images,
        ),
        "tta": tta.to_json_dict() if tta is not None else None,
        "tta_description": tta.describe() if tta is not None else None,
        "class_names": list(class_names),
        "seconds": raw.get("seconds"),
        "beam_counters": raw.get("counters", {}),
        "seconds_per_image": raw["seconds"] / len(images) if images and raw.get("seconds") else None,
        "batch_size": raw.get("batch_size"),
    }
    result.update(_model_section(raw["cm"][beam_eval.CURRENT], images, class_names))
    result["best_images"] = [dict(filename=f, **_brief(images, f)) for f, _ in raw["best"]]
    result["worst_images"] = [dict(filename=f, **_brief(images, f)) for f, _ in raw["worst"]]
    result["per_image"] = [
        dict(
            filename=f,
            miou=s["miou"],
            pixel_accuracy=s["pixel_accuracy"],
            num_pixels=s["num_pixels"],
            classes=[class_names[c] for c in s["classes"]],
        )
        for f, s in images
    ]
    if beam_eval.BASELINE in raw["cm"]:
        base = _model_section(raw["cm"][beam_eval.BASELINE], raw["images"][beam_eval.BASELINE], class_names)
        result["baseline"] = base
        result["comparison"] = _compare(result, base)
        base_by_name = dict(raw["images"][beam_eval.BASELINE])
        for row in result["per_image"]:
            row["baseline_miou"] = base_by_name[row["filename"]]["miou"]
    else:
        result["baseline"] = None
        result["comparison"] = None
    return result


def _brief(images, filename):
    summary = dict(images)[filename]
    return {"miou": summary["miou"], "pixel_accuracy": summary["pixel_accuracy"]}


def _delta(a, b):
    return None if a is None or b is None else a - b


def _compare(current, baseline):
    return {
        "metrics": {
            k: _delta(v, baseline["metrics"][k]) for k, v in current["metrics"].items() if isinstance(v, float)
        },
        "per_class_iou": {
            c["name"]: _delta(c["iou"], b["iou"]) for c, b in zip(current["per_class"], baseline["per_class"])
        },
    }


TTA_FROM_EXPORT = "export"


def _classes(model_dir):
    """(class names, ignore label) a model was exported with: its deeplab_export.json label map, VOC's for an
    export that records none."""
    from data.label_map import LabelMap
    from models.export_files import read_label_map

    try:
        label_map = read_label_map(model_dir) or LabelMap.voc()
    except FileNotFoundError:  # not written by models.export: no record of its classes, as before label maps
        label_map = LabelMap.voc()
    return tuple(label_map.names), int(label_map.ignore_label), label_map.name


def label_map_mismatch(model_dir, baseline_model_dir):
    """Why the two models' mIoUs cannot be compared (their label maps differ), or None when they have the same
    classes: the no-regression check only compares like with like."""
    current, baseline = _classes(model_dir), _classes(baseline_model_dir)
    if current[:2] == baseline[:2]:
        return None
    return (
        f"the baseline model's label map ({baseline[2]!r}, {len(baseline[0])} classes) is not this model's "
        f"({current[2]!r}, {len(current[0])} classes), so their mIoUs are not comparable"
    )


def resolve_tta(tta, model_dir=None):
    """TTAConfig from a TTAConfig, its dict, None (whole image, scale 1) or TTA_FROM_EXPORT: the
    TTA baked into the model's serving signatures (assets.extra/deeplab_export.json), so the gate
    measures what TF Serving will answer."""
    from models.inference import TTAConfig

    if isinstance(tta, str) and tta == TTA_FROM_EXPORT:
        from models.export_files import read_export_config

        if model_dir is None:
            raise ValueError("tta='export' needs the model directory to read its export config from")
        return TTAConfig.from_json_dict(read_export_config(model_dir)["tta"])
    try:
        return TTAConfig.coerce(tta)
    except TypeError:
        raise ValueError(f"tta must be a TTAConfig, its dict, None or {TTA_FROM_EXPORT!r}, got {tta!r}") from None


def evaluate(
    model_dir,
    output_dir,
    *,
    baseline_model_dir=None,
    tta=None,
    label_map=None,
    miou_threshold=None,
    max_regression=0.0,
    max_eval_skipped_fraction=DEFAULT_MAX_EVAL_SKIPPED_FRACTION,
    data_description=None,
    tensorboard=True,
    **beam_options,
):
    """Evaluates `model_dir` (and `baseline_model_dir` on the same data in the same run), decides
    the blessing and writes the report into `output_dir`. Returns the evaluation dict (also in
    `output_dir/evaluation.json`); its 'blessing' entry holds the decision. `tta`: see resolve_tta.
    `label_map`: the dataset's classes (a data.label_map.LabelMap, its dict, a built-in name, a JSON/YAML
    path; None: Pascal VOC's): names, ignore label and display colours. `max_eval_skipped_fraction`: the
    gate's tolerance for skipped evaluation records (see decide_blessing; default 0.0: any skipped record
    means not blessed).
    beam_options: beam_eval.run_beam_evaluation's keyword arguments: the data (`examples_pattern` or
    `sample_refs`, `max_images`), the runner (`make_pipeline` or `beam_args`), `num_gallery` and `batch_size`
    (at most this many images per model call; the numbers do not depend on it; 1 is the one-image path)."""
    class_names, ignore_label, palette, label_map_dict = VOC_CLASSES, IGNORE_LABEL, None, None
    if label_map is not None:
        from data.label_map import LabelMap

        label_map = LabelMap.resolve(label_map)
        class_names, ignore_label, palette = list(label_map.names), label_map.ignore_label, label_map.colors()
        label_map_dict = label_map.to_json_dict()
    batch_size = beam_options.get("batch_size", beam_eval.DEFAULT_BATCH_SIZE)
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size!r}")
    max_eval_skipped_fraction = check_max_eval_skipped_fraction(max_eval_skipped_fraction)
    from components.miou_evaluator import report

    model_dirs = {beam_eval.CURRENT: beam_eval.resolve_model_dir(model_dir)}
    tta = resolve_tta(tta, model_dirs[beam_eval.CURRENT])
    regression_skipped = None
    if baseline_model_dir:
        baseline_dir = beam_eval.resolve_model_dir(baseline_model_dir)
        regression_skipped = label_map_mismatch(model_dirs[beam_eval.CURRENT], baseline_dir)
        if regression_skipped:
            log.warning("Baseline %s not evaluated: %s", baseline_dir, regression_skipped)
        else:
            model_dirs[beam_eval.BASELINE] = baseline_dir
    log.info(
        "Evaluating %s%s (TTA: %s)",
        model_dirs[beam_eval.CURRENT],
        f" against baseline {model_dirs[beam_eval.BASELINE]}" if beam_eval.BASELINE in model_dirs else "",
        tta.describe(),
    )
    raw = beam_eval.run_beam_evaluation(
        model_dirs,
        tta,
        staging_dir=f"{str(output_dir).rstrip('/')}/.staging",
        label_map=label_map_dict,
        **beam_options,
    )
    if not raw["images"][beam_eval.CURRENT]:
        reasons = sorted({r for r, _, _ in raw["skipped"]})
        raise ValueError(
            f"no image could be evaluated ({len(raw['skipped'])} records skipped, reasons {reasons}); "
            "check the examples path/split and the report of the data stage"
        )
    result = summarize(raw, class_names, tta, data_description, beam_options.get("max_images"))
    if label_map_dict is not None:  # absent for VOC: evaluation.json stays as it was
        result["label_map"] = label_map_dict
        result["ignore_label"] = int(ignore_label)
    if regression_skipped:
        result["baseline_model"] = {"path": baseline_dir, "evaluated": False, "reason": regression_skipped}
    baseline_miou = result["baseline"]["metrics"]["miou"] if result["baseline"] else None
    data = result["data"]
    data["max_eval_skipped_fraction"] = max_eval_skipped_fraction
    result["blessing"] = decide_blessing(
        result["metrics"]["miou"],
        miou_threshold,
        baseline_miou,
        max_regression,
        images_evaluated=data["images_evaluated"],
        images_skipped=data["images_skipped"],
        skipped_by_reason=data["skipped_by_reason"],
        max_eval_skipped_fraction=max_eval_skipped_fraction,
        regression_skipped=regression_skipped,
    )
    if raw["skipped"]:
        log.warning(
            "%d of %d records were skipped (fraction %.4f, max_eval_skipped_fraction %.4f): %s "
            "(listed in evaluation.json)",
            data["images_skipped"],
            data["images_total"],
            data["skipped_fraction"],
            max_eval_skipped_fraction,
            data["skipped_by_reason"],
        )
    import tensorflow as tf

    staging = f"{str(output_dir).rstrip('/')}/.staging"
    if tf.io.gfile.exists(staging):
        tf.io.gfile.rmtree(staging)
    report.write_report(
        result,
        output_dir,
        gallery={"best": raw["best"], "worst": raw["worst"]},
        tensorboard=tensorboard,
        palette=palette,
    )
    return result
