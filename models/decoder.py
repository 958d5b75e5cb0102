"""The DeepLabV3+ decoder (Chen et al. 2018, "Encoder-Decoder with Atrous Separable Convolution", section 3.1).

V3's logits come from the ASPP output at 1/output_stride of the input, so object boundaries are as coarse as
that grid. The decoder brings back the backbone's last stride-4 feature map (models.backbone.LOW_LEVEL_FEATURES),
projects it to few channels (48: the paper's Table 1, so it does not outweigh the 256 encoder channels), concatenates
it with the ASPP output upsampled to stride 4 and refines the two with 3x3 convolutions; the logits are then computed
at stride 4 and bilinearly upsampled to the input (models.deeplab).
"""

import tf_keras as keras

from models.config import ModelConfig
from models.layers import BatchNormSettings, ConvBNReLU, ResizeLike, SeparableConvBNReLU

LOW_LEVEL_CHANNELS = 48  # the paper's best 1x1 projection of the low-level features (Table 1)
REFINE_CONVS = 2  # 3x3 convolutions after the concatenation (Table 2: two 3x3 of 256)


@keras.saving.register_keras_serializable(package="deeplab")
class Decoder(BatchNormSettings):
    """[ASPP output, low-level features] -> refined features at the low-level (stride 4) resolution.

    low-level -> 1x1 conv-BN-ReLU to `low_level_channels`; ASPP output -> bilinear resize to the low-level size;
    concat -> `REFINE_CONVS` 3x3 conv-BN-ReLU of `filters` (depthwise-separable when `separable`, as the paper).
    """

    def __init__(self, filters=256, low_level_channels=LOW_LEVEL_CHANNELS, separable=True, **kwargs):
        super().__init__(**kwargs)
        self.filters = filters
        self.low_level_channels = low_level_channels
        self.separable = separable
        common = self.bn_settings
        self.project_low_level = ConvBNReLU(low_level_channels, 1, name="project_low_level", **common)
        self.upsample = ResizeLike(name="upsample_aspp")
        self.concat = keras.layers.Concatenate(axis=-1, name="concat")
        conv = SeparableConvBNReLU if separable else ConvBNReLU
        self.refine = [conv(filters, 3, name=f"conv_3x3_{i + 1}", **common) for i in range(REFINE_CONVS)]

    @classmethod
    def of_network(cls, config: ModelConfig, weight_decay: float = 0.0, name: str = "decoder") -> "Decoder":
        """The decoder of the network `config`: as wide as its ASPP (`aspp_filters`, 256 in the paper)."""
        return cls(config.aspp_filters, separable=config.separable, name=name, **cls.settings_of(config, weight_decay))

    def call(self, inputs, training=None):
        encoder, low_level = inputs
        low_level = self.project_low_level(low_level, training=training)
        x = self.concat([self.upsample([encoder, low_level]), low_level])
        for conv in self.refine:
            x = conv(x, training=training)
        return x

    def get_config(self):
        config = super().get_config()
        config.update(filters=self.filters, low_level_channels=self.low_level_channels, separable=self.separable)
        return config
