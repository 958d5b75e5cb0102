"""Export a trained DeepLab V3 (tf_keras) as a TF Serving-ready SavedModel.

Signatures (tag `serve`, see docs/ARCHITECTURE.md):
  serving_default   images string [B] (encoded JPEG/PNG/GIF/BMP, any sizes)
                    -> segmentation_map int64 [B,Hmax,Wmax] (padded with 255), confidence float32
                       [B,Hmax,Wmax] (max softmax, 0 in padding), height int32 [B], width int32 [B],
                       segmentation_png string [B] (each map at its image's size as a uint8 PNG: the
                       compact output clients ask for with output_filter)
  predict_images    the reference repo's (sthalles/deeplab_v3) signature: images float32 [1,H,W,3]
                    ([B,H,W,3] once TF Serving batching merges requests), height, width int32 (scalar,
                    [1] or [B]) -> segmentation_map int64 [B,H,W]
  serving_examples  examples string [B] serialised tf.train.Example (ingestion format)
                    -> same outputs as serving_default
  logits            images float32 [B,H,W,3] RGB 0..255 -> logits float32 [B,H,W,C], no TTA
  serving_png       as serving_default, outputs segmentation_png, height, width only (REST clients)

Test-time augmentation (scales, flip, sliding windows) is baked into every signature except
`logits` through `models.inference.predict_logits`, so the served model and the evaluator share
one implementation.

`assets.extra/` holds TF Serving's warm-up file (`tf_serving_warmup_requests`, replayed at load)
and `deeplab_export.json` (hparams, TTA, precision, weight names) from which
`load_trained_model` rebuilds the Keras model to re-export it with other serving options.
"""
import dataclasses
import inspect
import json
import logging
import os

import numpy as np
import tensorflow as tf
import tf_keras as keras

from data import tfrecord
from data.voc import IGNORE_LABEL, NUM_CLASSES
from models.inference import TTAConfig, canvas_side, predict_logits, shared_canvas
from models.input_pipeline import decode_rgb

log = logging.getLogger(__name__)

CONFIG_FILENAME = "deeplab_export.json"
WARMUP_FILENAME = "tf_serving_warmup_requests"
ASSETS_EXTRA = "assets.extra"
PRECISIONS = ("float32", "bfloat16")  # plus "auto": bfloat16 where native (models/precision.py), else float32
SIGNATURES = ("serving_default", "predict_images", "serving_examples", "logits", "serving_png")
FORMAT_VERSION = 1


# ---------------------------------------------------------------------------------------------
# hparams / config helpers (models/hparams.py owns the dataclass; accept it, a dict, or None)

def _hparams_dict(hparams):
    if hparams is None:
        return {}
    if isinstance(hparams, dict):
        return dict(hparams)
    for name in ("to_json_dict", "to_dict"):
        if hasattr(hparams, name):
            return dict(getattr(hparams, name)())
    if hasattr(hparams, "to_json"):
        return json.loads(hparams.to_json())
    if dataclasses.is_dataclass(hparams):
        return dataclasses.asdict(hparams)
    raise TypeError(f"hparams must be a dict, a dataclass or have to_json(); got {type(hparams).__name__}")


def model_kwargs(hparams):
    """Keyword arguments of `models.deeplab.build_deeplab_v3` found in an hparams dict/object.

    Looks at the top level and at a nested 'model' section, so it works whatever grouping
    models/hparams.py chooses.
    """
    from models.deeplab import build_deeplab_v3
    params = inspect.signature(build_deeplab_v3).parameters
    d = _hparams_dict(hparams)
    flat = dict(d)
    if isinstance(d.get("model"), dict):
        flat.update(d["model"])
    kwargs = {k: v for k, v in flat.items() if k in params and k != "weights"}
    for k in ("multi_grid", "aspp_rates"):
        if isinstance(kwargs.get(k), list):
            kwargs[k] = tuple(kwargs[k])
    return kwargs


def _precision_of(model):
    return "bfloat16" if getattr(model, "compute_dtype", "float32") == "bfloat16" else "float32"


def resolve_precision(precision):
    """(float32 | bfloat16, reason) for an export precision float32, bfloat16 or auto."""
    from models.precision import resolve_export_precision
    return resolve_export_precision(precision)


def build_model(kwargs, precision="float32"):
    """A fresh DeepLab V3 (`build_deeplab_v3(**kwargs)`, random init) under the given precision policy."""
    from models.deeplab import build_deeplab_v3
    if precision == "auto":
        precision, _ = resolve_precision(precision)
    policy = {"float32": "float32", "bfloat16": "mixed_bfloat16"}[precision]
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(policy)
    try:
        return build_deeplab_v3(weights=None, **kwargs)
    finally:
        keras.mixed_precision.set_global_policy(previous)


def with_precision(model, precision, hparams=None):
    """`model` itself if it already computes in `precision`, else a rebuilt copy with its weights.

    The Keras mixed-precision policy is fixed when layers are built, so a change of precision
    rebuilds the network from its build arguments (`hparams`, required then) and copies the weights.
    """
    if precision == "auto":
        precision, _ = resolve_precision(precision)
    if precision is None or _precision_of(model) == precision:
        return model
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    kwargs = model_kwargs(hparams)
    if not kwargs:
        raise ValueError(f"changing precision to {precision} rebuilds the model and needs its hparams "
                         "(backbone, output_stride, ...); pass hparams=")
    rebuilt = build_model(kwargs, precision)
    _assign_weights(rebuilt, model.weights, source="the given model")
    return rebuilt


def randomize_weights(model, seed=0):
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


def _assign_weights(model, weights, source):
    """Copy `weights` (list of variables/arrays, model.weights order) into `model`, checking shapes."""
    if len(model.weights) != len(weights):
        raise ValueError(f"{source} has {len(weights)} weights but the rebuilt model has "
                         f"{len(model.weights)}: the hparams do not describe the same architecture")
    values = []
    for target, value in zip(model.weights, weights):
        value = value.numpy() if hasattr(value, "numpy") else np.asarray(value)
        if tuple(target.shape) != tuple(value.shape):
            raise ValueError(f"weight {target.name}: shape {tuple(value.shape)} in {source} but "
                             f"{tuple(target.shape)} in the rebuilt model: the hparams do not match")
        values.append(value)
    model.set_weights(values)


# ---------------------------------------------------------------------------------------------
# the serving module

class _ServingModule(tf.Module):
    """Holds the model's variables (not the Keras model: that would make tf.saved_model.save trace
    every layer for Keras' own SavedModel format) and the signature functions."""

    def __init__(self, model, tta, num_classes):
        super().__init__(name="deeplab_serving")
        self._model = model  # plain Python attribute is tracked; see _trackable_children below
        self.model_weights = list(model.weights)
        self._tta = tta
        self._num_classes = int(num_classes)
        # Traced once; every signature (and every TTA scale/flip) calls this one function instead of
        # inlining its own copy of the network: export is several times faster and the graph small.
        self._logits_fn = tf.function(self._logits, autograph=False, input_signature=[
            tf.TensorSpec([None, None, None, 3], tf.float32)])

    def _trackable_children(self, save_type="checkpoint", **kwargs):
        children = super()._trackable_children(save_type, **kwargs)
        children.pop("_model", None)
        return children

    # -- building blocks (traced into each signature) --

    def _logits(self, images):
        return tf.cast(self._model(images, training=False), tf.float32)

    def _segment(self, images):
        """float32 [B,H,W,3] -> (labels int64 [B,H,W], confidence float32 [B,H,W]) with TTA."""
        logits = predict_logits(self._logits_fn, images, **self._tta.kwargs())
        probs = tf.nn.softmax(logits, axis=-1)
        return tf.argmax(logits, axis=-1, output_type=tf.int64), tf.reduce_max(probs, axis=-1)

    def _canvas(self, heights, widths):
        """Per-image size of the canvas the model sees, or None when that is the image's own size.

        With TTA `whole` at scale 1 without flip and a `pad_multiple`, the one-image path pads each
        image (mean RGB, bottom/right) to the next k * pad_multiple + pad_offset and crops the logits
        back: images with the same padded size can share one model call with bit-identical results.
        """
        tta = self._tta
        # Whether images can share a padded canvas is models.inference.shared_canvas's rule (asked with a
        # 1x1 image, since it depends only on the TTA); the side is the same canvas_side, on tensors.
        if shared_canvas(1, 1, **tta.kwargs()) is None:
            return None
        return (canvas_side(heights, tta.pad_multiple, tta.pad_offset),
                canvas_side(widths, tta.pad_multiple, tta.pad_offset))

    def _segment_encoded(self, encoded):
        """string [B] -> the serving_default outputs; images may have different sizes.

        Images are grouped by the size the model sees (their own size, or the padded size of
        `_canvas`) and each group goes through the model (with TTA) as one batch: one call for the
        usual batch of same-size images (a camera, or requests merged by server-side batching).
        Padding images of different sizes into one canvas is NOT done: the image-pooling branch of
        ASPP averages over the whole canvas and the stride-2 convolutions' sampling grid moves with
        the size, so the maps would differ from the one-image answers (measured: 4-24% of pixels
        on a random MobileNetV2 DeepLab). Every group gives exactly the one-image answer.
        """
        n = tf.shape(encoded)[0]
        decoded = tf.TensorArray(tf.float32, size=n, infer_shape=False, element_shape=[None, None, 3])
        heights = tf.TensorArray(tf.int32, size=n)
        widths = tf.TensorArray(tf.int32, size=n)

        def decode(i, decoded, heights, widths):
            image = decode_rgb(encoded[i])
            shape = tf.shape(image)
            return (i + 1, decoded.write(i, tf.cast(image, tf.float32)),
                    heights.write(i, shape[0]), widths.write(i, shape[1]))

        _, decoded, heights, widths = tf.while_loop(
            lambda i, *_: i < n, decode, (tf.constant(0), decoded, heights, widths))
        heights, widths = heights.stack(), widths.stack()
        canvas = self._canvas(heights, widths)
        if canvas is not None:
            from models.inference import MEAN_RGB, _pad_to
            ch, cw = canvas

            def pad(i, padded):  # the very op of the one-image path (models.inference._whole)
                return i + 1, padded.write(i, _pad_to(decoded.read(i)[tf.newaxis], ch[i], cw[i], MEAN_RGB)[0])

            _, decoded = tf.while_loop(lambda i, *_: i < n, pad, (tf.constant(0), tf.TensorArray(
                tf.float32, size=n, infer_shape=False, element_shape=[None, None, 3])))
        else:
            ch, cw = heights, widths
        hmax = tf.reduce_max(tf.concat([ch, [0]], 0))
        wmax = tf.reduce_max(tf.concat([cw, [0]], 0))
        keys, group_of = tf.unique(tf.cast(ch, tf.int64) * (1 << 32) + tf.cast(cw, tf.int64))
        num_groups = tf.size(keys)

        def run_group(g, labels, conf, order):
            members = tf.cast(tf.reshape(tf.where(tf.equal(group_of, g)), [-1]), tf.int32)
            images = decoded.gather(members)  # all of one size: [G, h, w, 3]
            images = tf.reshape(images, [tf.size(members), ch[members[0]], cw[members[0]], 3])
            if canvas is not None:
                logits = self._logits_fn(images)
                lab = tf.argmax(logits, axis=-1, output_type=tf.int64)
                cf = tf.reduce_max(tf.nn.softmax(logits, axis=-1), axis=-1)
            else:
                lab, cf = self._segment(images)
            shape = tf.shape(lab)
            pad = [[0, 0], [0, hmax - shape[1]], [0, wmax - shape[2]]]
            return (g + 1, labels.write(g, tf.pad(lab, pad, constant_values=IGNORE_LABEL)),
                    conf.write(g, tf.pad(cf, pad)), order.write(g, members))

        def segment_all():
            parts = [tf.TensorArray(dtype, size=num_groups, infer_shape=False, element_shape=shape)
                     for dtype, shape in ((tf.int64, [None, None, None]), (tf.float32, [None, None, None]),
                                          (tf.int32, [None]))]
            _, labels, conf, order = tf.while_loop(lambda g, *_: g < num_groups, run_group,
                                                   (tf.constant(0), *parts))
            back = tf.math.invert_permutation(order.concat())  # group order -> request order
            return tf.gather(labels.concat(), back), tf.gather(conf.concat(), back)

        def empty():  # a batch of zero images is a valid (if useless) request
            return tf.zeros([0, 0, 0], tf.int64), tf.zeros([0, 0, 0], tf.float32)

        labels, confidence = tf.cond(n > 0, segment_all, empty)
        labels = tf.reshape(labels, [n, hmax, wmax])
        confidence = tf.reshape(confidence, [n, hmax, wmax])
        # Outside each image (padding of the batch, or of the pad_multiple canvas): 255 / 0.
        inside = tf.logical_and(
            tf.range(hmax)[tf.newaxis, :, tf.newaxis] < heights[:, tf.newaxis, tf.newaxis],
            tf.range(wmax)[tf.newaxis, tf.newaxis, :] < widths[:, tf.newaxis, tf.newaxis])
        labels = tf.where(inside, labels, tf.constant(IGNORE_LABEL, tf.int64))
        confidence = tf.where(inside, confidence, 0.0)
        hm, wm = tf.reduce_max(tf.concat([heights, [0]], 0)), tf.reduce_max(tf.concat([widths, [0]], 0))
        labels, confidence = labels[:, :hm, :wm], confidence[:, :hm, :wm]
        return {"segmentation_map": labels, "confidence": confidence, "height": heights, "width": widths,
                "segmentation_png": self._encode_png(labels, heights, widths)}

    def _encode_png(self, labels, heights, widths):
        """int64 [B,H,W] label maps -> string [B]: each image's map cropped to its size as a
        single-channel PNG (uint8 class ids; uint16 above 255 classes). ~100x smaller than the
        int64 map on the wire, decodable by any PNG reader (PIL, tf.io.decode_png)."""
        dtype = tf.uint8 if self._num_classes <= 255 else tf.uint16

        def one(i):
            return tf.io.encode_png(tf.cast(labels[i, :heights[i], :widths[i], tf.newaxis], dtype))

        return tf.map_fn(one, tf.range(tf.shape(labels)[0]), fn_output_signature=tf.TensorSpec([], tf.string))

    # -- signatures --

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="images")])
    def serving_default(self, images):
        return self._segment_encoded(images)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
    def serving_examples(self, examples):
        features = tf.io.parse_example(
            examples, {tfrecord.IMAGE_ENCODED: tf.io.FixedLenFeature([], tf.string)})
        return self._segment_encoded(features[tfrecord.IMAGE_ENCODED])

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="images")])
    def serving_png(self, images):
        # serving_default with only its compact outputs: for REST clients (TF Serving's REST API has
        # no output_filter), ~100x fewer bytes than the int64 map and float32 confidence as JSON.
        out = self._segment_encoded(images)
        return {k: out[k] for k in ("segmentation_png", "height", "width")}

    @tf.function(input_signature=[
        # Batch dimension open: TF Serving's batching (--enable_batching) concatenates concurrent
        # requests along dimension 0 (the reference client sends [1,H,W,3]; merged: [B,H,W,3]).
        tf.TensorSpec([None, None, None, 3], tf.float32, name="images"),
        # Unknown rank: the reference client sends make_tensor_proto(height, shape=[1]) -- merged by
        # batching into [B]; scalars work too (without batching: batching needs a dimension 0).
        tf.TensorSpec(None, tf.int32, name="height"),
        tf.TensorSpec(None, tf.int32, name="width"),
    ])
    def predict_images(self, images, height, width):
        # The reference graph reshaped the pixels to (1, height, width, 3): a height/width that
        # disagrees with the pixels is an INVALID_ARGUMENT, not a silently wrong map.
        shape = tf.shape(images)
        height = tf.reshape(height, [-1])
        width = tf.reshape(width, [-1])
        check = tf.debugging.assert_equal(
            tf.logical_and(tf.reduce_all(tf.equal(height, shape[1])), tf.reduce_all(tf.equal(width, shape[2]))),
            True, message="predict_images: the height and width inputs must equal the size of the [1,H,W,3] "
                          "image (one value, or one per image of a merged batch)")
        sizes_ok = tf.debugging.assert_equal(
            tf.logical_and(tf.reduce_any(tf.equal(tf.size(height), [1, shape[0]])),
                           tf.reduce_any(tf.equal(tf.size(width), [1, shape[0]]))),
            True, message="predict_images: height and width need one value, or one per image")
        with tf.control_dependencies([check, sizes_ok]):
            images = tf.identity(images)
        labels, _ = self._segment(images)
        return {"segmentation_map": labels}

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32, name="images")])
    def logits(self, images):
        return {"logits": self._logits_fn(images)}


# ---------------------------------------------------------------------------------------------
# warm-up requests (TF Serving replays assets.extra/tf_serving_warmup_requests at load)

def _warmup_images(sizes, seed=0):
    from data.synthetic import render_sample
    rng = np.random.default_rng(seed)
    return [render_sample(rng, int(h), int(w))[0] for h, w in sizes]


def _encode_png(image):
    return tf.io.encode_png(image).numpy()


def warmup_requests(sizes=((128, 128),), model_name="deeplab", batch_size=1):
    """PredictionLog protos for TF Serving's warm-up file: serving_default and predict_images at
    each size, so the first real request does not pay for kernel/graph initialisation."""
    from tensorflow_serving.apis import predict_pb2, prediction_log_pb2
    logs = []
    for image in _warmup_images(sizes):
        h, w = image.shape[:2]
        req = predict_pb2.PredictRequest()
        req.model_spec.name = model_name
        req.model_spec.signature_name = "serving_default"
        req.inputs["images"].CopyFrom(tf.make_tensor_proto([_encode_png(image)] * batch_size, dtype=tf.string))
        logs.append(prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=req)))

        req = predict_pb2.PredictRequest()
        req.model_spec.name = model_name
        req.model_spec.signature_name = "predict_images"
        req.inputs["images"].CopyFrom(tf.make_tensor_proto(image[np.newaxis].astype(np.float32)))
        req.inputs["height"].CopyFrom(tf.make_tensor_proto(h, dtype=tf.int32, shape=[1]))
        req.inputs["width"].CopyFrom(tf.make_tensor_proto(w, dtype=tf.int32, shape=[1]))
        logs.append(prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=req)))
    return logs


def write_warmup_file(export_dir, logs):
    path = os.path.join(export_dir, ASSETS_EXTRA, WARMUP_FILENAME)
    tf.io.gfile.makedirs(os.path.dirname(path))
    with tf.io.TFRecordWriter(path) as writer:
        for entry in logs:
            writer.write(entry.SerializeToString())
    return path


def read_warmup_file(export_dir):
    """The PredictionLog protos of a SavedModel's warm-up file ([] when it has none)."""
    from tensorflow_serving.apis import prediction_log_pb2
    path = os.path.join(export_dir, ASSETS_EXTRA, WARMUP_FILENAME)
    if not tf.io.gfile.exists(path):
        return []
    return [prediction_log_pb2.PredictionLog.FromString(r.numpy()) for r in tf.data.TFRecordDataset(path)]


# ---------------------------------------------------------------------------------------------
# export

def _default_warmup_sizes(hparams):
    d = _hparams_dict(hparams)
    for section in (d, d.get("data") or {}, d.get("train") or {}, d.get("model") or {}):
        if isinstance(section, dict) and section.get("crop_size"):
            crop = section["crop_size"]
            crop = (crop, crop) if isinstance(crop, (int, float)) else tuple(crop)
            return ((int(crop[0]), int(crop[1])),)
    return ((128, 128),)


def export_serving_model(model, export_dir, *, hparams=None, tta=None, precision=None, num_classes=None,
                         warmup_sizes=None, model_name="deeplab", extra_config=None):
    """Write a TF Serving-ready SavedModel of `model` to `export_dir` (created; must not hold a model).

    Args:
      model: tf_keras.Model from `models.deeplab.build_deeplab_v3` (float32 RGB 0..255 in, logits out).
      export_dir: local or gs:// directory; becomes the SavedModel root (the Trainer passes
        `fn_args.serving_model_dir`; TF Serving layouts put it under `<base>/<model>/<version>`).
      hparams: models.hparams dataclass or dict; stored in assets.extra so the model can be rebuilt
        (`load_trained_model`) and re-exported. Needed to change `precision`.
      tta: `models.inference.TTAConfig` or its JSON dict; baked into serving_default,
        serving_examples and predict_images (not into `logits`). Default: whole image, scale 1.
      precision: 'float32' or 'bfloat16' compute (mixed_bfloat16: bf16 math, float32 variables and
        outputs), or 'auto' (bfloat16 only where native: models/precision.py). Default: the model's own.
        deeplab_export.json records it and the reason (`precision_reason`).
      num_classes: default: the model's output channels.
      warmup_sizes: (height, width) pairs for the warm-up requests; default the training crop
        found in hparams (else 128x128). () writes no warm-up file.
      model_name: model name recorded in the warm-up requests (TF Serving ignores it at replay).
      extra_config: JSON-serialisable dict added to assets.extra/deeplab_export.json.

    Returns:
      export_dir.
    """
    tta = TTAConfig.coerce(tta)
    if precision is None:
        precision, precision_reason = _precision_of(model), "the source model's precision"
    else:
        precision, precision_reason = resolve_precision(precision)
    model = with_precision(model, precision, hparams)
    if num_classes is None:
        num_classes = int(model.output_shape[-1]) if model.output_shape[-1] else NUM_CLASSES
    if tf.io.gfile.exists(os.path.join(export_dir, "saved_model.pb")):
        raise FileExistsError(f"{export_dir} already holds a SavedModel; export to a new directory "
                              "(TF Serving versions are immutable)")
    module = _ServingModule(model, tta, num_classes)
    signatures = {name: getattr(module, name).get_concrete_function() for name in SIGNATURES}
    log.info("Exporting SavedModel to %s (TTA: %s, precision %s: %s)", export_dir, tta.describe(), precision,
             precision_reason)
    tf.saved_model.save(module, export_dir, signatures=signatures)

    config = {
        "format_version": FORMAT_VERSION,
        "hparams": _hparams_dict(hparams),
        "model_kwargs": _safe_model_kwargs(hparams),
        "tta": tta.to_json_dict(),
        "precision": precision,
        "precision_reason": precision_reason,
        "num_classes": num_classes,
        "signatures": list(SIGNATURES),
        "weight_names": [w.name for w in model.weights],
        "weight_shapes": [list(w.shape) for w in model.weights],
    }
    config.update(extra_config or {})
    path = os.path.join(export_dir, ASSETS_EXTRA, CONFIG_FILENAME)
    tf.io.gfile.makedirs(os.path.dirname(path))
    with tf.io.gfile.GFile(path, "w") as f:
        json.dump(config, f, indent=2, sort_keys=True)

    sizes = _default_warmup_sizes(hparams) if warmup_sizes is None else tuple(warmup_sizes)
    if sizes:
        write_warmup_file(export_dir, warmup_requests(sizes, model_name=model_name))
    return export_dir


def _safe_model_kwargs(hparams):
    try:
        return _jsonable(model_kwargs(hparams))
    except ImportError:  # models.deeplab not importable: the hparams dict alone is still recorded
        return {}


def _jsonable(d):
    return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


def read_export_config(export_dir):
    """assets.extra/deeplab_export.json of an exported SavedModel as a dict."""
    path = os.path.join(export_dir, ASSETS_EXTRA, CONFIG_FILENAME)
    if not tf.io.gfile.exists(path):
        raise FileNotFoundError(f"{path} not found: {export_dir} was not written by models.export "
                                "(re-export needs the hparams; pass a .keras file or checkpoint + --hparams)")
    with tf.io.gfile.GFile(path) as f:
        return json.load(f)


def read_signature_defs(export_dir, tag="serve"):
    """{name: SignatureDef proto} of the MetaGraph tagged `tag` (what TF Serving and
    `saved_model_cli show --all` read)."""
    from tensorflow.core.protobuf import saved_model_pb2
    saved_model = saved_model_pb2.SavedModel()
    with tf.io.gfile.GFile(os.path.join(export_dir, "saved_model.pb"), "rb") as f:
        saved_model.ParseFromString(f.read())
    for meta_graph in saved_model.meta_graphs:
        if tag in meta_graph.meta_info_def.tags:
            return dict(meta_graph.signature_def)
    raise ValueError(f"{export_dir}: SavedModel has no MetaGraph tagged {tag!r}")


def describe_signatures(export_dir):
    """One line per signature: 'name: input dtype [shape], ... -> output dtype [shape], ...'."""
    def tensors(infos):
        parts = []
        for alias in sorted(infos):
            info = infos[alias]
            shape = ("<unknown rank>" if info.tensor_shape.unknown_rank else
                     "[" + ",".join("?" if d.size == -1 else str(d.size) for d in info.tensor_shape.dim) + "]")
            parts.append(f"{alias} {tf.dtypes.as_dtype(info.dtype).name} {shape}")
        return ", ".join(parts)
    return [f"{name}: {tensors(sig.inputs)} -> {tensors(sig.outputs)}"
            for name, sig in sorted(read_signature_defs(export_dir).items()) if not name.startswith("__")]


# ---------------------------------------------------------------------------------------------
# loading a trained model back (for re-export)

def _find_hparams_json(path):
    """hparams JSON beside a checkpoint/.keras file (the Trainer's model_run layout), or None."""
    folder = path if tf.io.gfile.isdir(path) else os.path.dirname(path)
    for _ in range(3):
        for name in ("hparams.json", "hparams.JSON"):
            candidate = os.path.join(folder, name)
            if tf.io.gfile.exists(candidate):
                return candidate
        folder = os.path.dirname(folder.rstrip("/"))
    return None


def load_trained_model(path, hparams=None, precision=None):
    """Rebuild a tf_keras DeepLab V3 with trained weights from what training/export left behind.

    `path` may be: an exported SavedModel directory (rebuilt from its assets.extra config) or a
    Trainer Model artifact holding one in Format-Serving/, a `.keras`/`.h5` file or a directory
    holding `model.keras` (the Trainer's model_run), or a TF checkpoint prefix/directory (rebuilt
    from `hparams`, a dict/object or a JSON file path, by default the `hparams.json` beside it).

    Returns (model, hparams_dict, export_config_or_None).
    """
    if isinstance(hparams, str):
        with tf.io.gfile.GFile(hparams) as f:
            hparams = json.load(f)
    if tf.io.gfile.isdir(path):
        # The Trainer's layouts: a Model artifact (SavedModel in Format-Serving/) or its model_run
        # directory (model.keras + hparams.json beside the checkpoints).
        for inner in ("Format-Serving", "model.keras"):
            if tf.io.gfile.exists(os.path.join(path, inner)):
                path = os.path.join(path, inner)
                break
    if tf.io.gfile.isdir(path) and tf.io.gfile.exists(os.path.join(path, "saved_model.pb")):
        config = read_export_config(path)
        hp = hparams if hparams is not None else config["hparams"]
        kwargs = model_kwargs(hp) or config.get("model_kwargs") or {}
        if not kwargs:
            raise ValueError(f"{path}: its export config has no model hyper-parameters; pass hparams")
        model = build_model({k: tuple(v) if isinstance(v, list) else v for k, v in kwargs.items()},
                         precision or config.get("precision", "float32"))
        loaded = tf.saved_model.load(path)
        _assign_weights(model, loaded.model_weights, source=path)
        return model, _hparams_dict(hp), config
    if path.endswith((".keras", ".h5")):
        from models.deeplab import custom_objects
        model = keras.models.load_model(path, custom_objects=custom_objects(), compile=False)
        hp = hparams
        if hp is None:
            found = _find_hparams_json(path)
            if found:
                with tf.io.gfile.GFile(found) as f:
                    hp = json.load(f)
        if precision:
            model = with_precision(model, precision, hp)
        return model, _hparams_dict(hp), None
    # A checkpoint: directory (latest checkpoint in it) or prefix.
    prefix = tf.train.latest_checkpoint(path) if tf.io.gfile.isdir(path) else path
    if not prefix or not (tf.io.gfile.exists(prefix + ".index")):
        raise FileNotFoundError(f"{path} is not a SavedModel directory, a .keras/.h5 file or a TF checkpoint "
                                "(prefix with a .index file, or a directory with a 'checkpoint' file)")
    if hparams is None:
        found = _find_hparams_json(prefix)
        if not found:
            raise FileNotFoundError(f"no hparams.json beside checkpoint {prefix}: pass --hparams PATH")
        with tf.io.gfile.GFile(found) as f:
            hparams = json.load(f)
    model = build_model(model_kwargs(hparams), precision or "float32")
    _restore_checkpoint(model, prefix)
    return model, _hparams_dict(hparams), None


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
