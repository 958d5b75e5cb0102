"""ImageNet init: Keras applications h5 weights map onto the atrous backbones layer by layer."""

import json

import numpy as np
import pytest
import tf_keras as keras

from models import backbone as backbones
from models.config import ModelConfig
from models.weights import expected_weights_file, find_weights_file, load_imagenet_weights


def _randomize(model, seed=0):
    """Random values for every weight, BN moving statistics included (variances positive)."""
    rng = np.random.default_rng(seed)
    values = []
    for w in model.weights:
        v = rng.normal(0, 0.05, w.shape).astype(np.float32)
        if "moving_variance" in w.name:
            v = rng.uniform(0.5, 1.5, w.shape).astype(np.float32)
        elif "gamma" in w.name:
            v = rng.uniform(0.8, 1.2, w.shape).astype(np.float32)
        values.append(v)
    model.set_weights(values)


def test_resnet_v2_50_features_match_keras_applications(tmp_path):
    reference = keras.applications.ResNet50V2(weights=None, include_top=False, input_shape=(None, None, 3))
    _randomize(reference)
    path = tmp_path / "resnet50v2_weights_tf_dim_ordering_tf_kernels_notop.h5"
    reference.save_weights(str(path))
    ours = backbones.build_resnet_v2(
        ModelConfig("resnet_v2_50", output_stride=32, multi_grid=(1, 1, 1), bn_epsilon=1.001e-5)
    )
    info = load_imagenet_weights(ours, "resnet_v2_50", path=str(path))
    assert info["loaded"] == len([layer for layer in ours.layers if layer.weights]) and info["unused"] == []
    images = np.random.default_rng(1).uniform(-1, 1, (2, 64, 96, 3)).astype(np.float32)
    np.testing.assert_allclose(ours(images, training=False), reference(images, training=False), rtol=1e-4, atol=1e-4)


def test_mobilenet_v2_features_match_keras_applications(tmp_path):
    reference = keras.applications.MobileNetV2(weights=None, include_top=False, alpha=0.35, input_shape=(None, None, 3))
    _randomize(reference, seed=2)
    path = tmp_path / expected_weights_file("mobilenet_v2", 0.35)[0]
    reference.save_weights(str(path))
    ours = backbones.build_mobilenet_v2(ModelConfig("mobilenet_v2", output_stride=32, alpha=0.35, bn_epsilon=1e-3))
    info = load_imagenet_weights(ours, "mobilenet_v2", alpha=0.35, path=str(path))
    assert info["unused"] == ["Conv_1", "Conv_1_bn"]  # the 1280-channel head DeepLab drops
    features = keras.Model(reference.input, reference.get_layer("block_16_project_BN").output)
    images = np.random.default_rng(3).uniform(-1, 1, (2, 64, 96, 3)).astype(np.float32)
    np.testing.assert_allclose(ours(images, training=False), features(images, training=False), rtol=1e-4, atol=1e-4)


def test_missing_weights_file_names_file_and_url(tmp_path, monkeypatch):
    monkeypatch.setenv("DEEPLAB_WEIGHTS_DIR", str(tmp_path))
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="resnet101v2_weights_tf_dim_ordering_tf_kernels_notop.h5") as e:
        find_weights_file("resnet_v2_101")
    assert "storage.googleapis.com/tensorflow/keras-applications/resnet/" in str(e.value)
    with pytest.raises(ValueError, match="alpha"):
        expected_weights_file("mobilenet_v2", alpha=0.3)


def test_wrong_file_is_a_clear_error(tmp_path):
    small = keras.applications.MobileNetV2(weights=None, include_top=False, alpha=0.35, input_shape=(None, None, 3))
    path = tmp_path / "wrong.h5"
    small.save_weights(str(path))
    ours = backbones.build_mobilenet_v2(ModelConfig("mobilenet_v2", output_stride=16, alpha=0.5))
    with pytest.raises(ValueError, match="block_1_project.*wrong backbone or alpha"):
        load_imagenet_weights(ours, "mobilenet_v2", alpha=0.5, path=str(path))


def test_builder_initialises_backbone_from_file(tmp_path, monkeypatch):
    reference = keras.applications.MobileNetV2(weights=None, include_top=False, alpha=0.35, input_shape=(None, None, 3))
    _randomize(reference, seed=4)
    reference.save_weights(str(tmp_path / expected_weights_file("mobilenet_v2", 0.35)[0]))
    monkeypatch.setenv("DEEPLAB_WEIGHTS_DIR", str(tmp_path))
    from models.deeplab import build_deeplab_v3

    model = build_deeplab_v3(ModelConfig(backbone="mobilenet_v2", alpha=0.35, aspp_filters=8), weights="imagenet")
    backbone = next(layer for layer in model.layers if isinstance(layer, keras.Model))
    np.testing.assert_array_equal(
        backbone.get_layer("Conv1").get_weights()[0], reference.get_layer("Conv1").get_weights()[0]
    )


def test_batch_norm_epsilon_follows_the_backbone_weights():
    """MobileNetV2's ImageNet weights were trained with epsilon 1e-3, ResNet-v2's with 1e-5: the default
    of every entry point (hyper-parameters, build_deeplab_v3) uses the backbone's, and hparams.json records it."""
    from models import hparams as hparams_lib
    from models.deeplab import build_deeplab_v3

    assert hparams_lib.preset("demo").bn_epsilon == 1e-3
    assert hparams_lib.preset("paper").bn_epsilon == 1e-5
    assert hparams_lib.preset("demo", bn_epsilon=1e-4).bn_epsilon == 1e-4
    assert json.loads(hparams_lib.preset("demo").to_json())["model"]["bn_epsilon"] == 1e-3
    model = build_deeplab_v3(ModelConfig(backbone="mobilenet_v2", alpha=0.35, aspp_filters=8))
    epsilons = {
        layer.epsilon
        for layer in model.get_layer("mobilenet_v2_0.35").layers
        if isinstance(layer, keras.layers.BatchNormalization)
    }
    assert epsilons == {1e-3}
