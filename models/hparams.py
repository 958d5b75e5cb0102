"""Training hyper-parameters: one dataclass, named presets, and conversions from TFX custom_config, CLI
flags and JSON (the JSON beside a trained model lets it be rebuilt and re-exported).

Presets:
  paper  (the default) - DeepLab V3 on VOC 2012 trainaug as in the paper (section 4): ResNet-v2-50
         from ImageNet, output_stride 16, multi_grid (1, 2, 4), ASPP (6, 12, 18) + image pooling,
         crop 513, batch 16, SGD momentum 0.9, poly lr 0.007 (power 0.9), 30K steps, weight decay
         1e-4, BN decay 0.9997.
  demo   - a tiny MobileNetV2 that learns the synthetic dataset (data.synthetic) on a 2-core CPU in
         minutes (measured by bench/train_synthetic.py).
  finetune_os8 - the paper's second stage: output_stride 8, frozen BN, lr 0.001, on top of `paper`.
  v3plus - `paper` with the DeepLabV3+ decoder (or `--set decoder=v3plus` on any preset).
"""

import argparse
import dataclasses
import json
import math
import typing

from models.config import ModelConfig
from models.precision import ATROUS_REQUESTS
from models.precision import REQUESTS as PRECISION_REQUESTS  # auto: models/precision.py decides

MODEL_FIELDS = ModelConfig.field_names()  # accepted flat (presets, --set, custom_config, old hparams.json)
# Recorded by models.train in hparams.json beside the fields (what "auto" resolved to, and why);
# from_json drops them, so a model_run's hparams.json reloads (and "auto" resolves again where it runs).
RECORDED_KEYS = (
    "precision_resolved",
    "precision_reason",
    "class_weights_resolved",
    "atrous_impl_resolved",
    "atrous_impl_reason",
)
OPTIMIZERS = ("sgd", "adam")
# HParams.class_weights computed from the class pixel histogram of the training labels
# (models.losses.class_weights_from_histogram); "auto" is "median_frequency".
CLASS_WEIGHT_METHODS = ("auto", "median_frequency", "inverse_sqrt")
# HParams.normalization: the model's input scaling. "imagenet": x / 127.5 - 1, what the ImageNet backbones were
# trained with (the paper's setting); "dataset": (x - mean) / std with the training pixels' per-channel mean and
# std from the transform graph (models/transform.py), for training from scratch on data unlike ImageNet.
NORMALIZATIONS = ("imagenet", "dataset")
# HParams.sampling of training images: "uniform" (each image once per epoch) or "class_balanced" (LVIS repeat-factor
# sampling: image i is repeated r_i = max over its classes c of max(1, sqrt(repeat_threshold / f_c)) times on
# average, f_c the fraction of training images containing c, from the transform graph).
SAMPLINGS = ("uniform", "class_balanced")
# The model fields the training resolves (HParams.normalization "dataset"), not set by flags.
RESOLVED_MODEL_FIELDS = ("input_mean", "input_std")


@dataclasses.dataclass
class HParams:
    """All knobs of model building, input pipeline and training (defaults = the paper's VOC setup).

    The network itself is `model` (models.config.ModelConfig); its fields also read flat
    (`hparams.backbone`) and are accepted flat by from_dict/preset/replace and the flags. to_dict()
    nests them under "model"; from_dict() reads both that and the flat hparams.json of older versions.
    """

    # model (the network) and the training-time build options
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    freeze_bn: bool = False
    weights: typing.Optional[str] = "imagenet"  # None, "imagenet" (local Keras h5) or a path
    # Fine-tuning: a trained model to start from (models.finetune.warm_start): an export dir, a TFX Trainer Model
    # artifact (Format-Serving/), a model_run dir or a .keras file (anything models.model_io.load_model reads).
    # Its backbone must be this one (same backbone and alpha); every layer whose weights have the same shapes is
    # copied (backbone, ASPP, and the logits when num_classes matches), the others (the logits of another class
    # count) keep their fresh initialisation. It wins over `weights` for every copied layer, so the ImageNet load
    # is skipped when it is set (build_options()). A resumed run (BackupAndRestore) still continues from its own
    # checkpoint. In the TFX pipeline the Trainer's base_model input fills it when it is not set.
    init_from: typing.Optional[str] = None
    # input pipeline
    crop_size: int = 513
    min_scale: float = 0.5
    max_scale: float = 2.0
    flip: bool = True
    color_jitter: float = 0.0  # 0 = off; else max brightness delta as a fraction of 255 (and +-contrast/saturation)
    shuffle_buffer: int = 256
    cache_decoded: bool = False  # keep decoded images in memory (small datasets only)
    # optimisation
    batch_size: int = 16  # global batch, split over replicas
    train_steps: int = 30000
    eval_steps: typing.Optional[int] = None  # None = every validation image
    steps_per_epoch: int = 1000  # validation, TensorBoard images and best-checkpoint interval
    optimizer: str = "sgd"
    learning_rate: float = 0.007
    end_learning_rate: float = 0.0
    lr_power: float = 0.9
    warmup_steps: int = 0
    momentum: float = 0.9
    weight_decay: float = 1e-4
    # Class imbalance: loss weight per class id (models.losses.masked_softmax_cross_entropy, the weighted mean
    # sum w[label] * ce / sum w[label] over the labelled pixels). None: off (every pixel counts the same).
    # "auto" (= "median_frequency": w_c = median(freq) / freq_c) or "inverse_sqrt" (w_c ~ 1 / sqrt(freq_c),
    # pixel-weighted mean 1): computed when training starts from the class pixel histogram of the training
    # examples (the one LabelStatsGen computes; freq_c = pixels of c / labelled pixels; a class without pixels
    # gets 0) and recorded in hparams.json as "class_weights_resolved". Or num_classes numbers, one per class
    # id (flags and --set also take the text "1,2,0.5" or "[1, 2, 0.5]").
    class_weights: typing.Union[None, str, typing.Tuple[float, ...]] = None
    # Dataset statistics (models/transform.py: the Transform component's analyzers, or the same preprocessing_fn
    # run in-process by `deeplab train`): see NORMALIZATIONS and SAMPLINGS.
    normalization: str = "imagenet"
    sampling: str = "uniform"
    repeat_threshold: float = 0.1  # t of class_balanced sampling: classes in fewer than t of the images repeat
    # execution
    precision: str = "auto"  # auto: bfloat16 where native, float16 on older GPUs, else float32
    xla: bool = False
    # Kernels of the dilated 3x3 convolutions (same weights and outputs): auto = per-tap matrix products on a CPU,
    # the stock dilated convolution on a GPU/TPU (models.precision.resolve_atrous_impl); "taps" / "stock" force.
    atrous_impl: str = "auto"
    checkpoint_every: int = 500  # steps between BackupAndRestore checkpoints (resume of a killed run)
    log_images: int = 3  # validation images drawn with predictions each epoch
    seed: int = 0

    def __post_init__(self):
        if isinstance(self.model, dict):
            self.model = ModelConfig.from_dict(self.model)
        self.class_weights = parse_class_weights(self.class_weights, self.model.num_classes)
        self.init_from = parse_init_from(self.init_from)
        checks = [
            (self.precision in PRECISION_REQUESTS, "precision", " or ".join(PRECISION_REQUESTS)),
            (self.optimizer in OPTIMIZERS, "optimizer", " or ".join(OPTIMIZERS)),
            (self.normalization in NORMALIZATIONS, "normalization", " or ".join(NORMALIZATIONS)),
            (self.sampling in SAMPLINGS, "sampling", " or ".join(SAMPLINGS)),
            (0 < float(self.repeat_threshold) <= 1, "repeat_threshold", "a fraction 0 < t <= 1"),
            (self.atrous_impl in ATROUS_REQUESTS, "atrous_impl", " or ".join(ATROUS_REQUESTS)),
            (
                self.crop_size > 0 and self.batch_size > 0 and self.train_steps > 0,
                "crop_size/batch_size/train_steps",
                "positive integers",
            ),
            (0 < self.min_scale <= self.max_scale, "min_scale/max_scale", "0 < min_scale <= max_scale"),
        ]
        for ok, field, expected in checks:
            if not ok:
                raise ValueError(
                    f"hyper-parameter {field}: got {getattr(self, field.split('/')[0])!r}, expected {expected}"
                )

    def to_dict(self):
        """JSON-ready dict: the network under "model" (ModelConfig.to_dict()), the rest flat."""
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "model"}
        return {"model": self.model.to_dict(), **{k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}}

    def build_options(self):
        """The training-time arguments of models.model_io.build_model (ImageNet init, L2, frozen BN). With
        init_from set there is no ImageNet load: the trained model's backbone replaces it entirely."""
        weights = None if self.init_from else self.weights
        return dict(
            weights=weights, weight_decay=self.weight_decay, freeze_bn=self.freeze_bn, atrous_impl=self.atrous_impl
        )

    def to_json(self, path=None, **recorded):
        """JSON text; also written to `path` (local or gfile URI) when given. `recorded`: RECORDED_KEYS
        values written beside the fields (e.g. precision_resolved="mixed_bfloat16")."""
        unknown = sorted(set(recorded) - set(RECORDED_KEYS))
        if unknown:
            raise ValueError(f"to_json records only {RECORDED_KEYS}; got {unknown}")
        text = json.dumps({**self.to_dict(), **recorded}, indent=2, sort_keys=True)
        if path:
            import tensorflow as tf

            with tf.io.gfile.GFile(path, "w") as f:
                f.write(text + "\n")
        return text

    @classmethod
    def from_dict(cls, values):
        """Build from a dict, nested ({"model": {...}, ...}, to_dict's shape) or flat (model fields at the
        top, as presets, --set and older hparams.json); unknown keys are an error naming the key (typos
        must not pass silently)."""
        values = flatten(values)
        names = {f.name for f in dataclasses.fields(cls)} - {"model"}
        unknown = sorted(set(values) - names - set(MODEL_FIELDS))
        if unknown:
            raise ValueError(f"unknown hyper-parameter(s) {unknown}; known: {sorted(names | set(MODEL_FIELDS))}")
        model = ModelConfig.from_dict({k: v for k, v in values.items() if k in MODEL_FIELDS})
        return cls(model=model, **{k: v for k, v in values.items() if k in names})

    @classmethod
    def from_json(cls, path):
        import tensorflow as tf

        with tf.io.gfile.GFile(path) as f:
            values = json.load(f)
        return cls.from_dict({k: v for k, v in values.items() if k not in RECORDED_KEYS})

    def replace(self, **overrides):
        """A copy with fields replaced; model fields may be given flat (replace(output_stride=8))."""
        model = {k: overrides.pop(k) for k in list(overrides) if k in MODEL_FIELDS}
        if model:
            overrides["model"] = overrides.get("model", self.model).replace(**model)
        return dataclasses.replace(self, **overrides)


def parse_class_weights(value, num_classes=None):
    """HParams.class_weights in its one form: None, a name of CLASS_WEIGHT_METHODS or a tuple of floats (one
    per class id when num_classes is given). Takes None / "none" / "null" / "", a method name, a list or tuple
    of numbers, or text "1,2,0.5", "1 2 0.5" or "[1, 2, 0.5]" (flags, --set, custom_config). ValueError naming
    the field and the accepted values otherwise."""
    if value is None:
        return None
    count = f"{num_classes} " if num_classes is not None else ""
    expected = (
        f"null (no class weights), {' / '.join(repr(m) for m in CLASS_WEIGHT_METHODS)} (computed from the "
        f"training labels), or {count}non-negative numbers, one per class id, e.g. class_weights=[1, 2.5, ...] "
        "or --set class_weights=1,2.5,..."
    )
    values = value
    if isinstance(value, str):
        text = value.strip()
        if text.lower() in ("", "none", "null", "off"):
            return None
        if text.lower() in CLASS_WEIGHT_METHODS:
            return text.lower()
        try:
            values = json.loads(text) if text.startswith("[") else text.replace(",", " ").split()
        except ValueError:
            values = None
    try:
        if isinstance(values, (str, bytes, dict)) or not values:
            raise TypeError
        weights = tuple(float(v) for v in values)
    except (TypeError, ValueError):
        raise ValueError(f"hyper-parameter class_weights: got {value!r}, expected {expected}") from None
    if num_classes is not None and len(weights) != num_classes:
        raise ValueError(
            f"hyper-parameter class_weights: got {len(weights)} weight(s) but num_classes is {num_classes}; "
            f"give one weight per class id 0..{num_classes - 1} (or change num_classes), or 'auto' to compute them"
        )
    if not all(math.isfinite(w) and w >= 0 for w in weights) or not any(weights):
        raise ValueError(f"hyper-parameter class_weights: got {list(weights)}, expected finite weights >= 0, not all 0")
    return weights


def parse_init_from(value):
    """HParams.init_from in its one form: None or a non-empty path string. Takes None / "none" / "null" / ""
    (flags, --set, custom_config) as None and a str or os.PathLike as the path; ValueError otherwise."""
    if value is None:
        return None
    if hasattr(value, "__fspath__"):
        value = value.__fspath__()
    if not isinstance(value, str):
        raise ValueError(
            f"hyper-parameter init_from: got {value!r}, expected null or the path of a trained model (an export "
            "dir, a Trainer Model artifact, a model_run dir or a .keras file), e.g. --set init_from=/models/voc"
        )
    text = value.strip()
    return None if text.lower() in ("", "none", "null") else text


def _model_property(name):
    return property(lambda self: getattr(self.model, name), doc=f"model.{name} (read-only; see replace())")


for _name in MODEL_FIELDS:
    setattr(HParams, _name, _model_property(_name))


def flatten(values):
    """`values` with a nested "model" section (dict or ModelConfig) moved to the top level; a model field
    given both ways is an error."""
    values = dict(values)
    model = values.pop("model", None)
    if model is None:
        return values
    model = model.to_dict() if isinstance(model, ModelConfig) else dict(model)
    both = sorted(set(model) & set(values))
    if both:
        raise ValueError(f"model field(s) {both} given both flat and under 'model'")
    return {**model, **values}


PRESETS = {
    "paper": {},
    "finetune_os8": {"output_stride": 8, "freeze_bn": True, "learning_rate": 0.001},
    # DeepLabV3+ (Chen et al. 2018): `paper` with the decoder (models/decoder.py); logits at stride 4.
    "v3plus": {"decoder": "v3plus"},
    # bench/train_synthetic.py (300 train / 60 val synthetic images, 2 shared CPU cores, load ~5):
    # val mIoU 0.869 over the 60 whole val images after 750 steps, 395 s fit / 407 s total.
    "demo": {
        "backbone": "mobilenet_v2",
        "alpha": 0.35,
        "output_stride": 16,
        "aspp_filters": 64,
        "aspp_rates": (3, 6, 9),
        "weights": None,
        "crop_size": 129,
        "min_scale": 0.5,
        "max_scale": 1.5,
        "batch_size": 16,
        "train_steps": 750,
        "steps_per_epoch": 250,
        "optimizer": "adam",
        "learning_rate": 0.003,
        "weight_decay": 1e-5,
        "bn_decay": 0.99,
        "precision": "auto",
        "cache_decoded": True,
        "checkpoint_every": 250,
    },
}


def preset(name="paper", **overrides):
    """HParams of a named preset (PRESETS) with overrides."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; known: {sorted(PRESETS)}")
    return HParams.from_dict({**PRESETS[name], **flatten(overrides)})


def from_custom_config(custom_config, train_steps=None, eval_steps=None):
    """HParams from a TFX Trainer custom_config: {"preset": name, <field>: value, ...}.

    Values may also come nested under "hparams" (a dict or a JSON string). fn_args.train_steps /
    eval_steps (the Trainer's TrainArgs/EvalArgs) win over the config when set.
    """
    config = dict(custom_config or {})
    nested = config.pop("hparams", None)
    if isinstance(nested, str):
        nested = json.loads(nested)
    config.update(nested or {})
    name = config.pop("preset", "paper")
    if train_steps:
        config["train_steps"] = int(train_steps)
    if eval_steps:
        config["eval_steps"] = int(eval_steps)
    return preset(name, **config)


def parse_assignment(text):
    """'NAME=VALUE' (a --set or --model-arg flag) -> (NAME, VALUE): VALUE as JSON (321, true, [1, 2]) where it
    parses, else the plain string. An argparse `type`: a malformed text is an ArgumentTypeError."""
    name, sep, value = str(text).partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    try:
        return name, json.loads(value)
    except ValueError:
        return name, value


def _parse_bool(text):
    if str(text).lower() in ("1", "true", "yes", "on"):
        return True
    if str(text).lower() in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected a boolean (true/false), got {text!r}")


def _parse_optional(kind):
    def parse(text):
        return None if str(text).lower() in ("none", "") else kind(text)

    return parse


def _parse_ints(text):
    text = str(text).strip()
    if text.lower() == "none":
        return None
    return tuple(int(v) for v in text.replace(",", " ").split()) if text else ()


def _flag_fields():
    """The dataclass fields that get a flag: the model's, then HParams' own."""
    model_fields = (f for f in dataclasses.fields(ModelConfig) if f.name not in RESOLVED_MODEL_FIELDS)
    return [*model_fields, *(f for f in dataclasses.fields(HParams) if f.name != "model")]


def add_preset_flags(parser, default="paper"):
    """--preset and --set: the one definition `deeplab train`, `run`, `demo` and `compile` share."""
    parser.add_argument(
        "--preset",
        default=default,
        choices=sorted(PRESETS),
        help="starting hyper-parameters: paper (ResNet-v2-50, needs the ImageNet h5), demo (small MobileNetV2 "
        "from scratch), finetune_os8 (default %(default)s)",
    )
    parser.add_argument(
        "--set",
        type=parse_assignment,
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="override one hyper-parameter of the preset (JSON value), e.g. --set crop_size=321 --set "
        "precision=mixed_bfloat16; repeat for more",
    )


def add_flags(parser):
    """--preset, --set and one --flag per HParams field (e.g. --output-stride 8, --multi-grid 1,2,4, --weights
    none); a field flag wins over --set of the same name."""
    add_preset_flags(parser)
    for field in _flag_fields():
        flag = "--" + field.name.replace("_", "-")
        kind = {"bool": _parse_bool, "int": int, "float": float, "str": str}.get(
            getattr(field.type, "__name__", ""), None
        )
        extra_help = ""
        if field.name == "class_weights":  # text as given; HParams parses it (parse_class_weights)
            kind = _parse_optional(str)
            extra_help = f"; {' | '.join(CLASS_WEIGHT_METHODS)} | one number per class, e.g. 1,2.5,0.5"
        if kind is None:
            type_text = str(field.type)
            kind = (
                _parse_ints
                if "Tuple" in type_text
                else _parse_optional(int)
                if "int" in type_text
                else _parse_optional(str)
            )
        # SUPPRESS: a flag not given leaves no attribute, so "--weights none" can still override.
        parser.add_argument(
            flag,
            dest=f"hp_{field.name}",
            type=kind,
            default=argparse.SUPPRESS,
            help=f"(default from the preset; paper: {field.default!r}{extra_help})",
        )


def from_flags(args):
    """HParams from argparse results of add_flags: preset values overridden by the flags given."""
    overrides = dict(getattr(args, "set", None) or [])
    overrides.update({f.name: getattr(args, f"hp_{f.name}") for f in _flag_fields() if hasattr(args, f"hp_{f.name}")})
    return preset(getattr(args, "preset", "paper"), **overrides)
