"""DeepLab V3 (Chen et al. 2017): atrous backbone -> ASPP -> 1x1 logits -> bilinear upsample to input size.

Contract (docs/ARCHITECTURE.md): input float32 [B,H,W,3] RGB 0..255 (any H, W; preprocessing is inside
the model), output float32 logits [B,H,W,num_classes] at the input size, also under mixed precision.

Parameter counts (count_params(): weights + BN moving statistics; num_classes=21, aspp_filters=256,
image pooling on, any output stride; asserted in tests/test_model_deeplab.py):
  backbone                 backbone      total
  resnet_v2_50           23,564,800   39,108,373   (= Keras ResNet50V2 no-top)
  resnet_v2_101          42,626,560   58,170,133   (= Keras ResNet101V2 no-top)
  mobilenet_v2 alpha 1.0  1,843,264    4,558,165   (Keras MobileNetV2 no-top minus its 1280-channel Conv_1)
The head (ASPP + logits) is 15,543,573 after ResNet (2048 channels) and 2,714,901 after MobileNetV2 (320).
"""

import tf_keras as keras

from models import backbone as backbones
from models.aspp import ASPP, aspp_rates_for
from models.config import default_bn_epsilon
from models.layers import Preprocess, ResizeLike, l2_regularizer

# Measured with count_params() (see the module docstring).
PARAMETER_COUNTS = {"resnet_v2_50": 39_108_373, "resnet_v2_101": 58_170_133, "mobilenet_v2": 4_558_165}


def custom_objects():
    """The custom layers, for keras.models.load_model of an h5 file (the .keras format finds them itself)."""
    from models.aspp import ImagePooling
    from models.layers import AtrousConv2D, ConvBNReLU

    return {
        "Preprocess": Preprocess,
        "ConvBNReLU": ConvBNReLU,
        "ResizeLike": ResizeLike,
        "ASPP": ASPP,
        "ImagePooling": ImagePooling,
        "AtrousConv2D": AtrousConv2D,
    }


def freeze_batch_norm(model):
    """Freeze every BatchNormalization layer (inference-mode statistics, frozen gamma/beta).

    The paper fine-tunes at output_stride 8 with frozen BN, since the small batches that fit at
    stride 8 give noisy statistics.
    """
    for layer in model.submodules:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False
    return model


def build_deeplab_v3(
    num_classes=21,
    backbone="resnet_v2_50",
    output_stride=16,
    multi_grid=(1, 2, 4),
    aspp_rates=None,
    bn_decay=0.9997,
    bn_epsilon=None,
    weights=None,
    *,
    input_mean=None,
    input_std=None,
    alpha=1.0,
    aspp_filters=256,
    image_pooling=True,
    weight_decay=0.0,
    freeze_bn=False,
    name="deeplab_v3",
):
    """Build DeepLab V3.

    The network-defining arguments are the fields of models.config.ModelConfig
    (`ModelConfig.build()` calls this); `weights`, `weight_decay` and `freeze_bn` are training-time options.

    Args:
      num_classes: output classes (21 for VOC).
      backbone: "resnet_v2_50", "resnet_v2_101" or "mobilenet_v2".
      output_stride: 8, 16 or 32, the ratio of input size to backbone feature size.
      multi_grid: block4 unit rates multiplied by the block's atrous rate (ResNet only).
      aspp_rates: rates of the 3x3 ASPP branches; None = the paper's for the output stride
        (models.aspp.aspp_rates_for); () = 1x1 + image pooling only.
      bn_decay, bn_epsilon: BatchNormalization momentum and epsilon of every BN layer; bn_epsilon None = the
        backbone's (1e-5 ResNet, 1e-3 MobileNetV2: what its ImageNet weights were trained with).
      weights: None (random init), "imagenet" (the local Keras ImageNet file, models/weights.py) or the
        path of such an h5 file; only the backbone is initialised.
      input_mean, input_std: per-channel input normalization (models.layers.Preprocess); None: x / 127.5 - 1.
      alpha: MobileNetV2 width multiplier.
      aspp_filters: channels of every ASPP branch (256 in the paper; fewer for tiny demo models).
      image_pooling: keep the image-level ASPP branch.
      weight_decay: L2 weight decay on conv kernels (slim convention), added to the training loss.
      freeze_bn: freeze all BatchNormalization layers (fine-tuning at output stride 8).
    Returns:
      A tf_keras.Model [B,H,W,3] float32 RGB 0..255 -> [B,H,W,num_classes] float32 logits.
    """
    rates = aspp_rates_for(output_stride) if aspp_rates is None else tuple(aspp_rates)
    if bn_epsilon is None:
        bn_epsilon = default_bn_epsilon(backbone)
    features_model = backbones.build_backbone(
        backbone, output_stride, tuple(multi_grid), alpha, bn_decay, bn_epsilon, weight_decay
    )
    if weights is not None:
        from models.weights import load_imagenet_weights

        load_imagenet_weights(features_model, backbone, alpha=alpha, path=None if weights == "imagenet" else weights)
    images = keras.Input(shape=(None, None, 3), dtype="float32", name="images")
    x = Preprocess(input_mean, input_std, name="preprocess")(images)
    x = features_model(x)
    bn_settings = dict(bn_decay=bn_decay, bn_epsilon=bn_epsilon, weight_decay=weight_decay)
    x = ASPP(rates, aspp_filters, image_pooling, name="aspp", **bn_settings)(x)
    x = keras.layers.Conv2D(num_classes, 1, kernel_regularizer=l2_regularizer(weight_decay), name="logits")(x)
    # float32 whatever the mixed-precision policy: the loss and argmax need full-precision logits.
    logits = ResizeLike(name="upsample_logits", dtype="float32")([x, images])
    model = keras.Model(images, logits, name=name)
    if freeze_bn:
        freeze_batch_norm(model)
    return model
