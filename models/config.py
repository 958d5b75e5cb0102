"""ModelConfig: the fields that define a DeepLab V3 network (architecture and output classes).

The one typed description of a network, shared by training (models.hparams.HParams holds one as
`hparams.model`), building (models.deeplab.build_deeplab_v3 and the backbone/ASPP builders take it;
models.model_io.build_model adds the precision), saving (hparams.json beside model.keras,
deeplab_export.json of every export: `ModelConfig.to_dict()`, one JSON shape) and loading
(models.model_io.load_model). Each default of the network is written here once. Pure Python, importing
nothing from the network code: CLIs validate cheaply and the builders depend on it, never the reverse.

Training-time options that do not change the network's weights or its outputs (ImageNet init
`weights`, `weight_decay`, `freeze_bn`) are not part of it: they stay in HParams and are passed to
the build separately.
"""

import dataclasses
import typing

BACKBONES = ("resnet_v2_50", "resnet_v2_101", "mobilenet_v2")
OUTPUT_STRIDES = (8, 16, 32)
# "v3": logits on the ASPP output (at 1/output_stride); "v3plus": the DeepLabV3+ decoder (models/decoder.py)
# refines the ASPP output with the backbone's stride-4 features, logits at 1/4.
DECODERS = ("v3", "v3plus")
# BatchNormalization epsilon each backbone's ImageNet weights were trained with.
DEFAULT_BN_EPSILON = {"resnet_v2_50": 1e-5, "resnet_v2_101": 1e-5, "mobilenet_v2": 1e-3}
# Options of models.deeplab.build_deeplab_v3 that are training-time, not part of the network definition.
BUILD_OPTIONS = ("weights", "weight_decay", "freeze_bn")


def default_bn_epsilon(backbone: str) -> float:
    """BatchNormalization epsilon matching `backbone`'s ImageNet weights."""
    if backbone not in DEFAULT_BN_EPSILON:
        raise ValueError(f"unknown backbone {backbone!r}; expected one of {BACKBONES}")
    return DEFAULT_BN_EPSILON[backbone]


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """A DeepLab V3 or V3+ network (defaults = the V3 paper's VOC model)."""

    backbone: str = "resnet_v2_50"
    output_stride: int = 16
    multi_grid: typing.Tuple[int, ...] = (1, 2, 4)  # block4 unit rates (ResNet only)
    aspp_rates: typing.Optional[typing.Tuple[int, ...]] = None  # None = paper rates for output_stride
    aspp_filters: int = 256
    image_pooling: bool = True
    alpha: float = 1.0  # MobileNetV2 width multiplier
    num_classes: int = 21
    bn_decay: float = 0.9997
    bn_epsilon: typing.Optional[float] = None  # None = the backbone's (DEFAULT_BN_EPSILON), resolved here
    # Input normalization inside the model (models.layers.Preprocess): None = the ImageNet weights' x / 127.5 - 1;
    # else (x - input_mean) / input_std per RGB channel, the training set's statistics (HParams.normalization
    # "dataset" sets them from the transform graph, models/transform.py). Constants of the network: an export
    # bakes them in.
    input_mean: typing.Optional[typing.Tuple[float, ...]] = None
    input_std: typing.Optional[typing.Tuple[float, ...]] = None
    decoder: str = "v3"  # one of DECODERS
    separable: bool = True  # v3plus: depthwise-separable 3x3 decoder convolutions (the V3+ paper's)

    def __post_init__(self):
        set_ = object.__setattr__  # frozen
        set_(self, "multi_grid", tuple(int(v) for v in self.multi_grid))
        if self.aspp_rates is not None:
            set_(self, "aspp_rates", tuple(int(v) for v in self.aspp_rates))
        for name in ("input_mean", "input_std"):
            value = getattr(self, name)
            if value is not None:
                value = tuple(float(v) for v in value)
                if len(value) != 3 or (name == "input_std" and not all(v > 0 for v in value)):
                    raise ValueError(f"model {name}: got {list(value)}, expected 3 numbers (R, G, B), std > 0")
                set_(self, name, value)
        if (self.input_mean is None) != (self.input_std is None):
            raise ValueError("model input_mean and input_std: give both (dataset normalization) or neither")
        checks = [
            (self.backbone in BACKBONES, "backbone", " or ".join(BACKBONES)),
            (self.output_stride in OUTPUT_STRIDES, "output_stride", " or ".join(map(str, OUTPUT_STRIDES))),
            (self.decoder in DECODERS, "decoder", " or ".join(DECODERS)),
            (isinstance(self.separable, bool), "separable", "true or false"),
            (int(self.num_classes) > 0, "num_classes", "a positive integer"),
            (int(self.aspp_filters) > 0, "aspp_filters", "a positive integer"),
            (float(self.alpha) > 0, "alpha", "a positive number"),
        ]
        for ok, name, expected in checks:
            if not ok:
                raise ValueError(f"model {name}: got {getattr(self, name)!r}, expected {expected}")
        if self.bn_epsilon is None:
            # resolved so that the saved JSON records the value the network was built with
            set_(self, "bn_epsilon", default_bn_epsilon(self.backbone))

    @classmethod
    def field_names(cls) -> typing.Tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    def to_dict(self) -> typing.Dict[str, typing.Any]:
        """JSON-ready dict (tuples as lists): the one saved shape (hparams.json "model", deeplab_export.json
        "model_config")."""
        values = dataclasses.asdict(self)
        if self.input_mean is None:  # the default normalization: the JSON of every model before the option
            del values["input_mean"], values["input_std"]
        return {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}

    @classmethod
    def from_dict(cls, values: typing.Mapping[str, typing.Any], ignore: typing.Iterable[str] = ()) -> "ModelConfig":
        """From a dict of its fields; unknown keys are an error naming them, except those in `ignore`."""
        names = set(cls.field_names())
        unknown = sorted(set(values) - names - set(ignore))
        if unknown:
            raise ValueError(f"unknown model field(s) {unknown}; known: {sorted(names)}")
        return cls(**{k: v for k, v in values.items() if k in names})

    def replace(self, **changes) -> "ModelConfig":
        return dataclasses.replace(self, **changes)
