"""Building, converting, saving and loading DeepLab V3 models: the one home of each.

  model_config(source)        ModelConfig from a ModelConfig, HParams, or any saved dict (hparams.json,
                              nested or flat; deeplab_export.json of either format: see docs/ARCHITECTURE.md)
  build_model(config, precision, ...)   a fresh network under a precision (Keras dtype policy)
  precision_policy(name)      the global Keras dtype policy inside a `with` block
  with_precision(model, precision, config)  the model itself or a rebuilt copy with its weights (e.g. the
                              float32 copy saved and exported after mixed-precision training)
  randomize_weights(model)    non-degenerate random weights (`--init random` exports, tests)
  write_hparams / save_model  hparams.json and model.keras of a model_run directory
  load_model(path, ...)       LoadedModel from any of: an export directory (deeplab_export.json), a Trainer
                              Model artifact (Format-Serving/), a model_run directory (model.keras +
                              hparams.json), a .keras/.h5 file, a TF checkpoint prefix or directory

Precisions: Keras policy names (float32, mixed_bfloat16, mixed_float16) and export names (float32,
bfloat16) are both accepted; models/precision.py resolves "auto" (train and export differ there).
"""

import collections
import contextlib
import json
import os
import typing

import numpy as np
import tensorflow as tf
import tf_keras as keras

from models.config import ModelConfig
from models.deeplab import build_deeplab_v3, custom_objects
from models.layers import set_atrous_impl
from models.precision import resolve_atrous_impl

# What model_config reads: a ModelConfig, an HParams, a saved dict or its JSON text.
ConfigSource = typing.Union[ModelConfig, typing.Any, typing.Mapping[str, typing.Any], str]

MODEL_FILENAME = "model.keras"
HPARAMS_FILENAME = "hparams.json"
# precision name (export or Keras policy vocabulary) -> Keras dtype policy
_POLICIES = {
    "float32": "float32",
    "bfloat16": "mixed_bfloat16",
    "mixed_bfloat16": "mixed_bfloat16",
    "float16": "mixed_float16",
    "mixed_float16": "mixed_float16",
}


class LoadedModel(collections.namedtuple("LoadedModel", ["model", "config", "hparams", "export_config"])):
    """What load_model found: the tf_keras model, its ModelConfig (None for a .keras/.h5 file
    without hparams), the recorded hyper-parameters as a JSON dict ({} when none) and the export's
    deeplab_export.json (None when the source is not an export). `label_map`: see the property."""

    __slots__ = ()

    @property
    def label_map(self):
        """The recorded data.label_map.LabelMap: deeplab_export.json's "label_map", else a "label_map" recorded
        in the hyper-parameters (hparams.json); None when neither has one (an export without a label map: VOC
        for 21 classes, models.export.default_label_map)."""
        from models.export_files import label_map_from_config

        found = label_map_from_config(self.export_config)
        if found is None and isinstance(self.hparams, dict):
            found = label_map_from_config(self.hparams)
        return found


# ---------------------------------------------------------------------------------------------
# configuration and precision


def model_config(source: ConfigSource) -> ModelConfig:
    """The ModelConfig described by `source`: a ModelConfig, an HParams, or a dict as saved by any
    format: HParams.to_dict() ({"model": {...}, ...}), a flat hparams.json, a
    deeplab_export.json (v2 "model_config"; v1 "hparams" / "model_kwargs"), or a flat dict of ModelConfig fields.
    Keys that are not model fields are ignored. ValueError when `source` names no model field."""
    if isinstance(source, ModelConfig):
        return source
    if isinstance(getattr(source, "model", None), ModelConfig):  # HParams
        return source.model
    if isinstance(source, str):
        source = json.loads(source)
    d = dict(source or {})
    if isinstance(d.get("model_config"), dict):  # deeplab_export.json v2
        return ModelConfig.from_dict(d["model_config"])
    if "model_kwargs" in d or "format_version" in d:  # deeplab_export.json v1
        for candidate in (d.get("hparams"), d.get("model_kwargs")):
            try:
                return model_config(candidate)
            except ValueError:
                continue
        raise ValueError("the export config has no model hyper-parameters; pass hparams")
    flat = dict(d)
    if isinstance(d.get("model"), dict):
        flat.update(d["model"])
    fields = {k: v for k, v in flat.items() if k in ModelConfig.field_names()}
    if not fields:
        raise ValueError(f"no model field ({', '.join(ModelConfig.field_names())}) in {sorted(d)}")
    return ModelConfig(**fields)


def policy_name(precision: str) -> str:
    """The Keras dtype policy of a precision name (export or policy vocabulary; not "auto")."""
    if precision not in _POLICIES:
        raise ValueError(
            f"precision must be one of {sorted(_POLICIES)} (resolve 'auto' with models.precision "
            f"first); got {precision!r}"
        )
    return _POLICIES[precision]


def model_precision(model: keras.Model) -> str:
    """The export name of a model's compute precision: float32, bfloat16 or float16."""
    return {"bfloat16": "bfloat16", "float16": "float16"}.get(getattr(model, "compute_dtype", "float32"), "float32")


@contextlib.contextmanager
def precision_policy(name: str) -> typing.Iterator[None]:
    """Set the global Keras dtype policy inside the block (any precision name policy_name knows)."""
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(policy_name(name))
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


def build_model(
    config: ConfigSource,
    precision: typing.Optional[str] = "float32",
    *,
    weights: typing.Optional[str] = None,
    weight_decay: float = 0.0,
    freeze_bn: bool = False,
    atrous_impl: str = "auto",
) -> keras.Model:
    """A fresh DeepLab V3 of `config` (anything model_config accepts) under `precision` (None: the current
    global policy). weights: None (random init), "imagenet" or an h5 path (backbone only);
    weight_decay, freeze_bn, atrous_impl: training-time options (models.hparams.HParams.build_options());
    atrous_impl "auto" picks the dilated-convolution kernels for this device (models.precision.resolve_atrous_impl).
    """
    config = model_config(config)
    options = dict(weights=weights, weight_decay=weight_decay, freeze_bn=freeze_bn)
    if precision is None:
        model = build_deeplab_v3(config, **options)
    else:
        with precision_policy(precision):
            model = build_deeplab_v3(config, **options)
    set_atrous_impl(model, resolve_atrous_impl(atrous_impl)[0])
    return model


def with_precision(
    model: keras.Model, precision: typing.Optional[str], config: typing.Optional[ConfigSource] = None
) -> keras.Model:
    """`model` itself if it already computes in `precision`, else a rebuilt copy with its weights.

    The Keras mixed-precision policy is fixed when layers are built, so a change of precision
    rebuilds the network from `config` (required then; anything model_config accepts) and copies the
    weights. with_precision(model, "float32", config) is the float32 copy saved and exported after
    mixed-precision training.
    """
    if precision is None or model.dtype_policy.name == policy_name(precision):
        return model
    if config is None:
        raise ValueError(
            f"changing precision to {precision} rebuilds the model and needs its configuration "
            "(backbone, output_stride, ...)"
        )
    rebuilt = build_model(config, precision)
    assign_weights(rebuilt, model.weights, source="the given model")
    return rebuilt


def assign_weights(model: keras.Model, weights: typing.Sequence[typing.Any], source: str) -> None:
    """Copy `weights` (list of variables/arrays, model.weights order) into `model`, checking shapes."""
    if len(model.weights) != len(weights):
        raise ValueError(
            f"{source} has {len(weights)} weights but the rebuilt model has "
            f"{len(model.weights)}: the configuration does not describe the same architecture"
        )
    values = []
    for target, value in zip(model.weights, weights):
        value = value.numpy() if hasattr(value, "numpy") else np.asarray(value)
        if tuple(target.shape) != tuple(value.shape):
            raise ValueError(
                f"weight {target.name}: shape {tuple(value.shape)} in {source} but "
                f"{tuple(target.shape)} in the rebuilt model: the configuration does not match"
            )
        values.append(value)
    model.set_weights(values)


def randomize_weights(model: keras.Model, seed: int = 0) -> keras.Model:
    """Give an untrained model non-degenerate random weights, in place; returns the model.

    A freshly built DeepLab's logits are ~1e-11 everywhere (zero-mean BN statistics on random
    features), so every pixel is a near-tie and its label map says nothing. For `--init random`
    exports (deployment smoke tests, load tests) and serving tests, He-normal kernels and BN
    statistics near 1 give a network whose class maps vary with the image, deterministically.
    """
    rng = np.random.default_rng(seed)
    values = []
    for w in model.weights:
        kind, shape = w.name.split("/")[-1].split(":")[0], tuple(w.shape)
        if kind in ("gamma", "moving_variance"):
            v = rng.uniform(0.5, 1.5, shape)
        elif kind == "moving_mean":
            v = np.zeros(shape)
        elif kind in ("beta", "bias"):
            v = rng.normal(0.0, 0.1, shape)
        else:  # kernels: He normal; a depthwise kernel's fan-in is its window
            fan_in = int(np.prod(shape[:2] if "depthwise" in kind else shape[:-1])) or 1
            v = rng.normal(0.0, np.sqrt(2.0 / fan_in), shape)
        values.append(v.astype(w.dtype.as_numpy_dtype if hasattr(w.dtype, "as_numpy_dtype") else np.float32))
    model.set_weights(values)
    return model


# ---------------------------------------------------------------------------------------------
# saving


def write_hparams(run_dir: str, hparams: typing.Any, **recorded) -> str:
    """run_dir/hparams.json (models.hparams.HParams.to_json; `recorded`: its RECORDED_KEYS); returns the path."""
    path = os.path.join(run_dir, HPARAMS_FILENAME)
    hparams.to_json(path, **recorded)
    return path


def save_model(model: keras.Model, run_dir: str) -> str:
    """run_dir/model.keras (Keras' own format; load_model reads it back with hparams.json); returns the path."""
    path = os.path.join(run_dir, MODEL_FILENAME)
    model.save(path)
    return path


# ---------------------------------------------------------------------------------------------
# loading


def _read_json(path):
    with tf.io.gfile.GFile(path) as f:
        return json.load(f)


def _hparams_json(hparams):
    """The JSON-dict form of hyper-parameters given as an HParams, dict, JSON file path or None."""
    if hparams is None:
        return None
    if isinstance(hparams, str):
        return _read_json(hparams)
    if hasattr(hparams, "to_dict"):
        return hparams.to_dict()
    return dict(hparams)


def _find_hparams_json(path):
    """hparams JSON beside a checkpoint/.keras file (the Trainer's model_run layout), or None."""
    folder = path if tf.io.gfile.isdir(path) else os.path.dirname(path)
    for _ in range(3):
        for name in (HPARAMS_FILENAME, "hparams.JSON"):
            candidate = os.path.join(folder, name)
            if tf.io.gfile.exists(candidate):
                return candidate
        folder = os.path.dirname(folder.rstrip("/"))
    return None


def _config_or_none(hparams):
    try:
        return model_config(hparams) if hparams is not None else None
    except ValueError:
        return None


def load_model(
    path: str,
    hparams: typing.Union[None, typing.Any, typing.Mapping[str, typing.Any], str] = None,
    precision: typing.Optional[str] = None,
    atrous_impl: str = "auto",
) -> LoadedModel:
    """Rebuild a tf_keras DeepLab V3 with trained weights from what training or export left behind.

    `path` may be: an exported SavedModel directory (rebuilt from its deeplab_export.json, any format
    version) or a Trainer Model artifact holding one in Format-Serving/; a model_run directory holding
    model.keras, or a `.keras`/`.h5` file; a TF checkpoint prefix or directory (rebuilt from `hparams`:
    an HParams, a dict or a JSON file path; by default the hparams.json beside it).
    precision: None (the source's), or a precision name to rebuild in (policy_name's vocabulary).
    atrous_impl: the dilated-convolution kernels to run ("auto": this device's, models.precision.resolve_atrous_impl).

    Returns a LoadedModel(model, config, hparams, export_config); `.label_map` is the recorded label map.
    """
    from models.export_files import read_export_config

    hparams = _hparams_json(hparams)
    if tf.io.gfile.isdir(path):
        # The Trainer's layouts: a Model artifact (SavedModel in Format-Serving/) or its model_run
        # directory (model.keras + hparams.json beside the checkpoints).
        for inner in ("Format-Serving", MODEL_FILENAME):
            if tf.io.gfile.exists(os.path.join(path, inner)):
                path = os.path.join(path, inner)
                break
    if tf.io.gfile.isdir(path) and tf.io.gfile.exists(os.path.join(path, "saved_model.pb")):
        export_config = read_export_config(path)
        config = model_config(hparams) if hparams is not None else model_config(export_config)
        model = build_model(config, precision or export_config.get("precision", "float32"), atrous_impl=atrous_impl)
        assign_weights(model, tf.saved_model.load(path).model_weights, source=path)
        return LoadedModel(
            model, config, hparams if hparams is not None else export_config.get("hparams") or {}, export_config
        )
    if path.endswith((".keras", ".h5")):
        model = keras.models.load_model(path, custom_objects=custom_objects(), compile=False)
        if hparams is None:
            found = _find_hparams_json(path)
            hparams = _read_json(found) if found else None
        config = _config_or_none(hparams)
        if precision:
            model = with_precision(model, precision, config)
        set_atrous_impl(model, resolve_atrous_impl(atrous_impl)[0])
        return LoadedModel(model, config, hparams or {}, None)
    # A checkpoint: directory (latest checkpoint in it) or prefix.
    prefix = tf.train.latest_checkpoint(path) if tf.io.gfile.isdir(path) else path
    if not prefix or not tf.io.gfile.exists(prefix + ".index"):
        raise FileNotFoundError(
            f"{path} is not a SavedModel directory, a .keras/.h5 file or a TF checkpoint "
            "(prefix with a .index file, or a directory with a 'checkpoint' file)"
        )
    if hparams is None:
        found = _find_hparams_json(prefix)
        if not found:
            raise FileNotFoundError(f"no hparams.json beside checkpoint {prefix}: pass --hparams PATH")
        hparams = _read_json(found)
    config = model_config(hparams)
    model = build_model(config, precision or "float32", atrous_impl=atrous_impl)
    _restore_checkpoint(model, prefix)
    return LoadedModel(model, config, hparams, None)


def _restore_checkpoint(model, prefix):
    """Restore weights saved by `model.save_weights(prefix)` or `tf.train.Checkpoint(model=...)`."""
    names = {name for name, _ in tf.train.list_variables(prefix)}
    if any(n.startswith("model/") for n in names):
        status = tf.train.Checkpoint(model=model).read(prefix)
    else:
        status = model.load_weights(prefix)
    status.expect_partial()
    # Every model variable must have been restored: a silently random layer would ship garbage.
    status.assert_existing_objects_matched()
