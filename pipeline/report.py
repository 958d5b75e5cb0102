"""ML Metadata -> report -> summary: what `deeplab ingest|run|demo` write and print after a local run.

- latest_outputs: the output URIs of each component's latest finished (or cached) execution;
- build_report / build_model_report: the ingest report (per split examples, rejects, conversions, class
  histogram, schema anomalies, TFRecord files) and the model half's outcome (mIoU, blessing, push);
- write_report / print_summary / save_samples_png: the JSON file, the human summary and the sample pictures.
"""

import json
import os
import sys

REPORT_FILE = "ingest_report.json"
SAMPLES_FILE = "ingest_samples.png"


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
        events = [
            e for e in store.get_events_by_execution_ids([latest.id]) if e.type == metadata_store_pb2.Event.OUTPUT
        ]
        uris = {a.id: a.uri for a in store.get_artifacts_by_id([e.artifact_id for e in events])}
        node = outputs.setdefault(context.name[len(prefix) :], {})
        for event in events:
            node.setdefault(event.path.steps[0].key, []).append(uris[event.artifact_id])
    return outputs


def _schema_anomalies(anomalies_uri, split):
    import tensorflow as tf
    from tensorflow_metadata.proto.v0 import anomalies_pb2

    path = os.path.join(anomalies_uri, f"Split-{split}", "SchemaDiff.pb")
    if not tf.io.gfile.exists(path):
        return None
    anomalies = anomalies_pb2.Anomalies.FromString(tf.io.gfile.GFile(path, "rb").read())
    return [
        f"{feature}: {info.short_description or info.description}"
        for feature, info in sorted(anomalies.anomaly_info.items())
    ]


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
    report = {
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
    if example_gen.get("label_map"):  # only a non-default label map is recorded (VOC reports stay as they were)
        report["label_map"] = example_gen["label_map"]
    return report


def build_model_report(metadata_path, pipeline_name):
    """Trainer, MiouEvaluator and AtomicPusher outcome of the latest run: mIoU, blessing, pushed version."""
    import tensorflow as tf

    from components.atomic_pusher.spec import NOT_PUSHED_REASON_KEY
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


def _figure(value):
    """A metric for the summary: None (no labelled pixel to measure on) prints as n/a."""
    return "n/a" if value is None else f"{value:.4f}"


def print_summary(report, out=None):
    """A short human summary of an ingest report (on `sys.stdout` as it is at call time, so redirects hold)."""
    out = out or sys.stdout
    print(f"pipeline root: {report.get('pipeline_root')}  ({report.get('seconds', '?')} s)", file=out)
    if report.get("label_map"):
        label_map = report["label_map"]
        print(f"label map: {label_map.get('name')} ({len(label_map.get('classes', []))} classes)", file=out)
    print(f"{'split':<12}{'examples':>10}{'rejected':>10}{'converted':>11}{'files':>7}  source", file=out)
    for name, s in report["splits"].items():
        print(
            f"{name:<12}{s['examples']:>10}{s['rejected']:>10}{len(s['conversions']):>11}"
            f"{len(s['tfrecord_files']):>7}  {s['source']}",
            file=out,
        )
        for reason, count in s["rejects_by_reason"].items():
            files = [r["path"] for r in s["rejects"] if r["reason"] == reason]
            print(f"    rejected {reason}: {count}, e.g. {files[:2]}", file=out)
        hist = s.get("label_histogram")
        if hist:
            top = sorted(hist["class_pixel_fraction"].items(), key=lambda kv: -kv[1])[:5]
            print(
                "    class pixels: "
                + ", ".join(f"{k} {v:.1%}" for k, v in top if v > 0)
                + f"; ignore {hist['ignore_pixels']:,} px",
                file=out,
            )
        if s.get("schema_anomalies"):
            print(f"    schema anomalies: {s['schema_anomalies']}", file=out)
    for anomaly in report["label_anomalies"]:
        print(f"LABEL ANOMALY: {anomaly}", file=out)
    print(f"label histogram: {report['artifacts']['label_histogram_png']}", file=out)
    model = report.get("model")
    if model:
        train = model.get("train") or {}
        if train:
            print(
                f"trained {train.get('steps')} steps in {train.get('train_seconds', '?')} s: "
                f"val mIoU {_figure(train.get('val_miou'))} (Trainer)",
                file=out,
            )
        metrics = model.get("metrics") or {}
        if metrics:
            print(
                f"evaluation: mIoU {metrics['miou']:.4f}, pixel accuracy {metrics['pixel_accuracy']:.4f}, "
                f"mean class accuracy {metrics['mean_class_accuracy']:.4f}, fwIoU "
                f"{metrics['frequency_weighted_iou']:.4f}",
                file=out,
            )
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
    from data.visualize import colorize, overlay, save_grid

    palette = None
    if report.get("label_map"):
        from data.label_map import LabelMap

        palette = LabelMap.from_json_dict(report["label_map"], source="ingest report label_map").colors()
    split = split if split in report["splits"] else next(iter(report["splits"]))
    files = report["splits"][split]["tfrecord_files"]
    rows, titles = [], []
    for record in tf.data.TFRecordDataset(files, compression_type="GZIP").take(count):
        image, label, filename = parse_example_np(record.numpy())
        if palette is None:
            rows.append([image, label, overlay(image, label)])
        else:
            rows.append([image, colorize(label, palette), overlay(image, label, palette=palette)])
        titles.append([filename, "mask", "overlay"])
    return save_grid(rows, path, titles=titles)
