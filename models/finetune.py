"""Fine-tuning: start training from a trained DeepLab V3 (HParams.init_from, the TFX Trainer's base_model).

  warm_start(model, source)            copy a trained model's weights into a freshly built one, layer by layer
  init_from_base_model(hparams, fn_args)   hparams with init_from = the Trainer's base_model (unless already set)

`source` is anything models.model_io.load_model reads: an export dir, a Trainer Model artifact (or its
Format-Serving/), a model_run dir, a .keras/.h5 file or a checkpoint. Layers are matched by name: the layers of the
backbone (its own layer names, which follow tf_keras.applications), the ASPP blocks (the 1x1 branch, the 3x3
branches by position, so a model trained at output_stride 16 starts one at 8 whose rates are doubled, as in the
paper; image pooling; the projection), the DeepLabV3+ decoder and the logits. A V3 model starts a V3+ one: backbone
and ASPP are copied, the decoder and the logits (which read the decoder's features) start afresh. A layer whose
weights have the same shapes is copied (values cast to the target's variable dtypes: a float32 source fine-tunes a
mixed-precision model); one whose shapes differ keeps its fresh initialisation and is reported (the logits when the
class count differs, e.g. a VOC model fine-tuned on a 5-class dataset). The backbone must match completely (same
backbone, and alpha for MobileNetV2): a half-copied backbone would be worse than the ImageNet one, so warm_start
refuses, naming both networks and the fix.
"""

import logging

import numpy as np
import tf_keras as keras

log = logging.getLogger(__name__)

LOGITS_LAYER = "logits"  # models.deeplab.build_deeplab_v3's final 1x1 convolution
ASPP_LAYER = "aspp"
DECODER_LAYER = "decoder"  # the DeepLabV3+ decoder (models/decoder.py)
BACKBONE_PREFIX = "backbone/"


class IncompatibleModelError(ValueError):
    """The source model's network cannot initialise the one being trained (a different backbone)."""


def _weight_kind(variable):
    """The last part of a variable's name without the ':0' (kernel, bias, gamma, moving_mean, ...)."""
    return variable.name.split("/")[-1].split(":")[0]


def weight_units(model):
    """[(key, display name, layer)]: the layers of a DeepLab V3 that hold weights, each keyed by what
    identifies it across two networks (backbone layers by their own name, ASPP 3x3 branches by position)."""
    units = []
    for layer in model.layers:
        if not layer.weights:
            continue
        if isinstance(layer, keras.Model):  # the backbone (named after backbone and alpha)
            units += [
                (BACKBONE_PREFIX + sub.name, f"{layer.name}/{sub.name}", sub) for sub in layer.layers if sub.weights
            ]
        elif layer.name == ASPP_LAYER and hasattr(layer, "branches"):
            rate = 0
            for block in [*layer.branches, layer.project]:
                if block.name.startswith("conv_3x3"):
                    key = f"{ASPP_LAYER}/conv_3x3_{rate}"
                    rate += 1
                else:
                    key = f"{ASPP_LAYER}/{block.name}"
                units.append((key, f"{ASPP_LAYER}/{block.name}", block))
        else:
            units.append((layer.name, layer.name, layer))
    return units


def _describe(config, model):
    if config is None:
        backbones = [layer.name for layer in model.layers if isinstance(layer, keras.Model)]
        return f"a network with backbone {backbones[0] if backbones else '?'} and {model.output_shape[-1]} classes"
    text = f"backbone={config.backbone}"
    if config.backbone == "mobilenet_v2":
        text += f", alpha={config.alpha:g}"
    return f"{text}, aspp_filters={config.aspp_filters}, num_classes={config.num_classes}"


def _mismatch(target_layer, source_layer):
    """None when source_layer's weights fit target_layer's, else why not (text)."""
    if len(target_layer.weights) != len(source_layer.weights):
        return f"{len(source_layer.weights)} weights in the source, {len(target_layer.weights)} here"
    for t, s in zip(target_layer.weights, source_layer.weights):
        if _weight_kind(t) != _weight_kind(s):
            return f"weight {_weight_kind(s)} in the source where this network has {_weight_kind(t)}"
        if tuple(t.shape) != tuple(s.shape):
            return f"{_weight_kind(t)} {tuple(s.shape)} in the source, {tuple(t.shape)} here"
    return None


def _other_classes(loaded, label_map):
    """Why the source's logits do not fit the target's classes (their names differ), or None."""
    source_map = loaded.label_map
    if label_map is None or source_map is None:
        return None
    from data.label_map import LabelMap

    target = LabelMap.resolve(label_map)
    if tuple(source_map.names) == tuple(target.names):
        return None
    return f"the source was trained for other classes ({', '.join(source_map.names[:4])}, ...)"


def warm_start(model, source, log=log, config=None, label_map=None):
    """Copy the weights of the trained model at `source` into `model` (freshly built), layer by layer.

    model: the tf_keras DeepLab V3 to train (any precision; built under a distribution strategy or not).
    source: a path models.model_io.load_model reads, or a LoadedModel.
    log: a logging.Logger for the summary (None: silent). config: the ModelConfig of `model`, for messages.
    label_map: the classes `model` is trained for (data.label_map.LabelMap or what LabelMap.resolve takes). When the
        source's recorded classes have other names, its logits mean other classes: they start afresh even if the
        class count matches. None: the logits are copied whenever their shapes match.
    Returns {"source", "source_config", "copied": [layer names], "reinitialised": [layer names],
    "reasons": {layer: why it was not copied}, "copied_weights": count}. Raises IncompatibleModelError when the
    backbones differ (nothing useful would be copied).
    """
    from models import model_io

    if isinstance(source, model_io.LoadedModel):
        loaded, source_name = source, "the given model"
    else:
        source_name = str(source)
        loaded = model_io.load_model(source_name)
    source_units = {key: (name, layer) for key, name, layer in weight_units(loaded.model)}
    other_classes = _other_classes(loaded, label_map)
    # A V3 source's logits read the ASPP output; a V3+ network's read its decoder, which starts afresh.
    fresh_decoder = _has_layer(model, DECODER_LAYER) and not _has_layer(loaded.model, DECODER_LAYER)
    copied, reinitialised, reasons, missing_backbone = [], [], {}, []
    assignments = []
    for key, name, layer in weight_units(model):
        found = source_units.get(key)
        why = "no such layer in the source" if found is None else _mismatch(layer, found[1])
        if why is None and name == LOGITS_LAYER and other_classes:
            why = other_classes
        if why is None and name == LOGITS_LAYER and fresh_decoder:
            why = "the source has no decoder: the logits of a V3+ network read the decoder, which starts afresh"
        if why is None:
            assignments.append((layer, found[1]))
            copied.append(name)
            continue
        if key.startswith(BACKBONE_PREFIX):
            missing_backbone.append(f"{name} ({why})")
        reinitialised.append(name)
        reasons[name] = why
    if missing_backbone or not copied:
        target_text = _describe(config, model)
        source_text = _describe(loaded.config, loaded.model)
        examples = "; ".join(missing_backbone[:3])
        raise IncompatibleModelError(
            f"init_from={source_name}: its network ({source_text}) cannot initialise the one being trained "
            f"({target_text}): {len(missing_backbone)} backbone layer(s) differ, e.g. {examples}. "
            "The backbone (and alpha for mobilenet_v2) must be the source's: set them to the source's values "
            "(the other fields may differ: the logits of another num_classes and an ASPP of other filters start "
            "afresh), or drop init_from (--set init_from=null) to start from the ImageNet weights"
        )
    count = 0
    for target_layer, source_layer in assignments:
        for variable, value in zip(target_layer.weights, source_layer.weights):
            variable.assign(np.asarray(value.numpy()).astype(variable.dtype.as_numpy_dtype))
            count += 1
    report = {
        "source": source_name,
        "source_config": loaded.config.to_dict() if loaded.config is not None else None,
        "copied": copied,
        "reinitialised": reinitialised,
        "reasons": reasons,
        "copied_weights": count,
    }
    if log is not None:
        log.info(
            "Initialised from %s: %d layer(s) copied (%d weights)%s",
            source_name,
            len(copied),
            count,
            "; re-initialised: " + ", ".join(f"{n} ({reasons[n]})" for n in reinitialised) if reinitialised else "",
        )
        others = [n for n in reinitialised if n != LOGITS_LAYER]
        if others:
            log.warning(
                "init_from: layer(s) other than the logits start afresh: %s",
                "; ".join(f"{n} ({reasons[n]})" for n in others),
            )
    return report


def _has_layer(model, name):
    return any(layer.name == name for layer in model.layers)


def init_from_base_model(hparams, fn_args):
    """`hparams` with init_from set to the TFX Trainer's base_model input (fn_args.base_model: the serving model
    path of the Model artifact given as `base_model`, e.g. the latest blessed model) when hparams.init_from is
    not set; `hparams` itself otherwise (an explicit init_from wins; no base_model: train from scratch)."""
    base_model = getattr(fn_args, "base_model", None)
    if hparams.init_from or not base_model:
        return hparams
    log.info("Starting from the Trainer's base_model %s (init_from)", base_model)
    return hparams.replace(init_from=str(base_model))
