"""`deeplab infer` (pipeline/infer.py): Beam RunInference over a folder with good and broken images."""

import io
import json

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import runner
from pipeline import infer
from tests.helpers import export_random_model


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("infer") / "serving" / "deeplab" / "3")
    assert export_random_model(out) == 0
    return out


def _encode(image, fmt):
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format=fmt)
    return buf.getvalue()


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """4 good images of different sizes and formats (a.jpg and a.png share a base name), 3 broken ones (truncated
    JPEG, not an image, too wide)."""
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    good = {}
    for name, (h, w), fmt in (("a.jpg", (40, 52), "JPEG"), ("a.png", (33, 33), "PNG"), ("c.jpg", (40, 52), "JPEG")):
        data = _encode(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), fmt)
        (folder / name).write_bytes(data)
        good[name] = data
    jpeg = _encode(rng.integers(0, 256, (48, 48, 3), dtype=np.uint8), "JPEG")
    (folder / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    (folder / "notes.png").write_bytes(b"this is not an image")
    (folder / "wide.png").write_bytes(_encode(np.zeros((20, 300, 3), np.uint8), "PNG"))
    (folder / "readme.txt").write_text("not an image extension: not listed")
    return folder, good


def test_infer_writes_the_served_answer_and_lists_broken_images(model_dir, images, tmp_path):
    folder, good = images
    out = tmp_path / "out"
    argv = ["infer", "--model", model_dir, "--input", str(folder), "--output", str(out), "--overlay"]
    argv += ["--batch-size", "2", "--max-image-side", "256", "--max-failed-fraction", "0.5"]
    assert runner.main(argv) == 0

    served = tf.saved_model.load(model_dir).signatures
    colours = infer.model_label_map(model_dir).colors()
    index = {json.loads(line)["image"]: json.loads(line) for line in (out / "index.jsonl").read_text().splitlines()}
    assert sorted(index) == sorted(str(folder / name) for name in good)
    # a.jpg and a.png would both be a.png: they keep their extension; c.jpg is c.png.
    labels_of = {name: index[str(folder / name)]["labels"] for name in good}
    assert labels_of == {"a.jpg": "labels/a.jpg.png", "a.png": "labels/a.png.png", "c.jpg": "labels/c.png"}
    for name, data in good.items():
        # The served answer, one image per request (serving_default's int64 map): the label PNG equals it.
        answer = served["serving_default"](images=tf.constant([data]))["segmentation_map"][0].numpy()
        with Image.open(out / labels_of[name]) as png:
            assert png.mode == "P"
            assert np.asarray(png.getpalette()[:63]).reshape(21, 3).tolist() == colours[:21].tolist()
            labels = np.asarray(png)
        np.testing.assert_array_equal(labels, answer)
        row = index[str(folder / name)]
        assert (row["height"], row["width"]) == answer.shape
        assert sum(row["class_shares"].values()) == pytest.approx(1.0, abs=1e-4)
        assert row["ms"] > 0 and 1 <= row["batch_size"] <= 2
        with Image.open(out / labels_of[name].replace("labels/", "overlays/")) as overlay:
            assert overlay.size == (answer.shape[1], answer.shape[0])

    report = json.loads((out / "infer_report.json").read_text())
    assert (report["images"], report["segmented"], report["failed"]) == (6, 3, 3)
    failed = {row["image"].rsplit("/", 1)[1]: row for row in report["failed_images"]}
    assert {k: v["reason"] for k, v in failed.items()} == {
        "truncated.jpg": "unreadable",
        "notes.png": "unreadable",
        "wide.png": "oversize",
    }
    assert (
        "(WxH) declares 300x20" in failed["wide.png"]["detail"] and "cannot decode" in failed["truncated.jpg"]["detail"]
    )
    assert len((out / "failed.jsonl").read_text().splitlines()) == 3


def test_infer_fails_past_max_failed_fraction_after_writing_the_good_ones(model_dir, images, tmp_path, capsys):
    folder, _ = images
    out = tmp_path / "out"
    base = model_dir.rsplit("/", 1)[0]  # a TF Serving base folder: its newest version is used
    assert runner.main(["infer", "--model", base, "--input", str(folder / "*"), "--output", str(out)]) == 1
    assert "could not be segmented" in capsys.readouterr().err
    report = json.loads((out / "infer_report.json").read_text())
    assert report["model"] == model_dir and report["status"] == "failed"
    # The glob also matches readme.txt (unreadable); wide.png is within the default size limits.
    assert sorted(row["image"].rsplit("/", 1)[1] for row in report["failed_images"]) == [
        "notes.png",
        "readme.txt",
        "truncated.jpg",
    ]
    assert report["segmented"] == 4 and len(list((out / "labels").iterdir())) == 4


def test_output_names_are_unique_and_keep_the_common_case_short():
    assert infer.output_names(["d/a.jpg", "d/b.png"]) == {"d/a.jpg": "a.png", "d/b.png": "b.png"}
    assert infer.output_names(["d/a.jpg", "d/a.png", "d/a.jpg.png"]) == {
        "d/a.jpg": "a.jpg.png",
        "d/a.png": "a.png.png",
        "d/a.jpg.png": "a.jpg.png.png",
    }
    assert infer.output_names(["gs://b/x/a.jpg", "gs://b/y/a.jpg", "gs://b/y/z/c.jpg"]) == {
        "gs://b/x/a.jpg": "x/a.png",
        "gs://b/y/a.jpg": "y/a.png",
        "gs://b/y/z/c.jpg": "y/z/c.png",
    }
    assert infer.output_names(["/abs/one.jpg"]) == {"/abs/one.jpg": "one.png"}


def test_resolve_model_dir_takes_the_newest_version_on_a_remote_file_system():
    """--model gs://.../serving/deeplab goes through tf.io.gfile (data.fileio); TF's ram:// stands in for gs://."""
    base = "ram://infer-test/serving/deeplab"
    for version in ("2", "10"):
        tf.io.gfile.makedirs(f"{base}/{version}")
        with tf.io.gfile.GFile(f"{base}/{version}/saved_model.pb", "wb") as f:
            f.write(b"")
    tf.io.gfile.makedirs(f"{base}/11")  # a version being written: no saved_model.pb yet
    assert infer.resolve_model_dir(base + "/") == f"{base}/10"
    assert infer.resolve_model_dir(f"{base}/2") == f"{base}/2"
    with pytest.raises(FileNotFoundError, match="no saved_model.pb"):
        infer.resolve_model_dir(f"{base}/11")
