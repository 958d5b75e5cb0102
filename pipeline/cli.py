"""`deeplab ingest | run | compile | demo`: drive the pipeline of pipeline/pipeline.py.

- ingest: the data half with LocalDagRunner; writes OUT/ingest_report.json (examples, rejects with file
  names, conversions, class pixel histogram, schema anomalies and TFRecord paths per split).
- run: the whole pipeline locally (LocalDagRunner, sqlite ML Metadata, caching).
- compile: the same pipeline as Kubeflow Pipelines v2 JSON (KubeflowV2DagRunner, offline).
- demo: synthetic data -> pipeline -> summary, report and pictures, in clear steps.
"""
import json
import logging
import os
import re
import sys
import time

from pipeline import configs

REPORT_FILE = "ingest_report.json"
SAMPLES_FILE = "ingest_samples.png"

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------- arguments
def _add_data_arguments(parser):
    data = parser.add_argument_group("data")
    data.add_argument("--voc-root", default=configs.VOC_ROOT,
                      help="VOCdevkit/VOC2012 (or a folder above it); local path or gs://...")
    data.add_argument("--sbd-root", default=configs.SBD_ROOT,
                      help="SBD benchmark_RELEASE (or its dataset/ folder), for sbd_* and train_aug recipes")
    data.add_argument("--split-recipe", action="append", default=[], metavar="SPLIT=RECIPE",
                      help="an output split and its recipe of data/splits.py (voc_train, voc_val, voc_trainval, "
                           "sbd_train, sbd_val, train_aug, sbd_train_minus_voc_val, file:PATH); repeat for "
                           "more splits. A bare RECIPE makes a split of the same name. Default: "
                           + ", ".join(f"{k}={v}" for k, v in configs.SPLIT_RECIPES.items()))
    data.add_argument("--train-recipe", help="shortcut for --split-recipe train=RECIPE")
    data.add_argument("--val-recipe", help="shortcut for --split-recipe val=RECIPE")
    data.add_argument("--reference-tfrecords", action="append", default=[], metavar="SPLIT=GLOB",
                      help="import TFRecords written by sthalles/deeplab_v3 (height, width, image_raw, "
                           "annotation_raw) as SPLIT instead of reading a dataset root, e.g. "
                           "train='/data/tfrecords/train.tfrecords'; repeat per split")
    data.add_argument("--max-rejected-fraction", type=float, default=configs.MAX_REJECTED_FRACTION,
                      help="fail when a split rejects more than this fraction of its samples (default "
                           f"{configs.MAX_REJECTED_FRACTION})")
    data.add_argument("--num-shards", type=int, default=configs.NUM_SHARDS,
                      help="TFRecord files per split (default 0: the Beam runner decides)")
    run = parser.add_argument_group("pipeline")
    run.add_argument("--pipeline-name", default=configs.PIPELINE_NAME, help="name in ML Metadata / Kubeflow")
    run.add_argument("--beam-arg", action="append", default=[], metavar="ARG",
                     help="Beam pipeline argument, appended to the defaults "
                          f"{' '.join(configs.BEAM_PIPELINE_ARGS)}; later ones win, e.g. "
                          "--beam-arg=--direct_num_workers=4 or --beam-arg=--runner=DataflowRunner")


def _add_model_arguments(parser):
    model = parser.add_argument_group("model (Trainer -> MiouEvaluator -> AtomicPusher)")
    model.add_argument("--preset", default=configs.TRAIN_CONFIG["preset"],
                       help="hyper-parameter preset of models/hparams.py: paper (ResNet-v2-50, needs the ImageNet "
                            "h5), demo (small MobileNetV2 from scratch), finetune_os8 (default %(default)s)")
    model.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                       help="override one hyper-parameter (JSON value), e.g. --set crop_size=321 --set "
                            "precision=mixed_bfloat16; repeat for more")
    model.add_argument("--train-steps", type=int, help="training steps (default: the preset's)")
    model.add_argument("--miou-threshold", type=float, default=configs.MIOU_THRESHOLD,
                       help="push only a model with val mIoU >= this (default %(default)s)")
    model.add_argument("--max-regression", type=float, default=configs.MAX_REGRESSION,
                       help="... and at most this far below the latest blessed model (default %(default)s)")
    model.add_argument("--eval-tta", default=configs.EVAL_TTA,
                       help="evaluation inference: 'export' (what the pushed model serves), 'whole', or a JSON "
                            'TTAConfig such as \'{"scales": [0.75, 1.0, 1.25], "flip": true}\' (default %(default)s)')
    model.add_argument("--serving-tta", default="whole" if configs.SERVING_TTA is None else json.dumps(configs.SERVING_TTA),
                       help="test-time augmentation baked into the pushed SavedModel: 'whole' (one scale, the "
                            'fastest answer) or a JSON TTAConfig such as \'{"scales": [0.75, 1.0, 1.25], "flip": '
                            "true}'; --eval-tta export then measures exactly that (default %(default)s)")
    model.add_argument("--serving-dir", help="push directory (default: serving/ beside the pipeline root)")
    model.add_argument("--model-name", default=configs.MODEL_NAME, help="TF Serving model name (default %(default)s)")
    model.add_argument("--keep-versions", type=int, default=configs.KEEP_VERSIONS,
                       help="versions kept in the push directory (default %(default)s)")
    model.add_argument("--allow-anomalies", action="store_true", default=configs.ALLOW_ANOMALIES,
                       help="train even when ExampleValidator finds examples that break the curated schema "
                            "(pipeline/schema/schema.pbtxt); SchemaGate then only logs them. Default: the run "
                            "stops before the Trainer, naming each anomaly")


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


def model_options_from_args(args):
    """create_pipeline() keyword arguments of the model half from the flags."""
    train_config = {"preset": args.preset}
    for item in args.set:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise SystemExit(f"--set {item!r}: expected NAME=VALUE")
        try:
            train_config[name] = json.loads(value)
        except ValueError:
            train_config[name] = value
    from models import hparams as hparams_lib

    try:  # unknown names and bad values fail here, not minutes later inside the Trainer
        hparams_lib.from_custom_config(train_config)
    except ValueError as e:
        raise SystemExit(f"--preset/--set: {e}")
    return dict(train_config=train_config, train_steps=args.train_steps, miou_threshold=args.miou_threshold,
                max_regression=args.max_regression, eval_tta=_tta_flag(args.eval_tta, "--eval-tta", ("export",)),
                serving_tta=_tta_flag(args.serving_tta, "--serving-tta"), serving_dir=args.serving_dir,
                model_name=args.model_name, keep_versions=args.keep_versions, allow_anomalies=args.allow_anomalies)


def _add_local_arguments(parser, output_required):
    parser.add_argument("--output-dir", required=output_required, default=None if output_required else configs.OUTPUT_DIR,
                        help="folder for the report, the pipeline root and the ML Metadata sqlite file"
                             + ("" if output_required else f" (default {configs.OUTPUT_DIR})"))
    parser.add_argument("--pipeline-root", help="artifact folder (default OUTPUT_DIR/pipeline_root)")
    parser.add_argument("--metadata-path", help="ML Metadata sqlite file (default OUTPUT_DIR/metadata.sqlite)")
    parser.add_argument("--no-cache", action="store_true", help="run every component even if its inputs are unchanged")


def add_arguments(command, parser):
    """Flags of `deeplab ingest|run|compile|demo` (see runner.py)."""
    if command in ("ingest", "run"):
        _add_data_arguments(parser)
        _add_local_arguments(parser, output_required=command == "ingest")
        if command == "run":
            _add_model_arguments(parser)
    elif command == "compile":
        parser.add_argument("--target", choices=["kubeflow"], default="kubeflow",
                            help="orchestrator to compile for (KubeflowV2DagRunner: Vertex AI / KFP v2)")
        parser.add_argument("--image", required=True,
                            help="container image with this project installed: the repo's Dockerfile (`make image "
                                 "IMAGE=gcr.io/PROJECT/deeplab-tfx:TAG`, then push it); every task and, with "
                                 "--beam-arg=--sdk_container_image=IMAGE, every Dataflow worker runs it")
        parser.add_argument("--output", default=configs.KUBEFLOW_OUTPUT_FILE,
                            help=f"PipelineJob JSON to write (default {configs.KUBEFLOW_OUTPUT_FILE})")
        parser.add_argument("--schema-file", default=configs.KUBEFLOW_SCHEMA_FILE,
                            help="the curated schema as the pipeline's tasks see it (default: its path inside the "
                                 f"image built by `make image`, {configs.KUBEFLOW_SCHEMA_FILE}; or a gs:// copy)")
        parser.add_argument("--pipeline-root", default=configs.KUBEFLOW_PIPELINE_ROOT,
                            help=f"artifact root the pipeline writes to (default {configs.KUBEFLOW_PIPELINE_ROOT})")
        _add_data_arguments(parser)
        _add_model_arguments(parser)
    elif command == "demo":
        parser.add_argument("--workdir", default=os.path.join("runs", "demo"),
                            help="folder for the synthetic data, the pipeline outputs and the pictures")
        parser.add_argument("--num-train", type=int, default=configs.DEMO_NUM_TRAIN, help="synthetic training images")
        parser.add_argument("--num-val", type=int, default=configs.DEMO_NUM_VAL, help="synthetic validation images")
        parser.add_argument("--seed", type=int, default=configs.DEMO_SEED, help="seed of the synthetic data")
        parser.add_argument("--beam-arg", action="append", default=None, metavar="ARG",
                            help="Beam pipeline argument appended to the defaults (default for the demo: "
                                 + " ".join(configs.DEMO_BEAM_ARGS) + ")")
        parser.add_argument("--no-cache", action="store_true", help="run every component again")
        _add_model_arguments(parser)
        parser.set_defaults(preset=configs.DEMO_PRESET, miou_threshold=configs.DEMO_MIOU_THRESHOLD)
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
    for split, recipe in (("train", args.train_recipe), ("val", args.val_recipe)):
        if recipe:
            if split in recipes:
                raise SystemExit(f"--{split}-recipe and --split-recipe {split}=... both set split {split!r}")
            recipes[split] = recipe
    references = _pairs(args.reference_tfrecords, "--reference-tfrecords")
    if not recipes and not references:
        recipes = dict(configs.SPLIT_RECIPES)
    return recipes or None, references or None


def _check_roots(voc_root, sbd_root):
    """Fails before any TFX start-up when a given root is not there (remote roots are checked by the driver)."""
    from data.fileio import is_remote

    for flag, root in (("--voc-root", voc_root), ("--sbd-root", sbd_root)):
        if root and not is_remote(root) and not os.path.isdir(root):
            raise SystemExit(f"{flag} {root!r} does not exist or is not a folder")


# ---------------------------------------------------------------------------------------------- running
def run_pipeline(output_dir, voc_root=None, sbd_root=None, split_recipes=None, reference_tfrecords=None,
                 pipeline_root=None, metadata_path=None, beam_args=(), enable_cache=True,
                 max_rejected_fraction=configs.MAX_REJECTED_FRACTION, num_shards=configs.NUM_SHARDS,
                 pipeline_name=configs.PIPELINE_NAME, with_model=False, **model_options):
    """Runs create_pipeline() with LocalDagRunner and returns the report dict (see build_report).

    with_model=False runs the data half (`deeplab ingest`); model_options are create_pipeline()'s model
    arguments (model_options_from_args)."""
    from pipeline.pipeline import create_pipeline, run_local

    default_root, default_metadata = configs.local_paths(output_dir)
    pipeline_root = pipeline_root or default_root
    metadata_path = metadata_path or default_metadata
    os.makedirs(os.path.dirname(os.path.abspath(metadata_path)), exist_ok=True)
    pipeline = create_pipeline(
        pipeline_name=pipeline_name, pipeline_root=pipeline_root, voc_root=voc_root, sbd_root=sbd_root,
        split_recipes=split_recipes, reference_tfrecords=reference_tfrecords,
        max_rejected_fraction=max_rejected_fraction, num_shards=num_shards,
        beam_pipeline_args=list(configs.BEAM_PIPELINE_ARGS) + list(beam_args),
        metadata_path=metadata_path, enable_cache=enable_cache, with_model=with_model, **model_options)
    started = time.time()
    run_local(pipeline)
    report = build_report(metadata_path, pipeline_name)
    if with_model:
        report["model"] = build_model_report(metadata_path, pipeline_name)
    report.update({"pipeline_root": os.path.abspath(pipeline_root), "metadata_path": os.path.abspath(metadata_path),
                   "seconds": round(time.time() - started, 1)})
    return report


def latest_outputs(metadata_path, pipeline_name):
    """{component id: {output key: [uri, ...]}} of the latest finished (or cached) run of each component."""
    from ml_metadata.metadata_store import metadata_store
    from ml_metadata.proto import metadata_store_pb2
    from tfx.orchestration import metadata

    store = metadata_store.MetadataStore(metadata.sqlite_metadata_connection_config(metadata_path))
    done = (metadata_store_pb2.Execution.COMPLETE, metadata_store_pb2.Execution.CACHED)
    outputs = {}
    for context in store.get_contexts_by_type("node"):
        prefix = f"{pipeline_name}."
        if not context.name.startswith(prefix):
            continue
        executions = [e for e in store.get_executions_by_context(context.id) if e.last_known_state in done]
        if not executions:
            continue
        latest = max(executions, key=lambda e: e.id)
        events = [e for e in store.get_events_by_execution_ids([latest.id])
                  if e.type == metadata_store_pb2.Event.OUTPUT]
        uris = {a.id: a.uri for a in store.get_artifacts_by_id([e.artifact_id for e in events])}
        node = outputs.setdefault(context.name[len(prefix):], {})
        for event in events:
            node.setdefault(event.path.steps[0].key, []).append(uris[event.artifact_id])
    return outputs


def _schema_anomalies(anomalies_uri, split):
    from tensorflow_metadata.proto.v0 import anomalies_pb2
    import tensorflow as tf

    path = os.path.join(anomalies_uri, f"Split-{split}", "SchemaDiff.pb")
    if not tf.io.gfile.exists(path):
        return None
    anomalies = anomalies_pb2.Anomalies.FromString(tf.io.gfile.GFile(path, "rb").read())
    return [f"{feature}: {info.short_description or info.description}"
            for feature, info in sorted(anomalies.anomaly_info.items())]


def build_report(metadata_path, pipeline_name):
    """The ingest report of the latest run: per split examples, rejects, conversions, histogram, files."""
    import tensorflow as tf

    from components.label_stats.executor import PLOT_FILE, STATS_FILE
    from components.voc_example_gen.executor import REPORT_FILE as EXAMPLE_GEN_REPORT

    outputs = latest_outputs(metadata_path, pipeline_name)
    examples_uri = outputs["VocExampleGen"]["examples"][0]
    with tf.io.gfile.GFile(os.path.join(examples_uri, EXAMPLE_GEN_REPORT)) as f:
        example_gen = json.load(f)
    label_stats_uri = outputs.get("LabelStatsGen", {}).get("label_statistics", [None])[0]
    label_stats = {"splits": {}, "anomalies": [], "warnings": []}
    if label_stats_uri:
        with tf.io.gfile.GFile(os.path.join(label_stats_uri, STATS_FILE)) as f:
            label_stats = json.load(f)
    anomalies_uri = outputs.get("ExampleValidator", {}).get("anomalies", [None])[0]

    splits = {}
    for name, split in example_gen["splits"].items():
        entry = dict(split)
        entry["tfrecord_files"] = sorted(tf.io.gfile.glob(os.path.join(examples_uri, f"Split-{name}", "*")))
        entry["label_histogram"] = label_stats["splits"].get(name)
        entry["schema_anomalies"] = _schema_anomalies(anomalies_uri, name) if anomalies_uri else None
        splits[name] = entry
    return {
        "status": "ok",
        "voc_root": example_gen.get("voc_root"),
        "sbd_root": example_gen.get("sbd_root"),
        "max_rejected_fraction": example_gen.get("max_rejected_fraction"),
        "splits": splits,
        "label_anomalies": label_stats["anomalies"],
        "label_warnings": label_stats["warnings"],
        "artifacts": {
            "examples": examples_uri,
            "statistics": outputs.get("StatisticsGen", {}).get("statistics", [None])[0],
            "schema": outputs.get("ImportSchemaGen", {}).get("schema", [None])[0],
            "anomalies": anomalies_uri,
            "label_statistics": label_stats_uri,
            "label_histogram_png": os.path.join(label_stats_uri, PLOT_FILE) if label_stats_uri else None,
        },
    }


def build_model_report(metadata_path, pipeline_name):
    """Trainer, MiouEvaluator and AtomicPusher outcome of the latest run: mIoU, blessing, pushed version."""
    import tensorflow as tf

    from components.atomic_pusher.executor import NOT_PUSHED_REASON_KEY
    from models.train import REPORT_FILENAME as TRAIN_REPORT

    outputs = latest_outputs(metadata_path, pipeline_name)
    trainer = outputs.get("Trainer", {})
    model_run = trainer.get("model_run", [None])[0]
    train_report = None
    if model_run and tf.io.gfile.exists(os.path.join(model_run, TRAIN_REPORT)):
        with tf.io.gfile.GFile(os.path.join(model_run, TRAIN_REPORT)) as f:
            train_report = json.load(f)
    evaluation_uri = outputs.get("MiouEvaluator", {}).get("evaluation", [None])[0]
    evaluation = None
    if evaluation_uri and tf.io.gfile.exists(os.path.join(evaluation_uri, "evaluation.json")):
        with tf.io.gfile.GFile(os.path.join(evaluation_uri, "evaluation.json")) as f:
            evaluation = json.load(f)
    pushed = artifact_properties(metadata_path, outputs.get("AtomicPusher", {}).get("pushed_model", [None])[0])
    return {
        "model": trainer.get("model", [None])[0],
        "model_run": model_run,
        "train": train_report,
        "evaluation_dir": evaluation_uri,
        "evaluation_html": os.path.join(evaluation_uri, "index.html") if evaluation_uri else None,
        "metrics": (evaluation or {}).get("metrics"),
        "blessing": (evaluation or {}).get("blessing"),
        "pushed": bool(pushed.get("pushed")),
        "pushed_destination": pushed.get("pushed_destination"),
        "pushed_version": pushed.get("pushed_version"),
        "not_pushed_reason": pushed.get(NOT_PUSHED_REASON_KEY),
    }


def artifact_properties(metadata_path, uri):
    """Custom properties of the newest artifact at `uri` in ML Metadata ({} when there is none)."""
    if not uri:
        return {}
    from ml_metadata.metadata_store import metadata_store
    from tfx.orchestration import metadata

    store = metadata_store.MetadataStore(metadata.sqlite_metadata_connection_config(metadata_path))
    artifacts = store.get_artifacts_by_uri(uri)
    if not artifacts:
        return {}
    newest = max(artifacts, key=lambda a: a.id)
    return {k: getattr(v, v.WhichOneof("value")) for k, v in newest.custom_properties.items() if v.WhichOneof("value")}


def write_report(report, path):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(report, f, indent=1)
    return path


def print_summary(report, out=sys.stdout):
    """A short human summary of an ingest report."""
    print(f"pipeline root: {report.get('pipeline_root')}  ({report.get('seconds', '?')} s)", file=out)
    print(f"{'split':<12}{'examples':>10}{'rejected':>10}{'converted':>11}{'files':>7}  source", file=out)
    for name, s in report["splits"].items():
        print(f"{name:<12}{s['examples']:>10}{s['rejected']:>10}{len(s['conversions']):>11}"
              f"{len(s['tfrecord_files']):>7}  {s['source']}", file=out)
        for reason, count in s["rejects_by_reason"].items():
            files = [r["path"] for r in s["rejects"] if r["reason"] == reason]
            print(f"    rejected {reason}: {count}, e.g. {files[:2]}", file=out)
        hist = s.get("label_histogram")
        if hist:
            top = sorted(hist["class_pixel_fraction"].items(), key=lambda kv: -kv[1])[:5]
            print("    class pixels: " + ", ".join(f"{k} {v:.1%}" for k, v in top if v > 0)
                  + f"; ignore {hist['ignore_pixels']:,} px", file=out)
        if s.get("schema_anomalies"):
            print(f"    schema anomalies: {s['schema_anomalies']}", file=out)
    for anomaly in report["label_anomalies"]:
        print(f"LABEL ANOMALY: {anomaly}", file=out)
    print(f"label histogram: {report['artifacts']['label_histogram_png']}", file=out)
    model = report.get("model")
    if model:
        train = model.get("train") or {}
        if train:
            print(f"trained {train.get('steps')} steps in {train.get('train_seconds', '?')} s: "
                  f"val mIoU {train.get('val_miou', float('nan')):.4f} (Trainer)", file=out)
        metrics = model.get("metrics") or {}
        if metrics:
            print(f"evaluation: mIoU {metrics['miou']:.4f}, pixel accuracy {metrics['pixel_accuracy']:.4f}, "
                  f"mean class accuracy {metrics['mean_class_accuracy']:.4f}, fwIoU "
                  f"{metrics['frequency_weighted_iou']:.4f}", file=out)
        blessing = model.get("blessing") or {}
        print(f"blessed: {blessing.get('blessed')} ({blessing.get('message', '')})", file=out)
        if model["pushed"]:
            print(f"pushed version {model['pushed_version']} to {model['pushed_destination']}", file=out)
        else:
            print(f"not pushed: {model.get('not_pushed_reason') or 'model not blessed'}", file=out)
        print(f"evaluation report: {model['evaluation_html']}", file=out)


def save_samples_png(report, path, split="train", count=6):
    """Grid of image | mask | overlay for the first records of a split, read back from the TFRecords."""
    import tensorflow as tf

    from data.tfrecord import parse_example_np
    from data.visualize import overlay, save_grid

    split = split if split in report["splits"] else next(iter(report["splits"]))
    files = report["splits"][split]["tfrecord_files"]
    rows, titles = [], []
    for record in tf.data.TFRecordDataset(files, compression_type="GZIP").take(count):
        image, label, filename = parse_example_np(record.numpy())
        rows.append([image, label, overlay(image, label)])
        titles.append([filename, "mask", "overlay"])
    return save_grid(rows, path, titles=titles)


# ---------------------------------------------------------------------------------------------- commands
def check_local_weights(train_config):
    """A local run with ImageNet initialisation fails now, naming the file, not after ingestion in the Trainer."""
    from models import hparams as hparams_lib
    from models.weights import find_weights_file

    hparams = hparams_lib.from_custom_config(train_config)
    if hparams.weights is not None:
        try:
            find_weights_file(hparams.backbone, hparams.alpha, None if hparams.weights == "imagenet" else hparams.weights)
        except FileNotFoundError as e:
            raise SystemExit(f"{e}\nOr train from scratch: --set weights=null")


def _run_from_args(args, with_model):
    split_recipes, reference_tfrecords = split_recipes_from_args(args)
    model_options = model_options_from_args(args) if with_model else {}
    if with_model:
        check_local_weights(model_options["train_config"])
    _check_roots(args.voc_root, args.sbd_root)
    return run_pipeline(
        args.output_dir, voc_root=args.voc_root, sbd_root=args.sbd_root, split_recipes=split_recipes,
        reference_tfrecords=reference_tfrecords, pipeline_root=args.pipeline_root,
        metadata_path=args.metadata_path, beam_args=args.beam_arg, enable_cache=not args.no_cache,
        max_rejected_fraction=args.max_rejected_fraction, num_shards=args.num_shards,
        pipeline_name=args.pipeline_name, with_model=with_model, **model_options)


def _ingest(args):
    report_path = os.path.join(args.output_dir, REPORT_FILE)
    try:
        report = _run_from_args(args, with_model=False)
    except SystemExit:
        raise
    except Exception as e:  # pylint: disable=broad-except  # reported in the JSON and on stderr, exit code 1
        failed = {"status": "failed", "error": f"{type(e).__name__}: {e}"}
        # An ExampleGen failure names its rejects report: carry the per-split rejects into ours.
        match = re.search(r"rejects report: (\S+?)\)", str(e))
        if match and os.path.isfile(match.group(1)):
            with open(match.group(1)) as f:
                failed["splits"] = json.load(f)["splits"]
        write_report(failed, report_path)
        print(f"ingest FAILED: {type(e).__name__}: {e}\n(report: {report_path})", file=sys.stderr)
        return 1
    write_report(report, report_path)
    print_summary(report)
    print(f"report: {report_path}")
    return 0


def _compile(args):
    from pipeline.pipeline import compile_kubeflow, create_pipeline

    split_recipes, reference_tfrecords = split_recipes_from_args(args)
    if not (args.voc_root or args.sbd_root or reference_tfrecords):
        raise SystemExit("compile needs the data location the pipeline will read: --voc-root gs://... "
                         "(and --sbd-root) or --reference-tfrecords SPLIT=GLOB")
    pipeline = create_pipeline(
        pipeline_name=args.pipeline_name, pipeline_root=args.pipeline_root, voc_root=args.voc_root,
        sbd_root=args.sbd_root, split_recipes=split_recipes, reference_tfrecords=reference_tfrecords,
        max_rejected_fraction=args.max_rejected_fraction, num_shards=args.num_shards,
        beam_pipeline_args=list(configs.BEAM_PIPELINE_ARGS) + list(args.beam_arg), metadata_path=None,
        schema_file=args.schema_file, **model_options_from_args(args))
    path = compile_kubeflow(pipeline, args.image, args.output)
    with open(path) as f:
        tasks = sorted(json.load(f)["pipelineSpec"]["root"]["dag"]["tasks"])
    print(f"wrote {path}: Kubeflow Pipelines v2 PipelineJob with tasks {', '.join(tasks)}")
    return 0


def demo_make_data(workdir, num_train, num_val, seed):
    """Step 1: a synthetic VOCdevkit tree under WORKDIR/data; returns its VOC2012 root.

    An existing tree made with the same settings is reused: the ExampleGen cache fingerprint looks at the
    split lists' mtimes, so rewriting identical files would re-run the whole pipeline."""
    from data.synthetic import generate_voc_dataset

    settings = {"num_train": num_train, "num_val": num_val, "seed": seed, "min_size": configs.DEMO_MIN_SIZE,
                "max_size": configs.DEMO_MAX_SIZE}
    stamp = os.path.join(workdir, "data", "demo_data.json")
    voc_root = os.path.join(workdir, "data", "VOC2012")
    if os.path.isfile(stamp) and os.path.isdir(voc_root):
        with open(stamp) as f:
            if json.load(f) == settings:
                print(f"    reusing {voc_root} (same settings)")
                return voc_root
    voc_root = generate_voc_dataset(os.path.join(workdir, "data"), progress=True, **settings)
    with open(stamp, "w") as f:
        json.dump(settings, f)
    return voc_root


def demo_predict(serving_dir, model_name, image_path, out_dir):
    """Step 4: start the local TF Serving-compatible endpoint on the pushed model, send one image through
    the gRPC client (`deeplab predict`), stop the endpoint. Returns predict's exit code."""
    import runner
    from serving.server import ModelServer

    with ModelServer(os.path.join(serving_dir, model_name), model_name=model_name, grpc_port=0, rest_port=0) as server:
        address = f"{server.host}:{server.grpc_port}"
        print(f"    endpoint up: gRPC {address}, REST {server.host}:{server.rest_port} (model {model_name!r})")
        code = runner.main(["predict", "--server", address, "--model-name", model_name, "--image", image_path,
                            "--out", out_dir])
    print("    endpoint stopped")
    return code


def _demo(args):
    from data.voc import VocDevkit

    workdir = args.workdir
    started = time.time()
    print(f"[1/4] synthetic dataset: {args.num_train} train + {args.num_val} val images")
    voc_root = demo_make_data(workdir, args.num_train, args.num_val, args.seed)
    model_options = model_options_from_args(args)
    print("[2/4] pipeline (LocalDagRunner): VocExampleGen -> StatisticsGen -> ExampleValidator (curated schema) "
          f"-> SchemaGate, LabelStatsGen -> Trainer (preset {args.preset}) -> MiouEvaluator -> AtomicPusher")
    report = run_pipeline(workdir, voc_root=voc_root, split_recipes=dict(configs.SPLIT_RECIPES),
                          beam_args=configs.DEMO_BEAM_ARGS if args.beam_arg is None else args.beam_arg,
                          enable_cache=not args.no_cache, with_model=True,
                          **model_options)
    print("[3/4] report and pictures")
    report["samples_png"] = save_samples_png(report, os.path.join(workdir, SAMPLES_FILE))
    report_path = write_report(report, os.path.join(workdir, REPORT_FILE))
    print_summary(report)
    print(f"samples: {report['samples_png']}\nreport: {report_path}")
    model = report["model"]
    serving_dir = model_options["serving_dir"] or configs.serving_dir_beside(report["pipeline_root"])
    if not os.path.isdir(os.path.join(serving_dir, args.model_name)):
        print(f"no model was ever pushed to {serving_dir} (see the evaluation report): nothing to serve",
              file=sys.stderr)
        return 1
    if not model["pushed"]:
        print("this run's model was not pushed; serving the latest pushed version instead")
    devkit = VocDevkit(voc_root)
    image_path = devkit.image_path(devkit.split_ids("val")[0])
    print(f"[4/4] serving: gRPC prediction of {image_path}")
    code = demo_predict(serving_dir, args.model_name, image_path, os.path.join(workdir, "prediction"))
    print(f"demo finished in {time.time() - started:.0f} s; evaluation report: {model['evaluation_html']}")
    return code


def main(command, args):
    """Entry point called by runner.py."""
    if command == "ingest":
        return _ingest(args)
    if command == "run":
        os.makedirs(args.output_dir, exist_ok=True)
        report = _run_from_args(args, with_model=True)
        path = write_report(report, os.path.join(args.output_dir, REPORT_FILE))
        print_summary(report)
        print(f"report: {path}")
        return 0
    if command == "compile":
        return _compile(args)
    if command == "demo":
        return _demo(args)
    raise ValueError(f"pipeline.cli does not implement {command!r}")
