"""models/tflite_export.py, `deeplab export --format tflite` and components/tflite_pusher: the TFLite model answers
like the SavedModel (parity gate), and a model below the gate is not pushed."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf
from tfx.types import standard_artifacts

import runner
from components.tflite_pusher import executor as tflite_pusher
from components.tflite_pusher.spec import TfliteModel
from models import tflite_export
from tests.helpers import export_random_model
from tests.test_eval_support import write_examples


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    """A tiny untrained float32 MobileNetV2 DeepLab export (float32: bfloat16 compute would differ from any
    float32 TFLite model by design)."""
    out = str(tmp_path_factory.mktemp("tflite") / "model")
    assert export_random_model(out, "--precision", "float32") == 0
    return out


@pytest.fixture(scope="module")
def examples(tmp_path_factory):
    """An Examples folder: 100 training images (int8 calibration) and 6 validation images of several sizes."""
    root = tmp_path_factory.mktemp("examples")
    write_examples(str(root / "Split-train"), tflite_export.MIN_REPRESENTATIVE)
    write_examples(str(root / "Split-val"), 6, seed0=200)
    return root


@pytest.mark.parametrize("size", [33, 49])
def test_float_tflite_labels_match_the_saved_model(saved_model, examples, size):
    content = tflite_export.convert(_float32_model(saved_model), size)
    interpreter = tf.lite.Interpreter(model_content=content)  # TensorFlow alone answers
    (inp,), (out,) = interpreter.get_input_details(), interpreter.get_output_details()
    assert list(inp["shape"]) == [1, size, size, 3] and inp["dtype"] == np.float32
    assert list(out["shape"]) == [1, size, size] and out["dtype"] == np.int32
    report = tflite_export.parity_report(content, saved_model, str(examples / "Split-val"), "none", num_classes=21)
    assert report["images"] == 6 and report["passed"] and report["input_size"] == size
    assert all(image["agreement"] >= 0.99 for image in report["per_image"]), report["per_image"]


def _float32_model(saved_model):
    from models import model_io

    return model_io.load_model(saved_model, precision="float32").model


@pytest.mark.slow
def test_cli_exports_a_gated_tflite_with_its_label_map(saved_model, examples, tmp_path):
    out = tmp_path / "tflite"
    argv = ["export", "--format", "tflite", "--model", saved_model, "--input-size", "45"]
    assert runner.main(argv + ["--examples", str(examples), "--output", str(out)]) == 0
    sidecar = json.loads((out / "deeplab.tflite.json").read_text())
    assert sidecar["label_map"]["name"] == "voc" and len(sidecar["label_map"]["classes"]) == 21
    assert sidecar["inputs"][0]["shape"] == [1, 45, 45, 3] and sidecar["outputs"][0]["dtype"] == "int32"
    parity = sidecar["parity"]
    assert parity["passed"] and parity["input_size"] == 45 and parity["pixel_agreement"] >= 0.99
    # The file on disk answers as the gate measured: same labels as the SavedModel on a validation image.
    image, _, _ = next(tflite_export.examples_images(str(examples / "Split-val")))
    image = tflite_export.resize_image(image, 45)
    ours = tflite_export.TfliteSegmenter(str(out / "deeplab.tflite")).labels(image)
    theirs = tflite_export.SavedModelLabels(saved_model).labels(image)
    assert np.mean(ours == theirs) >= 0.99
    # Without Examples there is no gate, so nothing is exported.
    assert runner.main(argv + ["--output", str(tmp_path / "none")]) == 2
    assert not (tmp_path / "none").exists()


def _pusher_run(tmp_path, saved_model, examples, **properties):
    model = standard_artifacts.Model()
    model.uri = str(tmp_path / "trainer_model")
    os.makedirs(model.uri)
    os.symlink(saved_model, os.path.join(model.uri, "Format-Serving"))
    version_dir = tmp_path / "serving" / "deeplab" / "7"
    version_dir.mkdir(parents=True)
    pushed = standard_artifacts.PushedModel()
    pushed.set_int_custom_property("pushed", 1)
    pushed.set_string_custom_property("pushed_destination", str(version_dir))
    ex = standard_artifacts.Examples()
    ex.uri = str(examples)
    ex.split_names = '["train", "val"]'
    out = TfliteModel()
    out.uri = str(tmp_path / "tflite_out")
    exec_properties = {
        tflite_pusher.QUANTIZE_KEY: "int8",
        tflite_pusher.INPUT_SIZE_KEY: 33,
        tflite_pusher.TRAIN_SPLIT_KEY: "train",
        tflite_pusher.EVAL_SPLIT_KEY: "val",
        tflite_pusher.MAX_PARITY_IMAGES_KEY: 6,
        tflite_pusher.MIN_AGREEMENT_KEY: tflite_export.FLOAT_MIN_AGREEMENT,
        tflite_pusher.MAX_MIOU_DROP_KEY: tflite_export.INT8_MAX_MIOU_DROP,
        **properties,
    }
    inputs = {
        tflite_pusher.MODEL_KEY: [model],
        tflite_pusher.PUSHED_MODEL_KEY: [pushed],
        tflite_pusher.EXAMPLES_KEY: [ex],
    }
    tflite_pusher.Executor().Do(inputs, {tflite_pusher.TFLITE_MODEL_KEY: [out]}, exec_properties)
    return out, version_dir


def test_int8_model_below_the_gate_is_not_pushed(tmp_path, saved_model, examples):
    # A gate no model can pass (the int8 mIoU would have to beat the SavedModel's by 100 points): the real check
    # runs on real figures and must refuse it.
    out, version_dir = _pusher_run(tmp_path, saved_model, examples, max_miou_drop=-1.0)
    assert out.get_int_custom_property("passed") == 0 and out.get_int_custom_property("pushed") == 0
    assert "parity gate" in out.get_string_custom_property("not_pushed_reason")
    assert not list(version_dir.iterdir())  # nothing beside the SavedModel
    report = json.loads((tmp_path / "tflite_out" / tflite_pusher.REPORT_FILE).read_text())
    assert report["quantize"] == "int8" and report["inputs"][0]["dtype"] == "uint8"
    assert report["representative_images"]["images"] == tflite_export.MIN_REPRESENTATIVE
    parity = report["parity"]
    assert parity["passed"] is False and parity["images"] == 6 and parity["miou_tflite"] is not None


@pytest.mark.slow
def test_passing_tflite_is_pushed_beside_the_saved_model(tmp_path, saved_model, examples):
    out, version_dir = _pusher_run(tmp_path, saved_model, examples, quantize="float16")
    assert out.get_int_custom_property("passed") == 1 and out.get_int_custom_property("pushed") == 1
    assert sorted(os.listdir(version_dir)) == ["deeplab.tflite", "deeplab.tflite.json"]
    assert json.loads((version_dir / "deeplab.tflite.json").read_text())["parity"]["pixel_agreement"] >= 0.99
