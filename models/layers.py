"""Small DeepLab V3 layers (keras-hub style: one concern each, full get_config).

All layers accept dynamic spatial shapes (any H, W, odd included): sizes are read with tf.shape at
run time, never from the static shape.
"""

import typing

import tensorflow as tf
import tf_keras as keras

from models.config import ModelConfig

# A layer built on its own (tests, other heads) gets the default network's settings.
_DEFAULT_NETWORK = ModelConfig()

# Weight decay is applied as a kernel regularizer so that it is part of the model config (a
# reloaded model keeps training with the same objective) and Keras adds it to the total loss.


def l2_regularizer(weight_decay: float):
    """Slim-style weight decay (`weight_decay * sum(w**2) / 2`, as the paper's code), or None when 0."""
    if not weight_decay:
        return None
    return keras.regularizers.L2(weight_decay / 2.0)


@keras.saving.register_keras_serializable(package="deeplab")
class Preprocess(keras.layers.Layer):
    """RGB 0..255 -> [-1, 1], the input scaling of tf_keras.applications ResNetV2/MobileNetV2 ("tf" mode); or, with
    `mean` and `std` (per RGB channel: the training set's, models/transform.py), (x - mean) / std.

    Kept inside the model so every caller (trainer, serving signatures, evaluator) feeds raw pixels; mean and std
    are constants of the graph, so an export applies them with TensorFlow alone.
    """

    def __init__(self, mean=None, std=None, **kwargs):
        super().__init__(**kwargs)
        self.mean = None if mean is None else [float(v) for v in mean]
        self.std = None if std is None else [float(v) for v in std]

    def call(self, images):
        if self.mean is None:
            return images / 127.5 - 1.0
        scale = tf.constant([1.0 / v for v in self.std], images.dtype)
        return (images - tf.constant(self.mean, images.dtype)) * scale

    def get_config(self):
        return {**super().get_config(), "mean": self.mean, "std": self.std}


class BatchNormSettings(keras.layers.Layer):
    """Base of the layers built of conv-BN units: carries their BatchNormalization momentum (`bn_decay`) and
    epsilon and their convolutions' weight decay, and saves them in get_config."""

    def __init__(
        self, bn_decay=_DEFAULT_NETWORK.bn_decay, bn_epsilon=_DEFAULT_NETWORK.bn_epsilon, weight_decay=0.0, **kwargs
    ):
        super().__init__(**kwargs)
        self.bn_decay = bn_decay
        self.bn_epsilon = bn_epsilon
        self.weight_decay = weight_decay

    @classmethod
    def settings_of(cls, config: ModelConfig, weight_decay: float = 0.0) -> dict:
        """The keyword arguments that give a layer the BatchNormalization settings of the network `config`."""
        return dict(bn_decay=config.bn_decay, bn_epsilon=config.bn_epsilon, weight_decay=weight_decay)

    @property
    def bn_settings(self):
        """The keyword arguments that give a sub-layer the same settings."""
        return dict(bn_decay=self.bn_decay, bn_epsilon=self.bn_epsilon, weight_decay=self.weight_decay)

    def get_config(self):
        return {**super().get_config(), **self.bn_settings}


@keras.saving.register_keras_serializable(package="deeplab")
class ConvBNReLU(BatchNormSettings):
    """Conv2D (no bias) -> BatchNormalization -> ReLU, the unit of every ASPP branch and the head.
    kwargs: BatchNormSettings' (bn_decay, bn_epsilon, weight_decay) and Layer's."""

    def __init__(self, filters, kernel_size=1, dilation_rate=1, **kwargs):
        super().__init__(**kwargs)
        self.filters = filters
        self.kernel_size = kernel_size
        self.dilation_rate = dilation_rate
        self.conv = AtrousConv2D(
            filters,
            kernel_size,
            padding="same",
            dilation_rate=dilation_rate,
            use_bias=False,
            kernel_initializer="he_normal",
            kernel_regularizer=l2_regularizer(self.weight_decay),
            name="conv",
        )
        self.bn = keras.layers.BatchNormalization(momentum=self.bn_decay, epsilon=self.bn_epsilon, name="bn")
        self.relu = keras.layers.ReLU(name="relu")

    def call(self, inputs, training=None):
        return self.relu(self.bn(self.conv(inputs), training=training))

    def get_config(self):
        config = super().get_config()
        config.update(filters=self.filters, kernel_size=self.kernel_size, dilation_rate=self.dilation_rate)
        return config


@keras.saving.register_keras_serializable(package="deeplab")
class SeparableConvBNReLU(BatchNormSettings):
    """Depthwise-separable conv-BN-ReLU as DeepLabV3+ uses in its decoder (slim's split_separable_conv2d):
    depthwise `kernel_size` conv -> BN -> ReLU -> 1x1 conv to `filters` -> BN -> ReLU. A 3x3 of 256 -> 256
    channels costs about a ninth of the full convolution's weights and multiplies.
    kwargs: BatchNormSettings' (bn_decay, bn_epsilon, weight_decay) and Layer's."""

    def __init__(self, filters, kernel_size=3, **kwargs):
        super().__init__(**kwargs)
        self.filters = filters
        self.kernel_size = kernel_size
        reg = l2_regularizer(self.weight_decay)
        bn = dict(momentum=self.bn_decay, epsilon=self.bn_epsilon)
        self.depthwise = keras.layers.DepthwiseConv2D(
            kernel_size,
            padding="same",
            use_bias=False,
            depthwise_initializer="he_normal",
            depthwise_regularizer=reg,
            name="depthwise",
        )
        self.depthwise_bn = keras.layers.BatchNormalization(name="depthwise_bn", **bn)
        self.pointwise = keras.layers.Conv2D(
            filters, 1, use_bias=False, kernel_initializer="he_normal", kernel_regularizer=reg, name="pointwise"
        )
        self.pointwise_bn = keras.layers.BatchNormalization(name="pointwise_bn", **bn)

    def call(self, inputs, training=None):
        x = tf.nn.relu(self.depthwise_bn(self.depthwise(inputs), training=training))
        return tf.nn.relu(self.pointwise_bn(self.pointwise(x), training=training))

    def get_config(self):
        config = super().get_config()
        config.update(filters=self.filters, kernel_size=self.kernel_size)
        return config


@keras.saving.register_keras_serializable(package="deeplab")
class ResizeLike(keras.layers.Layer):
    """Bilinear resize of `inputs[0]` to the spatial size of `inputs[1]` (read at run time)."""

    def __init__(self, method="bilinear", **kwargs):
        super().__init__(**kwargs)
        self.method = method

    def call(self, inputs):
        x, reference = inputs
        size = tf.shape(reference)[1:3]
        resized = tf.image.resize(x, size, method=self.method)
        return tf.cast(resized, self.compute_dtype)

    def get_config(self):
        config = super().get_config()
        config.update(method=self.method)
        return config


def atrous_conv2d_same(inputs: tf.Tensor, kernel: tf.Tensor, rate: int) -> tf.Tensor:
    """`tf.nn.conv2d(inputs, kernel, padding="SAME", dilations=rate)` (stride 1, odd square kernel) as a sum
    of one matrix product per kernel tap over the part of the map where that tap lands inside the image.

    Why: at DeepLab's rates the dilated kernel is about as large as the feature map (rate 18 on the 21x21
    map of a 321 crop at output stride 16), so most taps read only zero padding. TF's dilated kernels
    still multiply those zeros, and their gradients ran 5-17x slower than the forward pass on CPUs
    (oneDNN and Eigen alike). Here a tap that falls outside the map costs nothing and every product,
    forward and backward, is a plain MatMul. Sizes are read at run time, so any H, W works.
    """
    size = kernel.shape[0]
    half = size // 2
    shape = tf.shape(inputs)
    height, width = shape[1], shape[2]
    in_channels, out_channels = kernel.shape[2], kernel.shape[3]
    # One Unpack, whose gradient is one Pack: indexing kernel[i, j] per tap would make nine
    # kernel-sized StridedSliceGrad tensors in the backward pass.
    tap_kernels = tf.unstack(tf.reshape(kernel, [size * size, in_channels, out_channels]))
    outputs = None
    for a in range(-half, half + 1):
        for b in range(-half, half + 1):
            # Output rows [top, top + rows) read input rows [top + a*rate, ...): zero-length where the tap
            # never lands inside the map.
            top = tf.minimum(max(0, -a * rate), height)
            left = tf.minimum(max(0, -b * rate), width)
            rows = tf.maximum(height - abs(a) * rate, 0)
            cols = tf.maximum(width - abs(b) * rate, 0)
            src_top = tf.minimum(max(0, a * rate), height)
            src_left = tf.minimum(max(0, b * rate), width)
            # tf.slice, not [] indexing: StridedSliceGrad is a slow generic kernel, Slice's gradient a Pad.
            patch = tf.slice(inputs, [0, src_top, src_left, 0], [-1, rows, cols, -1])
            flat = tf.reshape(patch, [-1, in_channels])
            tap = tf.matmul(flat, tap_kernels[(a + half) * size + b + half])
            tap = tf.reshape(tap, [shape[0], rows, cols, out_channels])
            if a == 0 and b == 0:
                tap_full = tap
            else:
                tap_full = tf.pad(tap, [[0, 0], [top, height - top - rows], [left, width - left - cols], [0, 0]])
            outputs = tap_full if outputs is None else outputs + tap_full
    return outputs


@keras.saving.register_keras_serializable(package="deeplab")
class AtrousConv2D(keras.layers.Conv2D):
    """keras Conv2D whose dilated "same" convolution runs as per-tap matrix products (atrous_conv2d_same).

    Same weights, names and config as Conv2D (ImageNet h5 files and checkpoints load unchanged); any
    other setting (rate 1, strides, "valid") runs the stock convolution. `impl` ("taps" or "stock") is not
    part of the config: it depends on the device the model runs on, not on the network, so whoever builds or
    loads a model sets it (set_atrous_impl; models.precision.resolve_atrous_impl decides "auto") before the
    first call traces the layer.
    """

    impl = "taps"

    def convolution_op(self, inputs, kernel):
        rate = self.dilation_rate[0]
        if (
            self.impl == "taps"
            and rate > 1
            and self.dilation_rate[0] == self.dilation_rate[1]
            and self.padding == "same"
            and self.strides == (1, 1)
            and self.kernel_size[0] == self.kernel_size[1]
            and self.kernel_size[0] % 2 == 1
            and self.groups == 1
            and self.data_format == "channels_last"
        ):
            return atrous_conv2d_same(inputs, kernel, rate)
        return super().convolution_op(inputs, kernel)


def set_atrous_impl(model: keras.layers.Layer, impl: str) -> int:
    """Run every AtrousConv2D of `model` as "taps" (atrous_conv2d_same) or "stock" (tf.nn.conv2d, dilated);
    returns how many layers were set. Same weights and outputs either way; set it before tracing (a tf.function
    already traced keeps the kernels it traced)."""
    if impl not in ("taps", "stock"):
        raise ValueError(f"atrous implementation must be taps or stock, got {impl!r}")
    layers = [layer for layer in model.submodules if isinstance(layer, AtrousConv2D)]
    for layer in layers:
        layer.impl = impl
    return len(layers)


def atrous_impl_of(model: keras.layers.Layer) -> typing.Optional[str]:
    """The implementation the AtrousConv2D layers of `model` run ("taps", "stock", "mixed"), None without any."""
    found = {layer.impl for layer in model.submodules if isinstance(layer, AtrousConv2D)}
    return None if not found else found.pop() if len(found) == 1 else "mixed"
