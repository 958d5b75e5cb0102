"""DeepLab V3 backbones with atrous convolution: pre-activation ResNet-v2 (50/101) and MobileNetV2.

Layer names and structure follow tf_keras.applications (ResNet50V2, ResNet101V2, MobileNetV2), so
the ImageNet weights Keras publishes load by name (models/weights.py). What differs is the atrous
rewrite (paper section 3.1): once the running stride reaches `output_stride`, every later unit that
would downsample keeps the resolution (stride 1) and all later 3x3 convolutions are dilated by the
accumulated rate instead. Keras (like slim) puts the stride in the LAST unit of each ResNet stack,
so the rate only grows after that unit.

Inputs are preprocessed images in [-1, 1] (models.layers.Preprocess); outputs are the final features
(ResNet: after post_bn/post_relu, 2048 channels; MobileNetV2: the last inverted residual block,
320*alpha channels, as DeepLab's model-zoo MobileNetV2 which drops the 1280-channel 1x1 conv).
"""

import collections
import typing

import tf_keras as keras

from models.config import BACKBONES, OUTPUT_STRIDES, ModelConfig
from models.layers import AtrousConv2D, l2_regularizer

# ResNet-v2: (stack name, bottleneck filters, units, stride of the last unit).
_RESNET_STACKS = {
    "resnet_v2_50": (("conv2", 64, 3, 2), ("conv3", 128, 4, 2), ("conv4", 256, 6, 2), ("conv5", 512, 3, 1)),
    "resnet_v2_101": (("conv2", 64, 3, 2), ("conv3", 128, 4, 2), ("conv4", 256, 23, 2), ("conv5", 512, 3, 1)),
}
# MobileNetV2 inverted residual blocks: (filters, stride, expansion); block_id = index.
_MOBILENET_BLOCKS = (
    (16, 1, 1),
    (24, 2, 6),
    (24, 1, 6),
    (32, 2, 6),
    (32, 1, 6),
    (32, 1, 6),
    (64, 2, 6),
    (64, 1, 6),
    (64, 1, 6),
    (64, 1, 6),
    (96, 1, 6),
    (96, 1, 6),
    (96, 1, 6),
    (160, 2, 6),
    (160, 1, 6),
    (160, 1, 6),
    (320, 1, 6),
)

# The backbone's last stride-4 feature map, the low-level input of the DeepLabV3+ decoder: ResNet-v2 the unit
# before block1's striding unit (official DeepLab takes block1/unit_2; Keras puts the stride in the last unit),
# MobileNetV2 the expansion (144*alpha channels) of the block that strides to 8.
LOW_LEVEL_FEATURES = {
    "resnet_v2_50": "conv2_block2_out",
    "resnet_v2_101": "conv2_block2_out",
    "mobilenet_v2": "block_3_expand_relu",
}

UnitSpec = collections.namedtuple("UnitSpec", ["name", "filters", "stride", "rate"])
UnitSpec.__doc__ = "One residual unit after the atrous rewrite: applied stride (1 or 2) and dilation rate."


def _check(output_stride):
    if output_stride not in OUTPUT_STRIDES:
        raise ValueError(f"output_stride must be one of {OUTPUT_STRIDES}, got {output_stride!r}")


def resnet_v2_unit_specs(backbone: str, output_stride: int, multi_grid: typing.Sequence[int]) -> typing.List[UnitSpec]:
    """The units of a ResNet-v2 backbone with the stride and atrous rate each one gets.

    block4 (`conv5`) units use `rate * multi_grid[i]` (paper section 3.2), also at output_stride 32
    where rate is 1; pass multi_grid=(1, 1, 1) for the plain ImageNet network.
    """
    _check(output_stride)
    if backbone not in _RESNET_STACKS:
        raise ValueError(f"unknown ResNet-v2 backbone {backbone!r}; expected one of {sorted(_RESNET_STACKS)}")
    stacks = _RESNET_STACKS[backbone]
    if len(multi_grid) != stacks[-1][2]:
        raise ValueError(f"multi_grid must have {stacks[-1][2]} entries (one per block4 unit), got {multi_grid!r}")
    specs = []
    current_stride, rate = 4, 1  # conv1 (stride 2) + pool1 (stride 2)
    for stack_name, filters, units, last_stride in stacks:
        for i in range(1, units + 1):
            stride = last_stride if i == units else 1
            unit_rate = rate * (multi_grid[i - 1] if stack_name == "conv5" else 1)
            if current_stride == output_stride:
                specs.append(UnitSpec(f"{stack_name}_block{i}", filters, 1, unit_rate))
                rate *= stride
            else:
                specs.append(UnitSpec(f"{stack_name}_block{i}", filters, stride, unit_rate))
                current_stride *= stride
    return specs


def mobilenet_v2_block_specs(output_stride: int, alpha: float) -> typing.List[UnitSpec]:
    """The inverted residual blocks of MobileNetV2 (filters after alpha) with applied stride and rate."""
    _check(output_stride)
    specs = []
    current_stride, rate = 2, 1  # Conv1 has stride 2
    for block_id, (filters, stride, _) in enumerate(_MOBILENET_BLOCKS):
        name = f"block_{block_id}" if block_id else "expanded_conv"
        out = make_divisible(filters * alpha, 8)
        if current_stride == output_stride:
            specs.append(UnitSpec(name, out, 1, rate))
            rate *= stride
        else:
            specs.append(UnitSpec(name, out, stride, rate))
            current_stride *= stride
    return specs


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round channels to a multiple of `divisor` exactly as tf_keras.applications.MobileNetV2 does."""
    new_value = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if new_value < 0.9 * value:
        new_value += divisor
    return new_value


def _bn(name, config):
    return keras.layers.BatchNormalization(momentum=config.bn_decay, epsilon=config.bn_epsilon, name=name)


def _resnet_unit(x, spec, conv_shortcut, config, weight_decay):
    """Pre-activation bottleneck unit (tf_keras.applications.resnet.block2) with a dilated 3x3 conv."""
    name, reg = spec.name, l2_regularizer(weight_decay)
    preact = _bn(name + "_preact_bn", config)(x)
    preact = keras.layers.Activation("relu", name=name + "_preact_relu")(preact)
    if conv_shortcut:
        shortcut = keras.layers.Conv2D(
            4 * spec.filters, 1, strides=spec.stride, kernel_regularizer=reg, name=name + "_0_conv"
        )(preact)
    elif spec.stride > 1:
        shortcut = keras.layers.MaxPooling2D(1, strides=spec.stride, name=name + "_0_subsample")(x)
    else:
        shortcut = x
    y = keras.layers.Conv2D(spec.filters, 1, use_bias=False, kernel_regularizer=reg, name=name + "_1_conv")(preact)
    y = _bn(name + "_1_bn", config)(y)
    y = keras.layers.Activation("relu", name=name + "_1_relu")(y)
    conv_2 = dict(use_bias=False, kernel_regularizer=reg, name=name + "_2_conv")
    if spec.stride > 1:
        # Keras' explicit padding for the strided conv (equals "same" only for odd sizes).
        y = keras.layers.ZeroPadding2D(((1, 1), (1, 1)), name=name + "_2_pad")(y)
        y = keras.layers.Conv2D(spec.filters, 3, strides=spec.stride, **conv_2)(y)
    else:
        y = AtrousConv2D(spec.filters, 3, padding="same", dilation_rate=spec.rate, **conv_2)(y)
    y = _bn(name + "_2_bn", config)(y)
    y = keras.layers.Activation("relu", name=name + "_2_relu")(y)
    y = keras.layers.Conv2D(4 * spec.filters, 1, kernel_regularizer=reg, name=name + "_3_conv")(y)
    return keras.layers.Add(name=name + "_out")([shortcut, y])


def build_resnet_v2(config: ModelConfig, weight_decay: float = 0.0) -> keras.Model:
    """Pre-activation ResNet-v2 feature extractor of `config.backbone` (resnet_v2_50 or resnet_v2_101):
    [B,H,W,3] in [-1,1] -> [B,h,w,2048] at 1/output_stride."""
    reg = l2_regularizer(weight_decay)
    inputs = keras.Input(shape=(None, None, 3), name="preprocessed_images")
    x = keras.layers.ZeroPadding2D(((3, 3), (3, 3)), name="conv1_pad")(inputs)
    x = keras.layers.Conv2D(64, 7, strides=2, kernel_regularizer=reg, name="conv1_conv")(x)
    x = keras.layers.ZeroPadding2D(((1, 1), (1, 1)), name="pool1_pad")(x)
    x = keras.layers.MaxPooling2D(3, strides=2, name="pool1_pool")(x)
    for spec in resnet_v2_unit_specs(config.backbone, config.output_stride, config.multi_grid):
        x = _resnet_unit(x, spec, spec.name.endswith("_block1"), config, weight_decay)
    x = _bn("post_bn", config)(x)
    x = keras.layers.Activation("relu", name="post_relu")(x)
    return _features_model(inputs, x, config, name=config.backbone)


def _inverted_residual(x, spec, expansion, block_id, config, weight_decay):
    """MobileNetV2 inverted residual (tf_keras.applications.mobilenet_v2._inverted_res_block), dilated."""
    reg = l2_regularizer(weight_decay)
    in_channels = x.shape[-1]
    prefix = f"{spec.name}_"
    y = x
    if block_id:
        y = keras.layers.Conv2D(
            expansion * in_channels, 1, use_bias=False, kernel_regularizer=reg, name=prefix + "expand"
        )(y)
        y = _bn(prefix + "expand_BN", config)(y)
        y = keras.layers.ReLU(6.0, name=prefix + "expand_relu")(y)
    # "same" for the strided depthwise too: equals Keras' ZeroPadding((0,1),(0,1)) on even sizes and
    # keeps ceil(H/2) rows on odd sizes.
    y = keras.layers.DepthwiseConv2D(
        3,
        strides=spec.stride,
        padding="same",
        dilation_rate=spec.rate,
        use_bias=False,
        depthwise_regularizer=reg,
        name=prefix + "depthwise",
    )(y)
    y = _bn(prefix + "depthwise_BN", config)(y)
    y = keras.layers.ReLU(6.0, name=prefix + "depthwise_relu")(y)
    y = keras.layers.Conv2D(spec.filters, 1, use_bias=False, kernel_regularizer=reg, name=prefix + "project")(y)
    y = _bn(prefix + "project_BN", config)(y)
    if in_channels == spec.filters and spec.stride == 1:
        return keras.layers.Add(name=prefix + "add")([x, y])
    return y


def build_mobilenet_v2(config: ModelConfig, weight_decay: float = 0.0) -> keras.Model:
    """MobileNetV2 feature extractor: [B,H,W,3] in [-1,1] -> [B,h,w,make_divisible(320*alpha)]."""
    alpha = config.alpha
    inputs = keras.Input(shape=(None, None, 3), name="preprocessed_images")
    x = keras.layers.Conv2D(
        make_divisible(32 * alpha, 8),
        3,
        strides=2,
        padding="same",
        use_bias=False,
        kernel_regularizer=l2_regularizer(weight_decay),
        name="Conv1",
    )(inputs)
    x = _bn("bn_Conv1", config)(x)
    x = keras.layers.ReLU(6.0, name="Conv1_relu")(x)
    for block_id, spec in enumerate(mobilenet_v2_block_specs(config.output_stride, alpha)):
        x = _inverted_residual(x, spec, _MOBILENET_BLOCKS[block_id][2], block_id, config, weight_decay)
    return _features_model(inputs, x, config, name=f"mobilenet_v2_{alpha:g}")


def _features_model(inputs, features, config, name):
    """The backbone model: its final features, preceded by the stride-4 map when the network has a V3+ decoder."""
    model = keras.Model(inputs, features, name=name)
    if config.decoder != "v3plus":
        return model
    low_level = model.get_layer(LOW_LEVEL_FEATURES[config.backbone]).output
    return keras.Model(inputs, [low_level, features], name=name)


def build_backbone(config: ModelConfig, weight_decay: float = 0.0) -> keras.Model:
    """The feature extractor of `config.backbone` (one of BACKBONES) with `config`'s output stride, multi-grid
    (ResNet), alpha (MobileNetV2) and BatchNormalization settings (`bn_epsilon`: resolved by ModelConfig to the
    epsilon the backbone's ImageNet weights were trained with, whose moving variances only normalise correctly
    with it)."""
    if config.backbone.startswith("resnet_v2"):
        return build_resnet_v2(config, weight_decay)
    if config.backbone == "mobilenet_v2":
        return build_mobilenet_v2(config, weight_decay)
    raise ValueError(f"unknown backbone {config.backbone!r}; expected one of {BACKBONES}")
