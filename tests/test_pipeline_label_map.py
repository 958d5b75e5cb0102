"""Your own data end to end (issue 11): a synthetic 5-class dataset in the generic layout, with RGB colour masks
in its own palette and its own label_map.json, goes through the real `deeplab run` (ingest -> validate -> Trainer
-> MiouEvaluator -> AtomicPusher); the pushed model, served by the local TF Serving-compatible endpoint, answers
`deeplab predict` with that label map's class names and colours."""

import contextlib
import io
import json
import os

import numpy as np
import pytest
from PIL import Image

import runner
from data.label_map import LabelMap
from tests.helpers import TINY_TRAIN, tiny_generic_dataset

STREET = LabelMap(
    names=("background", "road", "tree", "car", "sign"),
    palette=(
        ((10, 10, 10), 0),
        ((128, 64, 128), 1),
        ((40, 160, 40), 2),
        ((0, 0, 200), 3),
        ((250, 170, 30), 4),
        ((255, 255, 255), 255),
    ),
    name="street5",
)
COLOURS = [[10, 10, 10], [128, 64, 128], [40, 160, 40], [0, 0, 200], [250, 170, 30]]


@pytest.fixture(scope="module")
def street_run(tmp_path_factory, in_process_beam):
    work = tmp_path_factory.mktemp("street")
    root = tiny_generic_dataset(work / "data", STREET, num_train=6, num_val=3, seed=5, min_size=40, max_size=56)
    assert LabelMap.load(os.path.join(root, "label_map.json")) == STREET
    out = work / "out"
    sets = {**TINY_TRAIN, "log_images": 1, "checkpoint_every": 2, "steps_per_epoch": 2}
    argv = ["run", "--layout", "generic", "--data-root", str(root), "--output-dir", str(out), "--miou-threshold", "0"]
    argv += ["--preset", "demo", "--train-steps", "2"] + [a for k, v in sets.items() for a in ("--set", f"{k}={v}")]
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        assert runner.main(argv + in_process_beam) == 0
    return root, out, json.load(open(out / "ingest_report.json"))


def test_ingest_converts_the_rgb_masks_through_the_palette(street_run):
    _, _, report = street_run
    assert report["label_map"]["name"] == "street5"
    for split in ("train", "val"):
        assert report["splits"][split]["rejected"] == 0
        hist = report["splits"][split]["label_histogram"]
        assert set(hist["class_pixel_fraction"]) == set(STREET.names)


def test_trainer_evaluator_and_export_use_the_label_map(street_run):
    _, _, report = street_run
    model = report["model"]
    assert model["pushed"] and model["train"]["steps"] == 2
    export_dir = model["pushed_destination"]
    config = json.load(open(os.path.join(export_dir, "assets.extra", "deeplab_export.json")))
    assert config["num_classes"] == 5 and LabelMap.from_json_dict(config["label_map"]) == STREET
    evaluation = json.load(open(os.path.join(os.path.dirname(model["evaluation_html"]), "evaluation.json")))
    assert evaluation["class_names"] == list(STREET.names)


def test_served_prediction_names_and_colours_come_from_the_label_map(street_run, tmp_path):
    from serving.server import ModelServer

    root, out, report = street_run
    images = sorted(os.path.join(root, "images", f) for f in os.listdir(os.path.join(root, "images")))[:2]
    with ModelServer(os.path.join(str(out), "serving", "deeplab"), grpc_port=0, rest_port=0) as server:
        argv = ["predict", "--server", f"127.0.0.1:{server.grpc_port}", "--out", str(tmp_path), "--image", *images]
        with contextlib.redirect_stdout(io.StringIO()):
            assert runner.main(argv) == 0
    predictions = json.load(open(tmp_path / "predictions.json"))
    assert predictions["label_map"]["class_names"] == list(STREET.names)
    assert predictions["label_map"]["class_colors"] == COLOURS
    for entry in predictions["images"]:
        assert set(entry["class_share"]) <= set(STREET.names)
    stem = os.path.splitext(os.path.basename(images[0]))[0]
    with Image.open(tmp_path / f"{stem}_labels.png") as png:
        assert png.mode == "P"
        palette = np.asarray(png.getpalette()[: 3 * 5]).reshape(5, 3).tolist()
    assert palette == COLOURS
