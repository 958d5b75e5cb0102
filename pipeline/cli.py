"""`deeplab ingest | run | compile`: flags -> one RunOptions -> the pipeline of pipeline/pipeline.py.

- ingest: the data half with LocalDagRunner; writes OUT/ingest_report.json (examples, rejects with file
  names, conversions, class pixel histogram, schema anomalies and TFRecord paths per split).
- run: the whole pipeline locally (LocalDagRunner, sqlite ML Metadata, caching).
- compile: the same pipeline as Kubeflow Pipelines v2 JSON (KubeflowV2DagRunner, offline).

The report (ML Metadata -> report -> summary) lives in pipeline/report.py, `deeplab demo` in pipeline/demo.py.
"""

import dataclasses
import json
import os
import sys
import time
from typing import Any, Dict, Optional, Sequence

from data.layouts import DATASET_LAYOUTS
from models.hparams import add_preset_flags
from pipeline import configs
from pipeline.report import REPORT_FILE, build_model_report, build_report, print_summary, write_report

# ---------------------------------------------------------------------------------------------- arguments
_CONFIGS_CONSTANT = object()


def add_typed_flag(group, flag, kind, text, default=_CONFIGS_CONSTANT):
    """A typed flag whose help ends with its default (also used by serving/cli.py); without `default`, the
    pipeline/configs.py constant of its name (--keep-versions: KEEP_VERSIONS)."""
    if default is _CONFIGS_CONSTANT:
        default = getattr(configs, flag[2:].replace("-", "_").upper())
    group.add_argument(flag, type=kind, default=default, help=f"{text} (default %(default)s)")


def _add_beam_arg_flag(group, text):
    """--beam-arg ARG, repeatable: the Beam pipeline arguments of the pipeline commands and of `infer`."""
    group.add_argument("--beam-arg", action="append", default=[], metavar="ARG", help=text)


def _add_data_arguments(parser):
    data = parser.add_argument_group("data")
    data.add_argument(
        "--voc-root", default=configs.VOC_ROOT, help="VOCdevkit/VOC2012 (or a folder above it); local path or gs://..."
    )
    data.add_argument(
        "--sbd-root",
        default=configs.SBD_ROOT,
        help="SBD benchmark_RELEASE (or its dataset/ folder), for sbd_* and train_aug recipes",
    )
    data.add_argument(
        "--split-recipe",
        action="append",
        default=[],
        metavar="SPLIT=RECIPE",
        help="an output split and its recipe of data/splits.py (voc_train, voc_val, voc_trainval, "
        "sbd_train, sbd_val, train_aug, sbd_train_minus_voc_val, file:PATH); repeat for "
        "more splits. A bare RECIPE makes a split of the same name. Default: "
        + ", ".join(f"{k}={v}" for k, v in configs.SPLIT_RECIPES.items()),
    )
    data.add_argument("--train-recipe", help="shortcut for --split-recipe train=RECIPE")
    data.add_argument("--val-recipe", help="shortcut for --split-recipe val=RECIPE")
    data.add_argument(
        "--reference-tfrecords",
        action="append",
        default=[],
        metavar="SPLIT=GLOB",
        help="import TFRecords written by sthalles/deeplab_v3 (height, width, image_raw, "
        "annotation_raw) as SPLIT instead of reading a dataset root, e.g. "
        "train='/data/tfrecords/train.tfrecords'; repeat per split",
    )
    data.add_argument(
        "--layout",
        choices=("voc",) + DATASET_LAYOUTS,
        default=configs.LAYOUT,
        help="dataset layout: voc (--voc-root / --sbd-root and split recipes, default); generic (--data-root "
        "with images/, masks/, splits/<split>.txt and an optional label_map.json); cityscapes (--data-root with "
        "leftImg8bit/ and gtFine/, 19 train ids); ade20k (--data-root: ADEChallengeData2016, 150 classes). "
        "For the last three --split-recipe SPLIT=NAME names one of the dataset's splits (default "
        + ", ".join(f"{k}={v}" for k, v in configs.GENERIC_SPLIT_RECIPES.items())
        + ")",
    )
    data.add_argument("--data-root", default=configs.DATA_ROOT, help="root of a generic, cityscapes or ade20k dataset")
    data.add_argument(
        "--label-map",
        default=configs.LABEL_MAP,
        metavar="FILE|voc|cityscapes|ade20k",
        help="the dataset's classes: a built-in label map or a label map JSON/YAML file (data/label_map.py); "
        "masks are encoded through it, and the label statistics, the model and the evaluation use its classes "
        "(default: Pascal VOC's 21 classes)",
    )
    add_typed_flag(
        data, "--max-rejected-fraction", float, "fail when a split rejects more than this fraction of its samples"
    )
    add_typed_flag(data, "--num-shards", int, "TFRecord files per split (0: the Beam runner decides)")
    run = parser.add_argument_group("pipeline")
    run.add_argument("--pipeline-name", default=configs.PIPELINE_NAME, help="name in ML Metadata / Kubeflow")
    _add_beam_arg_flag(
        run,
        "Beam pipeline argument, appended to the defaults "
        f"{' '.join(configs.BEAM_PIPELINE_ARGS)}; later ones win, e.g. "
        "--beam-arg=--direct_num_workers=4 or --beam-arg=--runner=DataflowRunner",
    )


def add_model_arguments(parser):
    model = parser.add_argument_group("model (Trainer -> MiouEvaluator -> AtomicPusher)")
    add_preset_flags(model, default=configs.TRAIN_CONFIG["preset"])
    model.add_argument("--train-steps", type=int, help="training steps (default: the preset's)")
    add_typed_flag(model, "--miou-threshold", float, "push only a model with val mIoU >= this")
    add_typed_flag(model, "--max-regression", float, "... and at most this far below the latest blessed model")
    model.add_argument(
        "--eval-tta",
        default=configs.EVAL_TTA,
        help="evaluation inference: 'export' (what the pushed model serves), 'whole', or a JSON "
        'TTAConfig such as \'{"scales": [0.75, 1.0, 1.25], "flip": true}\' (default %(default)s)',
    )
    model.add_argument(
        "--serving-tta",
        default="whole" if configs.SERVING_TTA is None else json.dumps(configs.SERVING_TTA),
        help="test-time augmentation baked into the pushed SavedModel: 'whole' (one scale, the "
        'fastest answer) or a JSON TTAConfig such as \'{"scales": [0.75, 1.0, 1.25], "flip": '
        "true}'; --eval-tta export then measures exactly that (default %(default)s)",
    )
    model.add_argument("--serving-dir", help="push directory (default: serving/ beside the pipeline root)")
    model.add_argument("--model-name", default=configs.MODEL_NAME, help="TF Serving model name (default %(default)s)")
    add_typed_flag(model, "--keep-versions", int, "versions kept in the push directory")
    model.add_argument(
        "--allow-anomalies",
        action="store_true",
        default=configs.ALLOW_ANOMALIES,
        help="train even when ExampleValidator finds examples that break the curated schema "
        "(pipeline/schema/schema.pbtxt); SchemaGate then only logs them. Default: the run "
        "stops before the Trainer, naming each anomaly",
    )
    model.add_argument(
        "--push-tflite",
        choices=("none", "float16", "int8"),
        default=configs.PUSH_TFLITE,
        metavar="QUANTIZE",
        help="also push a TFLite model (quantization none, float16 or int8) beside the pushed SavedModel, if it "
        "passes the parity gate against it (README: TFLite) (default: no TFLite)",
    )
    add_typed_flag(model, "--tflite-input-size", int, "the TFLite model's fixed square input size")
    model.add_argument(
        "--infer-split",
        default=configs.INFER_SPLIT,
        help="run TFX's BulkInferrer with the blessed model on this split of the ingested Examples (default: none)",
    )
    model.add_argument(
        "--warm-start",
        action="store_true",
        default=configs.WARM_START,
        help="start training from the latest blessed model's weights (the Trainer's base_model): backbone and "
        "ASPP are copied, the logits too when the class count matches (models/finetune.py)",
    )


def _tta_flag(value, flag, keywords=()):
    """A TTA flag: 'whole' -> None, a keyword kept as is, else a JSON TTAConfig dict (validated here)."""
    from models.inference import TTAConfig

    if value == "whole":
        return None
    if value in keywords:
        return value
    try:
        return TTAConfig.coerce(json.loads(value)).to_json_dict()
    except (TypeError, ValueError) as e:
        raise SystemExit(f"{flag} {value!r}: expected {', '.join(keywords + ('whole',))} or a JSON TTAConfig ({e})")


# Model flags that are create_pipeline() arguments of the same name and value.
_MODEL_FLAGS_AS_IS = (
    "train_steps miou_threshold max_regression serving_dir model_name keep_versions allow_anomalies warm_start"
    " push_tflite tflite_input_size infer_split"
).split()


def model_options_from_args(args):
    """create_pipeline() keyword arguments of the model half from the flags."""
    train_config = {"preset": args.preset, **dict(args.set)}
    from data.label_map import LabelMap
    from models import trainer_module
    from pipeline.pipeline import dataset_label_map

    label_map = dataset_label_map(
        _label_map_from_args(args), getattr(args, "layout", configs.LAYOUT), getattr(args, "data_root", None)
    )
    label_map = None if label_map is None else LabelMap.resolve(label_map).to_json_dict()
    try:  # unknown names and bad values fail here, not minutes later inside the Trainer
        trainer_module.hparams_from_custom_config({**train_config, trainer_module.LABEL_MAP_KEY: label_map})
    except ValueError as e:
        raise SystemExit(f"--preset/--set: {e}")
    return dict(
        train_config=train_config,
        eval_tta=_tta_flag(args.eval_tta, "--eval-tta", ("export",)),
        serving_tta=_tta_flag(args.serving_tta, "--serving-tta"),
        **{name: getattr(args, name) for name in _MODEL_FLAGS_AS_IS},
    )


def _add_local_arguments(parser, output_required):
    parser.add_argument(
        "--output-dir",
        required=output_required,
        default=None if output_required else configs.OUTPUT_DIR,
        help="folder for the report, the pipeline root and the ML Metadata sqlite file"
        + ("" if output_required else f" (default {configs.OUTPUT_DIR})"),
    )
    parser.add_argument("--pipeline-root", help="artifact folder (default OUTPUT_DIR/pipeline_root)")
    parser.add_argument("--metadata-path", help="ML Metadata sqlite file (default OUTPUT_DIR/metadata.sqlite)")
    parser.add_argument("--no-cache", action="store_true", help="run every component even if its inputs are unchanged")


def add_arguments(command, parser):
    """Flags of `deeplab ingest|run|compile|infer` (see runner.py; `deeplab demo`'s are in pipeline/demo.py)."""
    if command == "infer":
        _add_infer_arguments(parser)
    elif command in ("ingest", "run"):
        _add_data_arguments(parser)
        _add_local_arguments(parser, output_required=command == "ingest")
        if command == "run":
            add_model_arguments(parser)
    elif command == "compile":
        parser.add_argument(
            "--target",
            choices=["kubeflow"],
            default="kubeflow",
            help="orchestrator to compile for (KubeflowV2DagRunner: Vertex AI / KFP v2)",
        )
        parser.add_argument(
            "--image",
            required=True,
            help="container image with this project installed: the repo's Dockerfile (`make image "
            "IMAGE=gcr.io/PROJECT/deeplab-tfx:TAG`, then push it); every task and, with "
            "--beam-arg=--sdk_container_image=IMAGE, every Dataflow worker runs it",
        )
        parser.add_argument(
            "--output",
            default=configs.KUBEFLOW_OUTPUT_FILE,
            help=f"PipelineJob JSON to write (default {configs.KUBEFLOW_OUTPUT_FILE})",
        )
        parser.add_argument(
            "--schema-file",
            default=configs.KUBEFLOW_SCHEMA_FILE,
            help="the curated schema as the pipeline's tasks see it (default: its path inside the "
            f"image built by `make image`, {configs.KUBEFLOW_SCHEMA_FILE}; or a gs:// copy)",
        )
        parser.add_argument(
            "--pipeline-root",
            default=configs.KUBEFLOW_PIPELINE_ROOT,
            help=f"artifact root the pipeline writes to (default {configs.KUBEFLOW_PIPELINE_ROOT})",
        )
        _add_data_arguments(parser)
        add_model_arguments(parser)
    else:
        raise ValueError(f"pipeline.cli does not implement {command!r}")


def _pairs(values, flag):
    out = {}
    for value in values:
        name, sep, target = value.partition("=")
        if not sep:
            if any(c in value for c in ":/"):
                raise SystemExit(f"{flag} {value!r}: give it as SPLIT={value}")
            name, target = value, value
        if not name or not target:
            raise SystemExit(f"{flag} {value!r}: expected SPLIT=VALUE")
        if name in out:
            raise SystemExit(f"{flag}: split {name!r} is given twice")
        out[name] = target
    return out


def split_recipes_from_args(args):
    """(split_recipes, reference_tfrecords) from the data flags."""
    recipes = _pairs(args.split_recipe, "--split-recipe")
    for split, recipe in ((configs.TRAIN_SPLIT, args.train_recipe), (configs.EVAL_SPLIT, args.val_recipe)):
        if recipe:
            if split in recipes:
                raise SystemExit(f"--{split}-recipe and --split-recipe {split}=... both set split {split!r}")
            recipes[split] = recipe
    references = _pairs(args.reference_tfrecords, "--reference-tfrecords")
    if not recipes and not references:
        recipes = dict(configs.SPLIT_RECIPES)
    return recipes or None, references or None


def check_recipes(split_recipes, args):
    """Fails now, naming the flag and the nearest known recipe, on a VOC split recipe that data/splits.py does not
    know (a typo would otherwise stop the run only after the first components ran)."""
    import difflib

    from data.splits import RECIPES

    known = sorted(r for r in RECIPES if not r.startswith("file:"))
    for split, recipe in (split_recipes or {}).items():
        if recipe.startswith("file:") or recipe in RECIPES:
            continue
        flag = {configs.TRAIN_SPLIT: "--train-recipe", configs.EVAL_SPLIT: "--val-recipe"}.get(split)
        if flag is None or getattr(args, flag[2:].replace("-", "_"), None) != recipe:
            flag = f"--split-recipe {split}="
        else:
            flag += " "
        close = difflib.get_close_matches(recipe, known, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise SystemExit(f"{flag}{recipe}: unknown split recipe; {hint}known recipes: {', '.join(known)}, or file:PATH")


def _check_roots(voc_root, sbd_root, data_root=None):
    """Fails before any TFX start-up when a given root is not there (remote roots are checked by the driver)."""
    from data.fileio import is_remote

    for flag, root in (("--voc-root", voc_root), ("--sbd-root", sbd_root), ("--data-root", data_root)):
        if root and not is_remote(root) and not os.path.isdir(root):
            raise SystemExit(f"{flag} {root!r} does not exist or is not a folder")


# ---------------------------------------------------------------------------------------------- options
@dataclasses.dataclass
class RunOptions:
    """Everything one `deeplab ingest|run|compile|demo` runs with: create_pipeline() keyword arguments
    (`pipeline_kwargs()`) plus `output_dir`, where a local run keeps its report, pipeline root and ML Metadata.

    Built from the flags by `options_from_args`; every default is the one of pipeline/configs.py."""

    output_dir: Optional[str] = None
    pipeline_name: str = configs.PIPELINE_NAME
    pipeline_root: Optional[str] = None  # local runs: OUTPUT_DIR/pipeline_root
    metadata_path: Optional[str] = None  # local runs: OUTPUT_DIR/metadata.sqlite; None for Kubeflow
    voc_root: Optional[str] = configs.VOC_ROOT
    sbd_root: Optional[str] = configs.SBD_ROOT
    split_recipes: Optional[Dict[str, str]] = None
    reference_tfrecords: Optional[Dict[str, str]] = None
    max_rejected_fraction: float = configs.MAX_REJECTED_FRACTION
    num_shards: int = configs.NUM_SHARDS
    beam_args: Sequence[str] = ()  # appended to configs.BEAM_PIPELINE_ARGS (later ones win)
    enable_cache: bool = True
    schema_file: str = configs.SCHEMA_FILE
    with_model: bool = False
    train_config: Optional[Dict[str, Any]] = None
    train_steps: Optional[int] = None
    miou_threshold: float = configs.MIOU_THRESHOLD
    max_regression: float = configs.MAX_REGRESSION
    eval_tta: Any = configs.EVAL_TTA
    serving_tta: Any = configs.SERVING_TTA
    serving_dir: Optional[str] = None
    model_name: str = configs.MODEL_NAME
    keep_versions: int = configs.KEEP_VERSIONS
    allow_anomalies: bool = configs.ALLOW_ANOMALIES
    label_map: Any = configs.LABEL_MAP  # None (VOC), a built-in name, a JSON/YAML path, a LabelMap or its dict
    layout: str = configs.LAYOUT
    data_root: Optional[str] = configs.DATA_ROOT
    warm_start: bool = configs.WARM_START
    push_tflite: Optional[str] = configs.PUSH_TFLITE
    tflite_input_size: int = configs.TFLITE_INPUT_SIZE
    infer_split: Optional[str] = configs.INFER_SPLIT

    def local(self):
        """A copy with pipeline_root and metadata_path filled in under output_dir (a local run)."""
        default_root, default_metadata = configs.local_paths(self.output_dir)
        return dataclasses.replace(
            self, pipeline_root=self.pipeline_root or default_root, metadata_path=self.metadata_path or default_metadata
        )

    def pipeline_kwargs(self):
        """create_pipeline() keyword arguments."""
        kwargs = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        del kwargs["output_dir"]
        kwargs["beam_pipeline_args"] = list(configs.BEAM_PIPELINE_ARGS) + list(kwargs.pop("beam_args"))
        return kwargs


def options_from_args(args, with_model):
    """The RunOptions of `deeplab ingest|run|compile` from its parsed flags (SystemExit naming a bad flag)."""
    split_recipes, reference_tfrecords = split_recipes_from_args(args)
    options = RunOptions(
        output_dir=getattr(args, "output_dir", None),
        pipeline_name=args.pipeline_name,
        pipeline_root=args.pipeline_root,
        metadata_path=getattr(args, "metadata_path", None),
        voc_root=args.voc_root,
        sbd_root=args.sbd_root,
        split_recipes=split_recipes,
        reference_tfrecords=reference_tfrecords,
        max_rejected_fraction=args.max_rejected_fraction,
        num_shards=args.num_shards,
        beam_args=tuple(args.beam_arg),
        enable_cache=not getattr(args, "no_cache", False),
        schema_file=getattr(args, "schema_file", configs.SCHEMA_FILE),
        with_model=with_model,
        label_map=_label_map_from_args(args),
        layout=getattr(args, "layout", configs.LAYOUT),
        data_root=getattr(args, "data_root", configs.DATA_ROOT),
    )
    if options.layout != "voc":
        if not options.data_root:
            raise SystemExit(f"--layout {options.layout} needs --data-root (the root folder of the dataset)")
        if not (args.split_recipe or args.train_recipe or args.val_recipe):
            options = dataclasses.replace(
                options, split_recipes=dict(configs.GENERIC_SPLIT_RECIPES) if not reference_tfrecords else None
            )
    if options.layout == "voc":
        check_recipes(options.split_recipes, args)
    return dataclasses.replace(options, **model_options_from_args(args)) if with_model else options


def _label_map_from_args(args):
    """--label-map as given (None: VOC), checked now so that a bad file fails before any component runs."""
    value = getattr(args, "label_map", configs.LABEL_MAP)
    if value is None:
        return None
    from data.label_map import LabelMap, LabelMapError

    try:
        LabelMap.resolve(value)
    except (LabelMapError, FileNotFoundError) as e:
        raise SystemExit(f"--label-map: {e}") from None
    return value


def check_local_weights(train_config):
    """A local run with ImageNet initialisation fails now, naming the file, not after ingestion in the Trainer."""
    from models import hparams as hparams_lib
    from models.weights import find_weights_file

    hparams = hparams_lib.from_custom_config(train_config)
    if hparams.build_options()["weights"] is not None:  # init_from copies the whole backbone: no h5 needed
        try:
            find_weights_file(
                hparams.backbone, hparams.alpha, None if hparams.weights == "imagenet" else hparams.weights
            )
        except FileNotFoundError as e:
            raise SystemExit(f"{e}\nOr train from scratch: --set weights=null")


# ---------------------------------------------------------------------------------------------- running
def run_pipeline(options):
    """Runs create_pipeline(**options.pipeline_kwargs()) with LocalDagRunner under options.output_dir and
    returns the report dict (pipeline/report.py: build_report, and build_model_report with the model half)."""
    from pipeline.pipeline import create_pipeline, run_local

    options = options.local()
    os.makedirs(os.path.dirname(os.path.abspath(options.metadata_path)), exist_ok=True)
    pipeline = create_pipeline(**options.pipeline_kwargs())
    started = time.time()
    run_local(pipeline)
    report = build_report(options.metadata_path, options.pipeline_name)
    if options.with_model:
        report["model"] = build_model_report(options.metadata_path, options.pipeline_name)
    report.update(
        {
            "pipeline_root": os.path.abspath(options.pipeline_root),
            "metadata_path": os.path.abspath(options.metadata_path),
            "seconds": round(time.time() - started, 1),
        }
    )
    return report


def _run_from_args(args, with_model):
    options = options_from_args(args, with_model)
    if with_model:
        check_local_weights(options.train_config)
    _check_roots(options.voc_root, options.sbd_root, options.data_root)
    return run_pipeline(options)


def _finish(report, output_dir):
    path = write_report(report, os.path.join(output_dir, REPORT_FILE))
    print_summary(report)
    print(f"report: {path}")
    return 0


def _ingest_rejects(error):
    """The per-split report an ExampleGen failure carries (VocExampleGen's RejectsError), else None."""
    from components.voc_example_gen.executor import RejectsError

    while error is not None and not isinstance(error, RejectsError):
        error = error.__cause__ or error.__context__
    return error.splits if error is not None else None


def _ingest(args):
    report_path = os.path.join(args.output_dir, REPORT_FILE)
    try:
        report = _run_from_args(args, with_model=False)
    except SystemExit:
        raise
    except Exception as e:  # pylint: disable=broad-except  # reported in the JSON and on stderr, exit code 1
        failed = {"status": "failed", "error": f"{type(e).__name__}: {e}"}
        splits = _ingest_rejects(e)  # an ExampleGen failure: carry its per-split rejects into our report
        if splits is not None:
            failed["splits"] = splits
        write_report(failed, report_path)
        print(f"ingest FAILED: {type(e).__name__}: {e}\n(report: {report_path})", file=sys.stderr)
        return 1
    return _finish(report, args.output_dir)


def _compile(args):
    from pipeline.pipeline import compile_kubeflow, create_pipeline

    options = options_from_args(args, with_model=True)
    if not (options.voc_root or options.sbd_root or options.reference_tfrecords):
        raise SystemExit(
            "compile needs the data location the pipeline will read: --voc-root gs://... "
            "(and --sbd-root) or --reference-tfrecords SPLIT=GLOB"
        )
    path = compile_kubeflow(create_pipeline(**options.pipeline_kwargs()), args.image, args.output)
    with open(path) as f:
        tasks = sorted(json.load(f)["pipelineSpec"]["root"]["dag"]["tasks"])
    print(f"wrote {path}: Kubeflow Pipelines v2 PipelineJob with tasks {', '.join(tasks)}")
    return 0


def _add_infer_arguments(parser):
    """Flags of `deeplab infer` (pipeline/infer.py, imported only when it runs: --help stays instant)."""
    parser.add_argument(
        "--model", required=True, help="exported SavedModel, or a TF Serving base folder (its newest version)"
    )
    parser.add_argument("--input", required=True, help="folder of images, a glob ('imgs/*.jpg'), a file, or gs://...")
    parser.add_argument("--output", required=True, help="folder for labels/, overlays/, index.jsonl, failed.jsonl")
    parser.add_argument("--overlay", action="store_true", help="also write overlays/<name>.png")
    add_typed_flag(parser, "--batch-size", int, "most images per model call", configs.INFER_BATCH_SIZE)
    add_typed_flag(
        parser,
        "--max-failed-fraction",
        float,
        "fail when more than this fraction of the images is unreadable or oversize",
        configs.MAX_REJECTED_FRACTION,
    )
    add_typed_flag(
        parser, "--max-image-pixels", int, "larger images are listed as failed", configs.INFER_MAX_IMAGE_PIXELS
    )
    add_typed_flag(
        parser,
        "--max-image-side",
        int,
        "images with a longer side are listed as failed",
        configs.INFER_MAX_IMAGE_SIDE,
    )
    _add_beam_arg_flag(
        parser,
        "Beam pipeline argument (default: the DirectRunner in this process), e.g. --beam-arg=--runner="
        "DataflowRunner; repeatable",
    )


def _infer(args):
    from pipeline.infer import INDEX_FILE, TooManyFailedError, run_infer

    try:
        report = run_infer(
            model=args.model,
            source=args.input,
            output_dir=args.output,
            overlay=args.overlay,
            batch_size=args.batch_size,
            max_failed_fraction=args.max_failed_fraction,
            max_pixels=args.max_image_pixels,
            max_side=args.max_image_side,
            beam_args=args.beam_arg,
        )
    except (FileNotFoundError, ValueError, TooManyFailedError) as e:
        print(f"deeplab infer: {e}", file=sys.stderr)
        return 1 if isinstance(e, TooManyFailedError) else 2
    print(
        f"Segmented {report['segmented']} of {report['images']} images in {report['seconds']} s "
        f"({report['images_per_second']} images/s); {report['failed']} failed {report['failed_reasons'] or ''}"
    )
    for row in report["failed_images"]:
        print(f"  failed {row['image']}: {row['reason']}: {row['detail']}")
    print(f"index: {args.output.rstrip('/')}/{INDEX_FILE}")
    return 0


def main(command, args):
    """Entry point called by runner.py."""
    if command == "ingest":
        return _ingest(args)
    if command == "run":
        os.makedirs(args.output_dir, exist_ok=True)
        return _finish(_run_from_args(args, with_model=True), args.output_dir)
    if command == "compile":
        return _compile(args)
    if command == "infer":
        return _infer(args)
    raise ValueError(f"pipeline.cli does not implement {command!r}")
