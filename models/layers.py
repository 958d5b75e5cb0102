"""Small DeepLab V3 layers (keras-hub style: one concern each, full get_config).

All layers accept dynamic spatial shapes (any H, W, odd included): sizes are read with tf.shape at
run time, never from the static shape.
"""

import tensorflow as tf
import tf_keras as keras

# Weight decay is applied as a kernel regularizer so that it is part of the model config (a
# reloaded model keeps training with the same objective) and Keras adds it to the total loss.


def l2_regularizer(weight_decay):
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

    def __init__(self, bn_decay=0.9997, bn_epsilon=1e-5, weight_decay=0.0, **kwargs):
        super().__init__(**kwargs)
        self.bn_decay = bn_decay
        self.bn_epsilon = bn_epsilon
        self.weight_decay = weight_decay

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


def atrous_conv2d_same(inputs, kernel, rate):
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
    other setting (rate 1, strides, "valid") runs the stock convolution.
    """

    def convolution_op(self, inputs, kernel):
        rate = self.dilation_rate[0]
        if (
            rate > 1
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
