"""DeepLab V3 (Chen et al. 2017): atrous backbone -> ASPP -> 1x1 logits -> bilinear upsample to input size;
with `decoder: v3plus`, DeepLabV3+ (Chen et al. 2018): backbone -> ASPP -> decoder (models/decoder.py, with the
backbone's stride-4 features) -> 1x1 logits at stride 4 -> bilinear upsample to input size.

Contract (docs/ARCHITECTURE.md): input float32 [B,H,W,3] RGB 0..255 (any H, W; preprocessing is inside
the model), output float32 logits [B,H,W,num_classes] at the input size, also under mixed precision.

Parameter counts (count_params(): weights + BN moving statistics; num_classes=21, aspp_filters=256,
image pooling on, any output stride; asserted in tests/test_model_deeplab.py):
  backbone                 backbone      total
  resnet_v2_50           23,564,800   39,108,373   (= Keras ResNet50V2 no-top)
  resnet_v2_101          42,626,560   58,170,133   (= Keras ResNet101V2 no-top)
  mobilenet_v2 alpha 1.0  1,843,264    4,558,165   (Keras MobileNetV2 no-top minus its 1280-channel Conv_1)
The head (ASPP + logits) is 15,543,573 after ResNet (2048 channels) and 2,714,901 after MobileNetV2 (320).
The V3+ decoder (separable, aspp_filters=256) adds 165,168 after ResNet (256-channel low-level features):
resnet_v2_50 V3+ is 39,273,541.
"""

import typing

import tf_keras as keras

from models import backbone as backbones
from models.aspp import ASPP
from models.config import ModelConfig
from models.decoder import Decoder
from models.layers import Preprocess, ResizeLike, l2_regularizer

# Measured with count_params() (see the module docstring).
PARAMETER_COUNTS = {"resnet_v2_50": 39_108_373, "resnet_v2_101": 58_170_133, "mobilenet_v2": 4_558_165}


def custom_objects() -> dict:
    """The custom layers, for keras.models.load_model of an h5 file (the .keras format finds them itself)."""
    from models.aspp import ImagePooling
    from models.layers import AtrousConv2D, ConvBNReLU, SeparableConvBNReLU

    return {
        "Preprocess": Preprocess,
        "ConvBNReLU": ConvBNReLU,
        "ResizeLike": ResizeLike,
        "ASPP": ASPP,
        "ImagePooling": ImagePooling,
        "AtrousConv2D": AtrousConv2D,
        "SeparableConvBNReLU": SeparableConvBNReLU,
        "Decoder": Decoder,
    }


def freeze_batch_norm(model: keras.Model) -> keras.Model:
    """Freeze every BatchNormalization layer (inference-mode statistics, frozen gamma/beta).

    The paper fine-tunes at output_stride 8 with frozen BN, since the small batches that fit at
    stride 8 give noisy statistics.
    """
    for layer in model.submodules:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False
    return model


def build_deeplab_v3(
    config: ModelConfig,
    *,
    weights: typing.Optional[str] = None,
    weight_decay: float = 0.0,
    freeze_bn: bool = False,
    name: str = "deeplab_v3",
) -> keras.Model:
    """Build the DeepLab V3 network `config` describes, under the current Keras dtype policy
    (models.model_io.build_model builds one under a given precision).

    Args:
      config: the network (models.config.ModelConfig: backbone, output stride, multi-grid, ASPP, classes,
        BatchNormalization settings).
      weights: None (random init), "imagenet" (the local Keras ImageNet file, models/weights.py) or the
        path of such an h5 file; only the backbone is initialised.
      weight_decay: L2 weight decay on conv kernels (slim convention), added to the training loss.
      freeze_bn: freeze all BatchNormalization layers (fine-tuning at output stride 8).
    Returns:
      A tf_keras.Model [B,H,W,3] float32 RGB 0..255 -> [B,H,W,num_classes] float32 logits.
    """
    if not isinstance(config, ModelConfig):
        raise TypeError(
            f"build_deeplab_v3 takes a models.config.ModelConfig, got {type(config).__name__}: "
            "use ModelConfig(**fields) or models.model_io.build_model(anything model_config reads)"
        )
    features_model = backbones.build_backbone(config, weight_decay)
    if weights is not None:
        from models.weights import load_imagenet_weights

        load_imagenet_weights(
            features_model, config.backbone, alpha=config.alpha, path=None if weights == "imagenet" else weights
        )
    images = keras.Input(shape=(None, None, 3), dtype="float32", name="images")
    x = Preprocess(config.input_mean, config.input_std, name="preprocess")(images)
    x = features_model(x)
    if config.decoder == "v3plus":
        low_level, x = x  # the backbone also returns its stride-4 map (models.backbone.LOW_LEVEL_FEATURES)
    x = ASPP.of_network(config, weight_decay)(x)
    if config.decoder == "v3plus":
        x = Decoder.of_network(config, weight_decay)([x, low_level])
    x = keras.layers.Conv2D(config.num_classes, 1, kernel_regularizer=l2_regularizer(weight_decay), name="logits")(x)
    # float32 whatever the mixed-precision policy: the loss and argmax need full-precision logits.
    logits = ResizeLike(name="upsample_logits", dtype="float32")([x, images])
    model = keras.Model(images, logits, name=name)
    if freeze_bn:
        freeze_batch_norm(model)
    return model
