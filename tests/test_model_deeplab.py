"""DeepLab V3 model: shapes, atrous rates, ASPP rates, parameter counts, save/reload, precision."""

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from models import backbone as backbones
from models.aspp import ASPP, aspp_rates_for
from models.config import ModelConfig
from models.deeplab import PARAMETER_COUNTS, build_deeplab_v3, custom_objects

TINY = dict(backbone="mobilenet_v2", alpha=0.35, aspp_filters=16)


def _images(batch=2, height=33, width=47, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (batch, height, width, 3)).astype(np.float32)


def _inner_backbone(model):
    return next(layer for layer in model.layers if isinstance(layer, keras.Model))


@pytest.mark.parametrize("output_stride", [8, 16, 32])
def test_logits_at_input_size_for_every_output_stride(output_stride):
    model = build_deeplab_v3(ModelConfig(num_classes=21, output_stride=output_stride, **TINY))
    for size in [(33, 47), (64, 64), (17, 9)]:
        logits = model(_images(2, *size))
        assert logits.shape == (2, *size, 21)
        assert logits.dtype == tf.float32
        features = _inner_backbone(model)(_images(1, *size) / 127.5 - 1)
        # "same" convolutions: each stride-2 stage keeps ceil(size / 2).
        assert list(features.shape[1:3]) == [int(np.ceil(s / output_stride)) for s in size]


def test_one_model_serves_many_sizes():
    model = build_deeplab_v3(ModelConfig(num_classes=5, output_stride=16, **TINY))
    for size in [(33, 47), (48, 31), (65, 65)]:
        assert model(_images(1, *size)).shape == (1, *size, 5)


def test_resnet_output_shapes_odd_input(resnet50_os16):
    logits = resnet50_os16(_images(1, 33, 47))
    assert logits.shape == (1, 33, 47, 21)


# --- atrous rates -------------------------------------------------------------------------


def test_resnet_rates_per_output_stride():
    def summary(os_, mg=(1, 2, 4)):
        specs = backbones.resnet_v2_unit_specs("resnet_v2_50", os_, mg)
        blocks = {}
        for s in specs:
            blocks.setdefault(s.name.split("_")[0], []).append((s.stride, s.rate))
        return blocks

    b32 = summary(32)
    assert b32["conv2"] == [(1, 1), (1, 1), (2, 1)]  # Keras puts the stride in the last unit
    assert b32["conv4"][-1] == (2, 1)
    assert b32["conv5"] == [(1, 1), (1, 2), (1, 4)]  # multi_grid x rate 1
    b16 = summary(16)
    assert b16["conv4"] == [(1, 1)] * 5 + [(1, 1)]  # last unit loses its stride, rate grows after it
    assert b16["conv5"] == [(1, 2), (1, 4), (1, 8)]  # paper: rate 2 x (1, 2, 4)
    b8 = summary(8)
    assert b8["conv3"] == [(1, 1)] * 4
    assert b8["conv4"] == [(1, 2)] * 6
    assert b8["conv5"] == [(1, 4), (1, 8), (1, 16)]
    assert summary(16, (1, 1, 1))["conv5"] == [(1, 2)] * 3
    strides = [s.stride for s in backbones.resnet_v2_unit_specs("resnet_v2_101", 16, ModelConfig().multi_grid)]
    assert np.prod(strides) * 4 == 16 and len(strides) == 3 + 4 + 23 + 3


def test_resnet_built_convolutions_use_the_rates(resnet50_os16):
    backbone = _inner_backbone(resnet50_os16)
    for spec in backbones.resnet_v2_unit_specs("resnet_v2_50", 16, (1, 2, 4)):
        conv = backbone.get_layer(spec.name + "_2_conv")
        assert conv.strides == (spec.stride, spec.stride)
        assert conv.dilation_rate == (spec.rate, spec.rate), spec.name


def test_mobilenet_rates_per_output_stride():
    def strided_and_rates(os_):
        specs = backbones.mobilenet_v2_block_specs(os_, alpha=1.0)
        return [s.stride for s in specs], [s.rate for s in specs]

    strides, rates = strided_and_rates(32)
    assert strides == [1, 2, 1, 2, 1, 1, 2, 1, 1, 1, 1, 1, 1, 2, 1, 1, 1] and set(rates) == {1}
    strides, rates = strided_and_rates(16)
    assert strides[13] == 1 and rates[13] == 1 and rates[14:] == [2, 2, 2]
    strides, rates = strided_and_rates(8)
    assert rates[6:] == [1, 2, 2, 2, 2, 2, 2, 2, 4, 4, 4] and set(strides[6:]) == {1}
    model = build_deeplab_v3(ModelConfig(output_stride=8, **TINY))
    backbone = _inner_backbone(model)
    for spec in backbones.mobilenet_v2_block_specs(8, alpha=0.35):
        layer = backbone.get_layer(spec.name + "_depthwise")
        assert layer.dilation_rate == (spec.rate, spec.rate) and layer.strides == (spec.stride, spec.stride)


def test_aspp_rates_per_output_stride():
    assert aspp_rates_for(16) == (6, 12, 18)
    assert aspp_rates_for(8) == (12, 24, 36)
    assert aspp_rates_for(32) == (3, 6, 9)
    with pytest.raises(ValueError, match="output_stride"):
        aspp_rates_for(4)
    for os_ in (8, 16, 32):
        aspp = build_deeplab_v3(ModelConfig(output_stride=os_, **TINY)).get_layer("aspp")
        rates = [b.dilation_rate for b in aspp.branches if getattr(b, "kernel_size", 1) == 3]
        assert tuple(rates) == aspp_rates_for(os_)
        assert aspp.branches[-1].name == "image_pooling"


def test_aspp_without_atrous_branches_and_image_pooling():
    aspp = ASPP(rates=(), filters=8, image_pooling=False)
    out = aspp(tf.zeros((1, 5, 7, 12)))
    assert out.shape == (1, 5, 7, 8) and len(aspp.branches) == 1


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="output_stride"):
        build_deeplab_v3(ModelConfig(output_stride=12, **TINY))
    with pytest.raises(ValueError, match="backbone"):
        build_deeplab_v3(ModelConfig(backbone="vgg16"))
    with pytest.raises(ValueError, match="multi_grid"):
        backbones.resnet_v2_unit_specs("resnet_v2_50", 16, (1, 2))


# --- parameter counts (documented in models/deeplab.py) -----------------------------------


@pytest.fixture(scope="module")
def resnet50_os16():
    return build_deeplab_v3(ModelConfig(backbone="resnet_v2_50", output_stride=16))


def test_parameter_counts(resnet50_os16):
    assert resnet50_os16.count_params() == PARAMETER_COUNTS["resnet_v2_50"] == 39_108_373
    assert _inner_backbone(resnet50_os16).count_params() == 23_564_800  # Keras ResNet50V2 no-top
    mobilenet = build_deeplab_v3(ModelConfig(backbone="mobilenet_v2", alpha=1.0))
    assert mobilenet.count_params() == PARAMETER_COUNTS["mobilenet_v2"] == 4_558_165
    assert _inner_backbone(mobilenet).count_params() == 1_843_264
    # The output stride changes rates, never weights.
    assert (
        build_deeplab_v3(ModelConfig(backbone="mobilenet_v2", alpha=1.0, output_stride=8)).count_params() == 4_558_165
    )


def test_parameter_count_resnet101():
    model = build_deeplab_v3(ModelConfig(backbone="resnet_v2_101", output_stride=16))
    assert model.count_params() == PARAMETER_COUNTS["resnet_v2_101"] == 58_170_133
    assert _inner_backbone(model).count_params() == 42_626_560


# --- config / save / precision ------------------------------------------------------------


def test_layer_get_config_round_trip():
    aspp = ASPP(rates=(2, 3), filters=8, image_pooling=True, bn_decay=0.99, bn_epsilon=1e-3, weight_decay=1e-4)
    clone = ASPP.from_config(aspp.get_config())
    assert clone.get_config() == aspp.get_config()
    model = build_deeplab_v3(ModelConfig(num_classes=4, output_stride=16, **TINY))
    rebuilt = keras.Model.from_config(model.get_config(), custom_objects=custom_objects())
    assert rebuilt.count_params() == model.count_params()


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_saved_model_reloads_with_identical_outputs(tmp_path, suffix):
    model = build_deeplab_v3(ModelConfig(num_classes=4, output_stride=16, **TINY), weight_decay=1e-4)
    images = _images(1, 33, 47)
    expected = model(images, training=False).numpy()
    path = str(tmp_path / f"model{suffix}")
    model.save(path)
    reloaded = keras.models.load_model(path, custom_objects=custom_objects(), compile=False)
    np.testing.assert_array_equal(reloaded(images, training=False).numpy(), expected)
    assert len(reloaded.losses) == len(model.losses) > 0  # weight decay survives the round trip


def test_mixed_bfloat16_keeps_float32_logits():
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = build_deeplab_v3(ModelConfig(num_classes=3, **TINY))
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert model.get_layer("aspp").compute_dtype == "bfloat16"
    logits = model(_images(1, 33, 47))
    assert logits.dtype == tf.float32 and logits.shape == (1, 33, 47, 3)


def test_freeze_bn():
    model = build_deeplab_v3(ModelConfig(num_classes=3, **TINY), freeze_bn=True)
    bns = [layer for layer in model.submodules if isinstance(layer, keras.layers.BatchNormalization)]
    assert bns and not any(bn.trainable for bn in bns)
    trainable = build_deeplab_v3(ModelConfig(num_classes=3, **TINY))
    assert len(model.trainable_weights) < len(trainable.trainable_weights)
    bn = [layer for layer in trainable.submodules if isinstance(layer, keras.layers.BatchNormalization)][0]
    assert bn.momentum == 0.9997 and bn.epsilon == 1e-3  # MobileNetV2 (TINY): its ImageNet weights' epsilon


# --- DeepLabV3+ decoder ---------------------------------------------------------------------


def test_v3plus_resnet50_os16_has_the_papers_structure():
    """Chen et al. 2018: low-level features of block1 at stride 4 projected to 48 channels, concatenated with the
    ASPP output upsampled to stride 4, two (separable) 3x3 convolutions of 256, logits at stride 4."""
    from models.decoder import Decoder
    from models.layers import SeparableConvBNReLU

    model = build_deeplab_v3(ModelConfig(backbone="resnet_v2_50", output_stride=16, decoder="v3plus"))
    decoder = model.get_layer("decoder")
    assert isinstance(decoder, Decoder)
    low_level_tensor = _inner_backbone(model).outputs[0]
    assert low_level_tensor.node.layer.name == backbones.LOW_LEVEL_FEATURES["resnet_v2_50"] == "conv2_block2_out"
    assert decoder.project_low_level.filters == 48
    assert [type(c) for c in decoder.refine] == [SeparableConvBNReLU] * 2
    assert [c.filters for c in decoder.refine] == [256, 256]
    # The decoder adds 165,168 weights to V3's (1x1 256->48, two separable 3x3 of 304->256 and 256->256, BN).
    assert model.count_params() == PARAMETER_COUNTS["resnet_v2_50"] + 165_168
    images = _images(1, 64, 96)
    probe = keras.Model(
        model.input, [decoder.input[0], decoder.input[1], decoder.output, model.get_layer("logits").output]
    )
    aspp, low_level, refined, logits = probe(images, training=False)
    assert aspp.shape[1:3] == (4, 6)  # stride 16
    assert low_level.shape[1:3] == (16, 24)  # stride 4
    assert decoder.project_low_level(low_level, training=False).shape == (1, 16, 24, 48)
    assert refined.shape == (1, 16, 24, 256) and logits.shape == (1, 16, 24, 21)
    assert model(images, training=False).shape == (1, 64, 96, 21)


@pytest.mark.parametrize("output_stride", [8, 16])
def test_v3plus_mobilenet_any_size_mixed_precision_and_save(tmp_path, output_stride):
    """The stride-4 expansion layer of MobileNetV2; odd sizes; float32 logits under mixed_bfloat16; a plain
    (non-separable) decoder; the .keras file reloads with the same outputs."""
    from models.layers import ConvBNReLU

    config = ModelConfig(num_classes=3, output_stride=output_stride, decoder="v3plus", **TINY)
    assert backbones.LOW_LEVEL_FEATURES["mobilenet_v2"] == "block_3_expand_relu"
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        mixed = build_deeplab_v3(config)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert mixed.get_layer("decoder").compute_dtype == "bfloat16"
    logits = mixed(_images(1, 33, 47), training=False)
    assert logits.dtype == tf.float32 and logits.shape == (1, 33, 47, 3)
    assert np.isfinite(logits.numpy()).all()

    plain = build_deeplab_v3(config.replace(separable=False))
    assert all(isinstance(c, ConvBNReLU) for c in plain.get_layer("decoder").refine)
    images = _images(2, 35, 41)
    expected = plain(images, training=False).numpy()
    path = str(tmp_path / "v3plus.keras")
    plain.save(path)
    reloaded = keras.models.load_model(path, custom_objects=custom_objects(), compile=False)
    np.testing.assert_array_equal(reloaded(images, training=False).numpy(), expected)
