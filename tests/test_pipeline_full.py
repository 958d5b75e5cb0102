"""The whole pipeline end to end on a tiny config: `deeplab run` (ingest -> validate -> Trainer ->
MiouEvaluator -> AtomicPusher) with LocalDagRunner, then the pushed model served by the local TF
Serving-compatible endpoint answers the gRPC and REST clients exactly like the SavedModel in process."""

import contextlib
import io
import json
import os
import re

import numpy as np
import pytest

import runner
from data import synthetic
from tests.helpers import PIPELINE_STAGES

# A tiny MobileNetV2 DeepLab that trains a few steps: the test checks the plumbing, not the accuracy.
TINY = [
    "--preset",
    "demo",
    "--train-steps",
    "4",
    "--set",
    "crop_size=33",
    "--set",
    "batch_size=2",
    "--set",
    "steps_per_epoch=2",
    "--set",
    "precision=float32",
    "--set",
    "aspp_filters=8",
    "--set",
    "log_images=1",
    "--set",
    "checkpoint_every=2",
]


@pytest.fixture(scope="module")
def full_run(tmp_path_factory, in_process_beam):
    work = tmp_path_factory.mktemp("full")
    voc_root = synthetic.generate_voc_dataset(work / "data", num_train=6, num_val=3, seed=3, min_size=40, max_size=56)
    out = work / "out"
    argv = (
        ["run", "--voc-root", voc_root, "--output-dir", str(out), "--miou-threshold", "0.0", "--eval-tta", "export"]
        + TINY
        + in_process_beam
    )
    console = io.StringIO()
    with contextlib.redirect_stdout(console), contextlib.redirect_stderr(console):
        assert runner.main(argv) == 0
    report = json.load(open(out / "ingest_report.json"))
    report["console"] = console.getvalue()
    return voc_root, out, report


def test_console_shows_stages_and_summary_and_the_rest_goes_to_the_log(full_run):
    _, out, report = full_run
    lines = report["console"].splitlines()
    log_line = lines[0]
    assert log_line.startswith("log: ") and "--verbose" in log_line
    log_path = log_line.split()[1]
    assert os.path.dirname(log_path) == os.path.join(str(out), "logs")
    # One line per component.
    for stage in PIPELINE_STAGES:
        assert len(re.findall(rf"\b{stage}\s+done \(", report["console"])) == 1, (stage, report["console"])
    assert any(line.startswith("evaluation: mIoU") for line in lines)
    assert len(lines) <= 60, report["console"]
    for noise in (
        "FutureWarning",
        "cuda",
        "Component %s",
        "Component Trainer is running",
        "pipeline_node",
        "tensorflow/core",
    ):
        assert noise not in report["console"], noise
    with open(log_path) as f:
        log = f.read()
    assert "Component Trainer is running" in log and "Trainer done" in log
    # The Trainer's dataset statistics come from the Transform's graph, not from a pass of its own.
    assert re.search(r"Dataset statistics from the transform graph \S+Transform\S+ \(Transform component\)", log)


def test_run_trains_evaluates_blesses_and_pushes(full_run):
    _, out, report = full_run
    model = report["model"]
    assert model["train"]["steps"] == 4
    assert os.path.isfile(os.path.join(model["model"], "Format-Serving", "saved_model.pb"))
    # The export records the transform graph it was trained with and its statistics (6 training images).
    with open(os.path.join(model["model"], "Format-Serving", "assets.extra", "deeplab_export.json")) as f:
        recorded = json.load(f)["transform"]
    assert os.path.basename(os.path.dirname(os.path.dirname(recorded["transform_graph"]))) == "Transform"
    assert recorded["statistics"]["num_examples"] == 6 and recorded["normalization"] == "imagenet"
    metrics = model["metrics"]
    assert 0.0 <= metrics["miou"] <= 1.0 and 0.0 <= metrics["pixel_accuracy"] <= 1.0
    assert os.path.isfile(model["evaluation_html"])
    assert model["blessing"]["blessed"] is True
    assert model["pushed"] is True
    version_dir = model["pushed_destination"]
    assert os.path.isfile(os.path.join(version_dir, "saved_model.pb"))
    assert os.path.dirname(version_dir) == os.path.join(str(out), "serving", "deeplab")
    assert os.path.basename(version_dir) == str(model["pushed_version"])


def test_pushed_model_served_over_grpc_and_rest_equals_in_process(full_run):
    import tensorflow as tf

    from serving.grpc_client import GrpcClient
    from serving.rest_client import RestClient
    from serving.server import ModelServer

    voc_root, out, report = full_run
    version_dir = report["model"]["pushed_destination"]
    val_ids = open(os.path.join(voc_root, "ImageSets/Segmentation/val.txt")).read().split()
    encoded = [open(os.path.join(voc_root, "JPEGImages", f"{i}.jpg"), "rb").read() for i in val_ids]

    loaded = tf.saved_model.load(version_dir)
    expected = loaded.signatures["serving_default"](images=tf.constant(encoded))
    with ModelServer(os.path.join(str(out), "serving", "deeplab"), grpc_port=0, rest_port=0) as server:
        grpc_maps = GrpcClient(f"127.0.0.1:{server.grpc_port}", timeout=60).segment(encoded)
        rest_maps = RestClient(f"127.0.0.1:{server.rest_port}", timeout=60).segment(encoded)
    heights, widths = expected["height"].numpy(), expected["width"].numpy()
    for i, ((g, _), (r, _)) in enumerate(zip(grpc_maps, rest_maps)):
        want = expected["segmentation_map"].numpy()[i, : heights[i], : widths[i]]
        np.testing.assert_array_equal(g, want)
        np.testing.assert_array_equal(r, want)
