"""The data half end to end: `deeplab ingest` -> LocalDagRunner (VocExampleGen -> StatisticsGen -> SchemaGen ->
ExampleValidator, LabelStatsGen) -> ingest_report.json, then a cached re-run."""

import json
import os

import numpy as np
import pytest
from PIL import Image

import runner
from data import synthetic


@pytest.fixture(scope="module")
def ingest_run(tmp_path_factory, in_process_beam):
    # In-process Beam keeps the run small; the defaults (2 worker processes) are exercised by bench/ingest.py.
    work = tmp_path_factory.mktemp("ingest")
    voc_root = synthetic.generate_voc_dataset(work / "data", num_train=4, num_val=2, seed=5, min_size=32, max_size=48)
    out = work / "out"
    argv = ["ingest", "--voc-root", voc_root, "--output-dir", str(out)] + in_process_beam
    assert runner.main(argv) == 0
    first = json.load(open(out / "ingest_report.json"))
    assert runner.main(argv) == 0
    second = json.load(open(out / "ingest_report.json"))
    return voc_root, first, second


def test_ingest_report_describes_real_outputs(ingest_run):
    voc_root, report, _ = ingest_run
    assert report["status"] == "ok"
    assert {name: s["examples"] for name, s in report["splits"].items()} == {"train": 4, "val": 2}
    for name, split in report["splits"].items():
        assert split["rejected"] == 0 and split["rejects"] == []
        assert split["tfrecord_files"] and all(os.path.isfile(f) and f.endswith(".gz") for f in split["tfrecord_files"])
        assert split["schema_anomalies"] == []
        # The histogram equals the pixel counts of the source masks.
        ids = open(os.path.join(voc_root, f"ImageSets/Segmentation/{name}.txt")).read().split()
        counts = sum(
            np.bincount(
                np.asarray(Image.open(os.path.join(voc_root, "SegmentationClass", f"{i}.png"))).ravel(), minlength=256
            )
            for i in ids
        )
        histogram = split["label_histogram"]
        assert list(histogram["class_pixels"].values()) == counts[:21].tolist()
        assert histogram["ignore_pixels"] == counts[255] > 0
    assert report["label_anomalies"] == []

    artifacts = report["artifacts"]
    for split in ("train", "val"):
        assert os.path.isfile(os.path.join(artifacts["statistics"], f"Split-{split}", "FeatureStats.pb"))
    schema = open(os.path.join(artifacts["schema"], "schema.pbtxt")).read()
    for key in ("image/encoded", "image/segmentation/class/encoded", "image/height", "image/filename"):
        assert f'name: "{key}"' in schema
    with Image.open(artifacts["label_histogram_png"]) as plot:
        assert plot.format == "PNG"


def test_rerun_uses_the_tfx_cache(ingest_run):
    _, first, second = ingest_run
    assert second["artifacts"] == first["artifacts"]
    assert second["seconds"] < first["seconds"]


def test_ingest_with_a_missing_root_fails_before_running(tmp_path):
    with pytest.raises(SystemExit, match="--voc-root .*no_voc.* does not exist"):
        runner.main(["ingest", "--voc-root", str(tmp_path / "no_voc"), "--output-dir", str(tmp_path / "out")])


def test_fingerprint_changes_when_a_split_list_changes(tmp_path):
    from tfx.utils import proto_utils

    from components.voc_example_gen import component

    root = synthetic.generate_voc_dataset(tmp_path, num_train=2, num_val=1, seed=0, min_size=16, max_size=16)
    props = {"input_config": proto_utils.proto_to_json(component.make_input_config(None)), "voc_root": root}
    driver = component.VocExampleGenDriver(None)
    before = driver.resolve_exec_properties(dict(props), None, None)["input_fingerprint"]
    train_list = os.path.join(root, "ImageSets/Segmentation/train.txt")
    with open(train_list, "a") as f:
        f.write("2099_000003\n")
    assert driver.resolve_exec_properties(dict(props), None, None)["input_fingerprint"] != before
