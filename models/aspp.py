"""Atrous Spatial Pyramid Pooling (DeepLab V3 paper, section 3.3).

Branches, each conv-BN-ReLU with `filters` channels: one 1x1 conv, one 3x3 atrous conv per rate,
and image pooling (global average -> 1x1 conv -> bilinear upsample to the feature size). The
branches are concatenated and fused by a 1x1 conv-BN-ReLU.
"""

import tensorflow as tf
import tf_keras as keras

from models.config import ModelConfig
from models.layers import BatchNormSettings, ConvBNReLU

# Paper: rates (6, 12, 18) at output_stride 16, doubled at 8. At 32 the feature map is so small
# that 6+ would only see padding, so the rates are halved (3, 6, 9): the same field of view in
# input pixels as 16's rates.
_RATES_AT_16 = (6, 12, 18)


def aspp_rates_for(output_stride: int) -> tuple:
    """The atrous rates of the three 3x3 ASPP branches for an output stride (8, 16 or 32)."""
    if output_stride not in (8, 16, 32):
        raise ValueError(f"output_stride must be 8, 16 or 32, got {output_stride!r}")
    return tuple(r * 16 // output_stride for r in _RATES_AT_16)


@keras.saving.register_keras_serializable(package="deeplab")
class ImagePooling(BatchNormSettings):
    """Image-level features: global average pool -> 1x1 conv-BN-ReLU -> bilinear upsample to input size."""

    def __init__(self, filters=256, **kwargs):
        super().__init__(**kwargs)
        self.filters = filters
        self.conv = ConvBNReLU(filters, 1, name="conv_bn_relu", **self.bn_settings)

    def call(self, inputs, training=None):
        pooled = tf.reduce_mean(inputs, axis=[1, 2], keepdims=True)
        pooled = self.conv(pooled, training=training)
        return tf.cast(tf.image.resize(pooled, tf.shape(inputs)[1:3], method="bilinear"), self.compute_dtype)

    def get_config(self):
        config = super().get_config()
        config.update(filters=self.filters)
        return config


@keras.saving.register_keras_serializable(package="deeplab")
class ASPP(BatchNormSettings):
    """ASPP: [1x1, 3x3 @ rate for rate in `rates`, image pooling] -> concat -> 1x1 conv-BN-ReLU.

    `rates=()` leaves only the 1x1 and image-pooling branches (DeepLab's small MobileNetV2 model);
    `image_pooling=False` drops the image-level branch.
    """

    def __init__(self, rates=_RATES_AT_16, filters=256, image_pooling=True, **kwargs):
        super().__init__(**kwargs)
        self.rates = tuple(int(r) for r in rates)
        self.filters = filters
        self.image_pooling = image_pooling
        common = self.bn_settings
        self.branches = [ConvBNReLU(filters, 1, name="conv_1x1", **common)]
        self.branches += [
            ConvBNReLU(filters, 3, dilation_rate=r, name=f"conv_3x3_rate{r}", **common) for r in self.rates
        ]
        if image_pooling:
            self.branches.append(ImagePooling(filters, name="image_pooling", **common))
        self.concat = keras.layers.Concatenate(axis=-1, name="concat")
        self.project = ConvBNReLU(filters, 1, name="project", **common)

    @classmethod
    def of_network(cls, config: ModelConfig, weight_decay: float = 0.0, name: str = "aspp") -> "ASPP":
        """The ASPP of the network `config`: its rates (None: the paper's for the output stride), filters,
        image pooling and BatchNormalization settings."""
        rates = aspp_rates_for(config.output_stride) if config.aspp_rates is None else config.aspp_rates
        return cls(
            rates,
            config.aspp_filters,
            config.image_pooling,
            name=name,
            **cls.settings_of(config, weight_decay),
        )

    def call(self, inputs, training=None):
        outputs = [branch(inputs, training=training) for branch in self.branches]
        return self.project(self.concat(outputs), training=training)

    def get_config(self):
        config = super().get_config()
        config.update(rates=list(self.rates), filters=self.filters, image_pooling=self.image_pooling)
        return config
