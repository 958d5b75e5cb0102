"""models/model_io.py and models/config.py: one model configuration, one loader for every saved form,
and artifacts written before ModelConfig existed (tests/fixtures/v1_artifacts.tar.gz) still load.

The fixture was made with the code of format version 1 (before models/config.py):
  export_v1/     `deeplab export --init random --backbone mobilenet_v2 --output-stride 16 --num-classes 3
                 --model-arg alpha=0.1 --model-arg aspp_filters=8 --model-arg aspp_rates=[2,4]
                 --precision float32 --no-warmup` (deeplab_export.json with "hparams" {"model": ...,
                 "init": ...} and "model_kwargs")
  model_run_v1/  model.keras + the flat hparams.json models.train wrote (preset demo, num_classes 3,
                 alpha 0.1, aspp_filters 8, aspp_rates (2, 4), precision float32), randomized weights (seed 1)
and the logits both gave then on tests/fixtures/input.npy (export_v1_logits.npy, model_run_v1_logits.npy).
"""

import json
import os
import pathlib
import tarfile

import numpy as np
import pytest
import tensorflow as tf

from models import hparams as hparams_lib
from models import model_io
from models.config import ModelConfig
from models.export_files import read_export_config

FIXTURES = pathlib.Path(__file__).parent / "fixtures"
# The fixture's logits were computed on another CPU: oneDNN (AVX-512) and Eigen (AVX2) kernels sum in different
# orders, so logits of size ~1 differ by ~1e-5 across machines. Comparisons within this process stay exact.
CROSS_CPU = {"rtol": 1e-4, "atol": 1e-4}
V1_CONFIG = ModelConfig(
    backbone="mobilenet_v2", output_stride=16, num_classes=3, alpha=0.1, aspp_filters=8, aspp_rates=(2, 4)
)


@pytest.fixture(scope="module")
def v1(tmp_path_factory):
    root = tmp_path_factory.mktemp("v1")
    with tarfile.open(FIXTURES / "v1_artifacts.tar.gz") as tar:
        tar.extractall(root)
    return root


@pytest.fixture(scope="module")
def image():
    return np.load(FIXTURES / "input.npy")


def test_model_config_validates_and_round_trips():
    config = ModelConfig(backbone="mobilenet_v2", aspp_rates=[3, 6])
    assert config.aspp_rates == (3, 6) and config.bn_epsilon == 1e-3  # the backbone's epsilon, resolved
    assert ModelConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    with pytest.raises(ValueError, match="backbone"):
        ModelConfig(backbone="vgg16")
    with pytest.raises(ValueError, match="output_stride"):
        ModelConfig(output_stride=4)
    with pytest.raises(ValueError, match="unknown model field"):
        ModelConfig.from_dict({"backbone": "mobilenet_v2", "crop_size": 3})


def test_hparams_hold_the_model_config_and_read_flat_and_nested_json(tmp_path):
    hp = hparams_lib.preset("demo", output_stride=8)
    assert isinstance(hp.model, ModelConfig) and hp.backbone == hp.model.backbone == "mobilenet_v2"
    assert hp.output_stride == 8 and hp.replace(alpha=0.5).model.alpha == 0.5
    nested = hp.to_dict()
    assert nested["model"] == hp.model.to_dict() and "backbone" not in nested
    flat = {**nested.pop("model"), **nested}  # an hparams.json of the previous version
    assert hparams_lib.HParams.from_dict(flat) == hp == hparams_lib.HParams.from_dict(hp.to_dict())
    with pytest.raises(ValueError, match="both flat and under 'model'"):
        hparams_lib.HParams.from_dict({"backbone": "mobilenet_v2", "model": {"backbone": "resnet_v2_50"}})


def test_model_config_from_every_saved_shape():
    hp = hparams_lib.preset("demo")
    assert model_io.model_config(hp) == hp.model == model_io.model_config(hp.to_dict())
    flat = {**hp.to_dict()["model"], **{k: v for k, v in hp.to_dict().items() if k != "model"}}
    assert model_io.model_config(flat) == hp.model
    assert model_io.model_config({"format_version": 2, "model_config": hp.model.to_dict()}) == hp.model
    v1_export = {
        "format_version": 1,
        "hparams": {"init": "random", "model": {"backbone": "mobilenet_v2"}},
        "model_kwargs": {"backbone": "mobilenet_v2"},
    }
    assert model_io.model_config(v1_export) == ModelConfig(backbone="mobilenet_v2")
    with pytest.raises(ValueError):
        model_io.model_config({"crop_size": 3})


def test_v1_export_loads_rebuilds_and_reexports_identically(v1, image, tmp_path):
    from models.export import export_serving_model

    source = str(v1 / "export_v1")
    assert read_export_config(source)["format_version"] == 1
    loaded = model_io.load_model(source)
    assert loaded.config == V1_CONFIG and loaded.export_config["precision"] == "float32"
    want = np.load(FIXTURES / "export_v1_logits.npy")
    np.testing.assert_allclose(loaded.model(image, training=False).numpy(), want, **CROSS_CPU)
    # A Trainer Model artifact layout (Format-Serving/) loads the same way.
    artifact = tmp_path / "artifact"
    artifact.mkdir()
    os.symlink(source, artifact / "Format-Serving")
    assert model_io.load_model(str(artifact)).config == V1_CONFIG

    out = str(tmp_path / "v2")
    export_serving_model(
        loaded.model,
        out,
        hparams=loaded.hparams,
        config=loaded.config,
        tta=loaded.export_config["tta"],
        warmup_sizes=(),
    )
    config = read_export_config(out)
    assert config["format_version"] == 2 and config["model_config"] == V1_CONFIG.to_dict()
    served = tf.saved_model.load(out).signatures["logits"](images=tf.constant(image))["logits"].numpy()
    np.testing.assert_array_equal(
        served, tf.saved_model.load(source).signatures["logits"](images=tf.constant(image))["logits"].numpy()
    )
    np.testing.assert_allclose(served, want, **CROSS_CPU)
    again = model_io.load_model(out)
    assert again.config == V1_CONFIG
    np.testing.assert_array_equal(
        again.model(image, training=False).numpy(), loaded.model(image, training=False).numpy()
    )


def test_v1_model_run_loads_from_the_dir_the_file_and_a_checkpoint(v1, image, tmp_path):
    run_dir = v1 / "model_run_v1"
    want = np.load(FIXTURES / "model_run_v1_logits.npy")
    flat = json.loads((run_dir / model_io.HPARAMS_FILENAME).read_text())
    assert "backbone" in flat and "model" not in flat  # the flat hparams.json of format 1
    for path in (run_dir, run_dir / model_io.MODEL_FILENAME):
        loaded = model_io.load_model(str(path))
        assert loaded.config == V1_CONFIG.replace(bn_decay=0.99) and loaded.export_config is None
        np.testing.assert_allclose(loaded.model(image, training=False).numpy(), want, **CROSS_CPU)
    hp = hparams_lib.HParams.from_dict({k: v for k, v in flat.items() if k not in hparams_lib.RECORDED_KEYS})
    assert hp.model == loaded.config

    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    tf.train.Checkpoint(model=loaded.model).write(str(ckpt / "ckpt-1"))
    (ckpt / model_io.HPARAMS_FILENAME).write_text(json.dumps(flat))
    restored = model_io.load_model(str(ckpt / "ckpt-1"))
    np.testing.assert_allclose(restored.model(image, training=False).numpy(), want, **CROSS_CPU)


def test_with_precision_rebuilds_and_keeps_the_weights(v1, image):
    loaded = model_io.load_model(str(v1 / "model_run_v1"))
    assert model_io.with_precision(loaded.model, "float32", loaded.config) is loaded.model
    bf16 = model_io.with_precision(loaded.model, "bfloat16", loaded.config)
    assert bf16.compute_dtype == "bfloat16" and model_io.model_precision(bf16) == "bfloat16"
    back = model_io.with_precision(bf16, "float32", loaded.config)  # the float32 copy after mixed training
    np.testing.assert_array_equal(back(image, training=False).numpy(), loaded.model(image, training=False).numpy())
    with pytest.raises(ValueError, match="configuration"):
        model_io.with_precision(loaded.model, "bfloat16")


def test_empty_confusion_matrix_has_no_miou_in_training_and_evaluator():
    from components.miou_evaluator.metrics import metrics_from_confusion
    from models.confusion import iou_from_confusion

    per_class, miou = iou_from_confusion(np.zeros((3, 3)))
    assert miou is None and np.isnan(per_class).all()
    assert metrics_from_confusion(np.zeros((3, 3), np.int64), class_names=("a", "b", "c"))["miou"] is None
    cm = np.array([[5, 1, 0, 2], [0, 3, 0, 0], [0, 0, 0, 0]])  # [C, C+1]: 2 invalid predictions of class 0
    per_class, miou = iou_from_confusion(cm)
    assert per_class[0] == 5 / 8 and per_class[1] == 3 / 4 and np.isnan(per_class[2])
    assert miou == metrics_from_confusion(cm, class_names=("a", "b", "c"))["miou"] == (5 / 8 + 3 / 4) / 2
