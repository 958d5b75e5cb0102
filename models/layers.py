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
    """RGB 0..255 -> [-1, 1], the input scaling of tf_keras.applications ResNetV2/MobileNetV2 ("tf" mode).

    Kept inside the model so every caller (trainer, serving signatures, evaluator) feeds raw pixels.
    """

    def call(self, images):
        return images / 127.5 - 1.0


@keras.saving.register_keras_serializable(package="deeplab")
class ConvBNReLU(keras.layers.Layer):
    """Conv2D (no bias) -> BatchNormalization -> ReLU, the unit of every ASPP branch and the head."""

    def __init__(self, filters, kernel_size=1, dilation_rate=1, bn_decay=0.9997, bn_epsilon=1e-5,
                 weight_decay=0.0, **kwargs):
        super().__init__(**kwargs)
        self.filters = filters
        self.kernel_size = kernel_size
        self.dilation_rate = dilation_rate
        self.bn_decay = bn_decay
        self.bn_epsilon = bn_epsilon
        self.weight_decay = weight_decay
        self.conv = keras.layers.Conv2D(
            filters, kernel_size, padding="same", dilation_rate=dilation_rate, use_bias=False,
            kernel_initializer="he_normal", kernel_regularizer=l2_regularizer(weight_decay), name="conv")
        self.bn = keras.layers.BatchNormalization(momentum=bn_decay, epsilon=bn_epsilon, name="bn")
        self.relu = keras.layers.ReLU(name="relu")

    def call(self, inputs, training=None):
        return self.relu(self.bn(self.conv(inputs), training=training))

    def get_config(self):
        config = super().get_config()
        config.update(filters=self.filters, kernel_size=self.kernel_size, dilation_rate=self.dilation_rate,
                      bn_decay=self.bn_decay, bn_epsilon=self.bn_epsilon, weight_decay=self.weight_decay)
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
