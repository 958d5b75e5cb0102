"""`deeplab run --infer-split val --push-tflite none`: TFX's BulkInferrer segments a split with the blessed model
(compact PNG outputs in its output Examples), and TflitePusher writes the gated .tflite beside the pushed
SavedModel."""

import contextlib
import glob
import io
import json
import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import runner
from data import synthetic
from tests.test_pipeline_full import TINY

# A whole (tiny) pipeline run: ~5 minutes on 2 idle cores, 15 when they are shared by several jobs.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400)]


@pytest.fixture(scope="module")
def infer_run(tmp_path_factory, in_process_beam):
    work = tmp_path_factory.mktemp("infer_run")
    voc_root = synthetic.generate_voc_dataset(work / "data", num_train=6, num_val=3, seed=4, min_size=40, max_size=56)
    out = work / "out"
    argv = ["run", "--voc-root", voc_root, "--output-dir", str(out), "--miou-threshold", "0.0"]
    argv += ["--infer-split", "val", "--push-tflite", "none", "--tflite-input-size", "33"]
    console = io.StringIO()
    with contextlib.redirect_stdout(console), contextlib.redirect_stderr(console):
        assert runner.main(argv + TINY + in_process_beam) == 0, console.getvalue()[-3000:]
    return out


def test_bulk_inferrer_segments_the_split_with_the_blessed_model(infer_run):
    root = infer_run / "pipeline_root"
    files = glob.glob(str(root / "BulkInferrer" / "output_examples" / "*" / "Split-val" / "*.gz"))
    assert files, "BulkInferrer wrote no output Examples"
    records = [r.numpy() for r in tf.data.TFRecordDataset(files, compression_type="GZIP")]
    assert len(records) == 3
    pushed = sorted(glob.glob(str(infer_run / "serving" / "deeplab" / "*")))[-1]
    served = tf.saved_model.load(pushed).signatures["serving_examples"]
    for record in records:
        example = tf.train.Example.FromString(record)
        features = example.features.feature
        png = features["prediction/segmentation_png"].bytes_list.value[0]
        with Image.open(io.BytesIO(png)) as picture:
            labels = np.asarray(picture)
        height = features["prediction/height"].int64_list.value[0]
        width = features["prediction/width"].int64_list.value[0]
        assert (
            labels.shape
            == (height, width)
            == (
                features["image/height"].int64_list.value[0],
                features["image/width"].int64_list.value[0],
            )
        )
        # The same answer as the pushed model's serving_examples signature for that example (the input features
        # are kept, so the record minus the prediction columns is the original example).
        for key in ("prediction/segmentation_png", "prediction/height", "prediction/width"):
            del features[key]
        answer = served(examples=tf.constant([example.SerializeToString()]))["segmentation_map"][0].numpy()
        np.testing.assert_array_equal(labels, answer)


def test_tflite_pushed_beside_the_saved_model(infer_run):
    pushed = sorted(glob.glob(str(infer_run / "serving" / "deeplab" / "*")))[-1]
    assert os.path.isfile(os.path.join(pushed, "saved_model.pb"))
    sidecar = json.load(open(os.path.join(pushed, "deeplab.tflite.json")))
    assert sidecar["parity"]["passed"] and sidecar["inputs"][0]["shape"] == [1, 33, 33, 3]
    interpreter = tf.lite.Interpreter(model_path=os.path.join(pushed, "deeplab.tflite"))
    assert list(interpreter.get_output_details()[0]["shape"]) == [1, 33, 33]
