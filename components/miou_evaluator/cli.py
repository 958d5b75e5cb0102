"""`deeplab evaluate`: mIoU report of any exported model, with the pipeline's own Beam evaluation.

    deeplab evaluate --model EXPORT_DIR --examples EXAMPLES_DIR [--split val] --output-dir OUT
    deeplab evaluate --model EXPORT_DIR --voc-root VOCdevkit/VOC2012 --split-recipe voc_val \\
        --scales 0.5 0.75 1.0 1.25 1.5 1.75 --flip --output-dir OUT

Prints a summary and the path of OUT/index.html. With --miou-threshold or --baseline-model it
also applies the pipeline's gate and exits 1 when the model would not be blessed; the gate includes
--max-eval-skipped-fraction (default 0.0: any skipped evaluation record means not blessed).
"""

import logging

from components.miou_evaluator import (  # light: no Beam/TFX import
    DEFAULT_BATCH_SIZE,
    DEFAULT_EVAL_SPLIT,
    DEFAULT_MAX_EVAL_SKIPPED_FRACTION,
    DEFAULT_NUM_GALLERY,
)
from components.voc_example_gen import DEFAULT_SPLIT_RECIPES

log = logging.getLogger(__name__)


def add_arguments(command, parser):
    parser.add_argument(
        "--model",
        required=True,
        help="SavedModel with a 'logits' signature (models.export), or a Trainer model "
        "artifact directory holding Format-Serving/, or a folder of numbered ones (a serving model base path, "
        "OUT/pipeline_root/Trainer/model): the latest",
    )
    parser.add_argument("--baseline-model", help="optional second model evaluated on the same data for comparison")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--examples",
        help="ExampleGen Examples directory (with Split-<name>/), a split directory, a TFRecord file or a glob",
    )
    source.add_argument("--voc-root", help="read images and masks straight from a VOCdevkit tree")
    parser.add_argument("--split", default=DEFAULT_EVAL_SPLIT, help="split of --examples (default %(default)s)")
    parser.add_argument(
        "--split-recipe",
        default=DEFAULT_SPLIT_RECIPES[DEFAULT_EVAL_SPLIT],
        help="split recipe for --voc-root (default %(default)s; see data/splits.py RECIPES, or file:PATH)",
    )
    parser.add_argument("--sbd-root", help="SBD root, for recipes that use SBD")
    parser.add_argument("--output-dir", required=True, help="where the report is written (local or gs://)")
    tta = parser.add_argument_group("test-time augmentation (models/inference.py)")
    tta.add_argument(
        "--scales",
        type=float,
        nargs="+",
        default=[1.0],
        help="image scales, e.g. 0.5 0.75 1.0 1.25 1.5 1.75 (default 1.0)",
    )
    tta.add_argument("--flip", action="store_true", help="also predict the left-right flipped image")
    tta.add_argument(
        "--mode",
        choices=("whole", "sliding"),
        default="whole",
        help="whole image (default) or sliding windows of --crop-size",
    )
    tta.add_argument("--crop-size", type=int, nargs="+", help="window size for --mode sliding: N or H W")
    tta.add_argument(
        "--stride-fraction",
        type=float,
        default=2.0 / 3.0,
        help="sliding-window stride as a fraction of the crop (default 0.667)",
    )
    tta.add_argument(
        "--average",
        choices=("logits", "probs"),
        default="logits",
        help="average TTA predictions as logits (default) or probabilities",
    )
    tta.add_argument(
        "--pad-multiple",
        type=int,
        help="whole mode: pad each image to k*N + --pad-offset pixels (e.g. 16 with offset 1)",
    )
    tta.add_argument("--pad-offset", type=int, default=0)
    tta.add_argument(
        "--tta-from-export",
        action="store_true",
        help="use the TTA baked into the model's serving signatures (its deeplab_export.json) "
        "instead of the flags above: the numbers TF Serving's answers would get",
    )
    gate = parser.add_argument_group("gate (same rule as the pipeline's MiouEvaluator)")
    gate.add_argument("--miou-threshold", type=float, help="blessed only if mIoU >= this (0..1)")
    gate.add_argument(
        "--max-regression", type=float, default=0.0, help="blessed only if mIoU >= baseline mIoU - this (default 0)"
    )
    gate.add_argument(
        "--max-eval-skipped-fraction",
        type=float,
        default=DEFAULT_MAX_EVAL_SKIPPED_FRACTION,
        help="blessed only if at most this fraction of the evaluation records were skipped "
        "(unreadable, labels out of range, ...), 0..1 "
        f"(default {DEFAULT_MAX_EVAL_SKIPPED_FRACTION}: only a complete evaluation is blessed)",
    )
    gallery_help = "best and worst images in the gallery (default %(default)s)"
    parser.add_argument("--num-gallery", type=int, default=DEFAULT_NUM_GALLERY, help=gallery_help)
    parser.add_argument("--max-images", type=int, help="evaluate a random sample of N images (quick look)")
    parser.add_argument(
        "--batch-size",
        type=int,
        default=DEFAULT_BATCH_SIZE,
        help="at most N images per model call (images of the same size share a call; the numbers "
        "do not depend on it; 1: one image per call; default %(default)s)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="DirectRunner worker processes (>1: multi_processing; each loads the model)",
    )
    parser.add_argument(
        "--beam-arg",
        action="append",
        default=[],
        help="extra Beam pipeline option, repeatable (e.g. --beam-arg=--runner=DataflowRunner)",
    )
    parser.add_argument("--no-tensorboard", action="store_true", help="skip the TensorBoard summaries")
    parser.add_argument(
        "--label-map",
        help="the dataset's classes: voc (default), cityscapes, ade20k or a label map JSON/YAML file "
        "(class names of the report, ignore label, colours; masks read with --voc-root go through it)",
    )


def _tta(args):
    from components.miou_evaluator.evaluate import TTA_FROM_EXPORT
    from models.inference import TTAConfig

    if args.tta_from_export:
        return TTA_FROM_EXPORT
    crop = None
    if args.crop_size:
        if len(args.crop_size) not in (1, 2):
            raise SystemExit("--crop-size takes N or H W")
        crop = tuple(args.crop_size) if len(args.crop_size) == 2 else args.crop_size[0]
    try:
        return TTAConfig(
            scales=tuple(args.scales),
            flip=args.flip,
            mode=args.mode,
            crop_size=crop,
            stride_fraction=args.stride_fraction,
            average=args.average,
            pad_multiple=args.pad_multiple,
            pad_offset=args.pad_offset,
        )
    except ValueError as e:
        raise SystemExit(f"deeplab evaluate: {e}") from None


def _beam_args(args):
    beam_args = list(args.beam_arg)
    if args.workers > 1:
        beam_args += ["--direct_running_mode=multi_processing", f"--direct_num_workers={args.workers}"]
    return beam_args


def format_summary(result):
    """A few readable lines: headline metrics, per-class IoU, absent classes, blessing."""
    from components.miou_evaluator.metrics import REFERENCE_STYLE_KEY

    def pct(v):
        return "n/a" if v is None else f"{100 * v:.2f}%"

    m, d = result["metrics"], result["data"]
    skipped = ""
    if d["images_skipped"]:
        skipped = f" (skipped {d['images_skipped']}"
        if "skipped_fraction" in d:
            skipped += f" of {d['images_total']} records, {pct(d['skipped_fraction'])}"
            if d.get("max_eval_skipped_fraction") is not None:
                over = d["skipped_fraction"] > d["max_eval_skipped_fraction"]
                skipped += (
                    f", {'OVER' if over else 'within'} max_eval_skipped_fraction {d['max_eval_skipped_fraction']:.4f}"
                )
        skipped += f": {d['skipped_by_reason']})"
    lines = [
        f"images evaluated: {d['images_evaluated']}" + skipped,
        f"TTA: {result['tta_description']}",
        f"mIoU {pct(m['miou'])} (dataset-level over {result['num_classes_present']} present classes) | "
        f"pixel accuracy {pct(m['pixel_accuracy'])} | mean class accuracy {pct(m['mean_class_accuracy'])} | "
        f"fwIoU {pct(m['frequency_weighted_iou'])}",
        f"per-image mean mIoU, reference-repo style (not the VOC figure): {pct(m[REFERENCE_STYLE_KEY])}",
        "per-class IoU: " + ", ".join(f"{c['name']} {pct(c['iou'])}" for c in result["per_class"] if c["present"]),
    ]
    if result["absent_classes"]:
        lines.append("absent (left out of the means): " + ", ".join(result["absent_classes"]))
    baseline_model = result.get("baseline_model") or {}
    if baseline_model.get("reason"):
        lines.append(f"baseline {baseline_model['path']} not evaluated: {baseline_model['reason']}")
    if result.get("baseline"):
        lines.append(
            f"baseline mIoU {pct(result['baseline']['metrics']['miou'])} "
            f"(change {100 * result['comparison']['metrics']['miou']:+.2f} points)"
        )
    if result.get("seconds_per_image"):
        lines.append(f"time: {result['seconds']:.1f} s ({result['seconds_per_image']:.2f} s/image)")
    return "\n".join(lines)


def main(command, args):
    from components.miou_evaluator import beam_eval, report
    from components.miou_evaluator.evaluate import evaluate

    if args.batch_size < 1:
        raise SystemExit(f"deeplab evaluate: --batch-size must be >= 1, got {args.batch_size}")
    if not 0.0 <= args.max_eval_skipped_fraction <= 1.0:
        raise SystemExit(
            "deeplab evaluate: --max-eval-skipped-fraction is a fraction in [0, 1], "
            f"got {args.max_eval_skipped_fraction}"
        )
    from models.cli import latest_model

    args.model = latest_model(args.model, "--model")
    args.baseline_model = latest_model(args.baseline_model, "--baseline-model")
    tta = _tta(args)
    if args.examples:
        pattern, refs = beam_eval.resolve_examples(args.examples, args.split), None
        data = {"examples": args.examples, "split": args.split, "pattern": pattern}
    else:
        from data.splits import resolve_recipe

        pattern, refs = None, resolve_recipe(args.split_recipe, voc_root=args.voc_root, sbd_root=args.sbd_root)
        data = {
            "voc_root": args.voc_root,
            "sbd_root": args.sbd_root,
            "split_recipe": args.split_recipe,
            "listed": len(refs),
        }
    result = evaluate(
        args.model,
        args.output_dir,
        examples_pattern=pattern,
        sample_refs=refs,
        baseline_model_dir=args.baseline_model,
        tta=tta,
        miou_threshold=args.miou_threshold,
        max_regression=args.max_regression,
        beam_args=_beam_args(args),
        num_gallery=args.num_gallery,
        max_images=args.max_images,
        data_description=data,
        tensorboard=not args.no_tensorboard,
        batch_size=args.batch_size,
        max_eval_skipped_fraction=args.max_eval_skipped_fraction,
        label_map=getattr(args, "label_map", None),
    )
    print(format_summary(result))
    gated = args.miou_threshold is not None or args.baseline_model
    incomplete = any(c["name"] == "skipped_records" and not c["passed"] for c in result["blessing"]["checks"])
    if gated or incomplete:  # an incomplete evaluation is always said, gated or not
        print(result["blessing"]["message"])
    print(f"report: {args.output_dir.rstrip('/')}/{report.INDEX_HTML}")
    return 1 if gated and not result["blessing"]["blessed"] else 0
