"""LabelStatsGen executor: exact per-split pixel counts, out-of-range labels flagged, JSON + PNG written."""

import io
import json
import os

import numpy as np
import pytest
from PIL import Image

from components.label_stats import executor
from data import tfrecord


def write_split(uri, split, masks):
    """An Examples split of GZIP TFRecords in the official format holding the given masks."""
    import tensorflow as tf

    os.makedirs(os.path.join(uri, f"Split-{split}"))
    path = os.path.join(uri, f"Split-{split}", "data_tfrecord-00000-of-00001.gz")
    with tf.io.TFRecordWriter(path, options="GZIP") as writer:
        for i, mask in enumerate(masks):
            image = np.zeros(mask.shape + (3,), np.uint8)
            sample = tfrecord.Sample(
                image_bytes=_png(image),
                image_format="png",
                mask_png=_png(mask),
                height=mask.shape[0],
                width=mask.shape[1],
                filename=f"{split}_{i}",
                converted=None,
            )
            writer.write(tfrecord.to_example(sample).SerializeToString())


def _png(array):
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def run_label_stats(examples_uri, split_names, out_uri, fail_on_anomaly=True):
    from tfx.dsl.components.base import base_beam_executor
    from tfx.types import artifact_utils, standard_artifacts

    from components.label_stats.component import LabelStatistics

    examples = standard_artifacts.Examples()
    examples.uri = str(examples_uri)
    examples.split_names = artifact_utils.encode_split_names(split_names)
    output = LabelStatistics()
    output.uri = str(out_uri)
    os.makedirs(out_uri, exist_ok=True)
    executor.Executor(base_beam_executor.BaseBeamExecutor.Context()).Do(
        {"examples": [examples]},
        {"label_statistics": [output]},
        {"exclude_splits": "[]", "fail_on_anomaly": int(fail_on_anomaly)},
    )
    return output, json.load(open(os.path.join(out_uri, executor.STATS_FILE)))


@pytest.fixture(scope="module")
def masks():
    rng = np.random.default_rng(1)
    train = [rng.choice(np.array([0, 1, 15, 255], np.uint8), size=(12, 16)) for _ in range(3)]
    val = [rng.choice(np.array([0, 7], np.uint8), size=(10, 10)) for _ in range(2)]
    return {"train": train, "val": val}


def test_counts_per_split_match_the_masks(tmp_path, masks):
    for split, split_masks in masks.items():
        write_split(tmp_path / "examples", split, split_masks)
    output, stats = run_label_stats(tmp_path / "examples", ["train", "val"], tmp_path / "out")

    for split, split_masks in masks.items():
        expected = np.bincount(np.concatenate([m.ravel() for m in split_masks]), minlength=256)
        s = stats["splits"][split]
        assert s["num_examples"] == len(split_masks)
        assert list(s["class_pixels"].values()) == expected[:21].tolist()
        assert s["ignore_pixels"] == expected[255]
        assert s["total_pixels"] == expected.sum()
        assert s["out_of_range_pixels"] == {}
    assert stats["splits"]["train"]["images_with_class"]["person"] == 3
    assert stats["anomalies"] == []
    assert any("split 'val': no pixels of class(es)" in w and "person" in w for w in stats["warnings"])
    assert output.get_string_custom_property("split_names") == '["train", "val"]'
    with Image.open(tmp_path / "out" / executor.PLOT_FILE) as plot:
        assert plot.format == "PNG" and plot.size[0] > 300


def test_out_of_range_labels_fail_the_run_and_are_recorded(tmp_path, masks):
    bad = masks["train"][0].copy()
    bad[0, :5] = 37
    write_split(tmp_path / "examples", "train", [bad, masks["train"][1]])

    with pytest.raises(executor.LabelAnomalyError, match=r"split 'train'.*outside.*\{'37': 5\}"):
        run_label_stats(tmp_path / "examples", ["train"], tmp_path / "out")
    stats = json.load(open(tmp_path / "out" / executor.STATS_FILE))
    assert stats["splits"]["train"]["out_of_range_pixels"] == {"37": 5}
    assert stats["splits"]["train"]["out_of_range_images"] == {"37": 1}

    output, stats = run_label_stats(tmp_path / "examples", ["train"], tmp_path / "out2", fail_on_anomaly=False)
    assert len(stats["anomalies"]) == 1 and output.get_int_custom_property("num_anomalies") == 1
