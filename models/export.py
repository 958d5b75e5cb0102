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
  serving_examples_png  as serving_examples, outputs segmentation_png string [B,1], height, width only:
                    what TFX's BulkInferrer runs (a PredictionLog then carries a few-KB PNG per image,
                    not the int64 map and float32 confidence of several MB)
  label_map         index int32 [B] (values ignored: one row per element, so TF Serving's batching can
                    merge and split it along dimension 0; clients send [0]) -> class_names string [B,N],
                    class_colors int32 [B,N,3] (display RGB of ids 0..N-1), ignore_label int32 [B]:
                    the export's label map (data.label_map.LabelMap), constants in the graph

Test-time augmentation (scales, flip, sliding windows) is baked into every signature except
`logits` through `models.inference.predict_logits`, so the served model and the evaluator share
one implementation.

`assets.extra/` holds TF Serving's warm-up file (`tf_serving_warmup_requests`, replayed at load) and
`deeplab_export.json`, both written and read by models/export_files.py: the network's
`model_config` (models.config.ModelConfig.to_dict()), the training hparams, TTA, precision, weight
names and `label_map` (data.label_map.LabelMap.to_json_dict(); absent: VOC),
from which models.model_io.load_model rebuilds the Keras model to re-export it with other serving options
(FORMAT_VERSION; docs/ARCHITECTURE.md "Compatibility" lists what older files still load).
"""

import dataclasses
import json
import logging
import os

import tensorflow as tf

from data import tfrecord
from data.label_map import LabelMap
from data.voc import IGNORE_LABEL, NUM_CLASSES
from models.export_files import ASSETS_EXTRA, CONFIG_FILENAME, warmup_requests, write_warmup_file
from models.inference import MEAN_RGB, TTAConfig, _pad_to, canvas_side, predict_logits, shared_canvas
from models.input_pipeline import decode_rgb
from models.layers import atrous_impl_of, set_atrous_impl
from models.model_io import model_config, model_precision, with_precision
from models.precision import resolve_atrous_impl, resolve_export_precision

log = logging.getLogger(__name__)

SIGNATURES = (
    "serving_default",
    "predict_images",
    "serving_examples",
    "logits",
    "serving_png",
    "label_map",
    "serving_examples_png",
)
COMPACT_OUTPUTS = ("segmentation_png", "height", "width")
BULK_INFER_SIGNATURE = "serving_examples_png"  # what the pipeline's BulkInferrer runs
LABEL_MAP_SIGNATURE = "label_map"
FORMAT_VERSION = 2  # 2: "model_config" (ModelConfig.to_dict()); 1: "model_kwargs" + model fields in "hparams"


def _hparams_dict(hparams):
    """The JSON form of hyper-parameters given as an HParams, a dict or None (recorded as given)."""
    if hparams is None:
        return {}
    if isinstance(hparams, dict):
        return dict(hparams)
    if hasattr(hparams, "to_dict"):
        return dict(hparams.to_dict())
    if dataclasses.is_dataclass(hparams):
        return dataclasses.asdict(hparams)
    raise TypeError(f"hparams must be a dict or an HParams; got {type(hparams).__name__}")


# ---------------------------------------------------------------------------------------------
# the serving module


class _ServingModule(tf.Module):
    """Holds the model's variables (not the Keras model: that would make tf.saved_model.save trace
    every layer for Keras' own SavedModel format) and the signature functions."""

    def __init__(self, model, tta, num_classes, label_map):
        super().__init__(name="deeplab_serving")
        self._model = model  # plain Python attribute is tracked; see _trackable_children below
        self.model_weights = list(model.weights)
        self._tta = tta
        self._num_classes = int(num_classes)
        self._label_map = label_map  # a frozen dataclass: traced into the label_map signature as constants
        # Traced once; every signature (and every TTA scale/flip) calls this one function instead of
        # inlining its own copy of the network: export is several times faster and the graph small.
        self._logits_fn = tf.function(
            self._logits, autograph=False, input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)]
        )

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
        return (
            canvas_side(heights, tta.pad_multiple, tta.pad_offset),
            canvas_side(widths, tta.pad_multiple, tta.pad_offset),
        )

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
            return (
                i + 1,
                decoded.write(i, tf.cast(image, tf.float32)),
                heights.write(i, shape[0]),
                widths.write(i, shape[1]),
            )

        _, decoded, heights, widths = tf.while_loop(
            lambda i, *_: i < n, decode, (tf.constant(0), decoded, heights, widths)
        )
        heights, widths = heights.stack(), widths.stack()
        canvas = self._canvas(heights, widths)
        if canvas is not None:
            ch, cw = canvas

            def pad(i, padded):  # the very op of the one-image path (models.inference._whole)
                return i + 1, padded.write(i, _pad_to(decoded.read(i)[tf.newaxis], ch[i], cw[i], MEAN_RGB)[0])

            _, decoded = tf.while_loop(
                lambda i, *_: i < n,
                pad,
                (tf.constant(0), tf.TensorArray(tf.float32, size=n, infer_shape=False, element_shape=[None, None, 3])),
            )
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
            return (
                g + 1,
                labels.write(g, tf.pad(lab, pad, constant_values=IGNORE_LABEL)),
                conf.write(g, tf.pad(cf, pad)),
                order.write(g, members),
            )

        def segment_all():
            parts = [
                tf.TensorArray(dtype, size=num_groups, infer_shape=False, element_shape=shape)
                for dtype, shape in (
                    (tf.int64, [None, None, None]),
                    (tf.float32, [None, None, None]),
                    (tf.int32, [None]),
                )
            ]
            _, labels, conf, order = tf.while_loop(lambda g, *_: g < num_groups, run_group, (tf.constant(0), *parts))
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
            tf.range(wmax)[tf.newaxis, tf.newaxis, :] < widths[:, tf.newaxis, tf.newaxis],
        )
        labels = tf.where(inside, labels, tf.constant(IGNORE_LABEL, tf.int64))
        confidence = tf.where(inside, confidence, 0.0)
        hm, wm = tf.reduce_max(tf.concat([heights, [0]], 0)), tf.reduce_max(tf.concat([widths, [0]], 0))
        labels, confidence = labels[:, :hm, :wm], confidence[:, :hm, :wm]
        return {
            "segmentation_map": labels,
            "confidence": confidence,
            "height": heights,
            "width": widths,
            "segmentation_png": self._encode_png(labels, heights, widths),
        }

    def _encode_png(self, labels, heights, widths):
        """int64 [B,H,W] label maps -> string [B]: each image's map cropped to its size as a
        single-channel PNG (uint8 class ids; uint16 above 255 classes). ~100x smaller than the
        int64 map on the wire, decodable by any PNG reader (PIL, tf.io.decode_png)."""
        dtype = tf.uint8 if self._num_classes <= 255 else tf.uint16

        def one(i):
            return tf.io.encode_png(tf.cast(labels[i, : heights[i], : widths[i], tf.newaxis], dtype))

        return tf.map_fn(one, tf.range(tf.shape(labels)[0]), fn_output_signature=tf.TensorSpec([], tf.string))

    # -- signatures --

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="images")])
    def serving_default(self, images):
        return self._segment_encoded(images)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
    def serving_examples(self, examples):
        features = tf.io.parse_example(examples, {tfrecord.IMAGE_ENCODED: tf.io.FixedLenFeature([], tf.string)})
        return self._segment_encoded(features[tfrecord.IMAGE_ENCODED])

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="images")])
    def serving_png(self, images):
        # serving_default with only its compact outputs: for REST clients (TF Serving's REST API has
        # no output_filter), ~100x fewer bytes than the int64 map and float32 confidence as JSON.
        out = self._segment_encoded(images)
        return {k: out[k] for k in COMPACT_OUTPUTS}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
    def serving_examples_png(self, examples):
        # serving_examples with only its compact outputs, for TFX's BulkInferrer: its PredictionLogs (and the
        # output Examples' prediction columns) hold every output of the signature for every image.
        out = self.serving_examples(examples)
        out = {k: out[k] for k in COMPACT_OUTPUTS}
        # [B, 1]: tfx_bsl's in-process inference slices each output per example and reads the slice's dtype, which
        # a 1-D string tensor's element (a Python bytes) lacks.
        out["segmentation_png"] = out["segmentation_png"][:, tf.newaxis]
        return out

    @tf.function(
        input_signature=[
            # Batch dimension open: TF Serving's batching (--enable_batching) concatenates concurrent
            # requests along dimension 0 (the reference client sends [1,H,W,3]; merged: [B,H,W,3]).
            tf.TensorSpec([None, None, None, 3], tf.float32, name="images"),
            # Unknown rank: the reference client sends make_tensor_proto(height, shape=[1]) -- merged by
            # batching into [B]; scalars work too (without batching: batching needs a dimension 0).
            tf.TensorSpec(None, tf.int32, name="height"),
            tf.TensorSpec(None, tf.int32, name="width"),
        ]
    )
    def predict_images(self, images, height, width):
        # The reference graph reshaped the pixels to (1, height, width, 3): a height/width that
        # disagrees with the pixels is an INVALID_ARGUMENT, not a silently wrong map.
        shape = tf.shape(images)
        height = tf.reshape(height, [-1])
        width = tf.reshape(width, [-1])
        check = tf.debugging.assert_equal(
            tf.logical_and(tf.reduce_all(tf.equal(height, shape[1])), tf.reduce_all(tf.equal(width, shape[2]))),
            True,
            message="predict_images: the height and width inputs must equal the size of the [1,H,W,3] "
            "image (one value, or one per image of a merged batch)",
        )
        sizes_ok = tf.debugging.assert_equal(
            tf.logical_and(
                tf.reduce_any(tf.equal(tf.size(height), [1, shape[0]])),
                tf.reduce_any(tf.equal(tf.size(width), [1, shape[0]])),
            ),
            True,
            message="predict_images: height and width need one value, or one per image",
        )
        with tf.control_dependencies([check, sizes_ok]):
            images = tf.identity(images)
        labels, _ = self._segment(images)
        return {"segmentation_map": labels}

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32, name="images")])
    def logits(self, images):
        return {"logits": self._logits_fn(images)}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.int32, name="index")])
    def label_map(self, index):
        # The label map as graph constants, one copy per element of `index` (its values are ignored): every
        # output has the batch dimension 0 of the input, so TF Serving's batching (batching.config) can merge
        # requests and split the answers; a client sends index=[0] and reads row 0.
        label_map = self._label_map
        batch = tf.shape(index)[0]
        names = tf.constant([name.encode("utf-8") for name in label_map.names], tf.string)
        colors = tf.constant(label_map.colors()[: label_map.num_classes].astype("int32"), tf.int32)
        return {
            "class_names": tf.tile(names[tf.newaxis], [batch, 1]),
            "class_colors": tf.tile(colors[tf.newaxis], [batch, 1, 1]),
            "ignore_label": tf.fill([batch], tf.constant(int(label_map.ignore_label), tf.int32)),
        }


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


def default_label_map(num_classes):
    """The label map of an export given none: VOC for 21 classes, else LabelMap.synthetic(num_classes)."""
    if int(num_classes) == NUM_CLASSES:
        return LabelMap.voc()
    if int(num_classes) < 2:
        return LabelMap(names=tuple(f"class_{k}" for k in range(int(num_classes))), name="unnamed")
    log.warning(
        "Exporting a %d-class model without a label map: classes are named background, class_1, ... "
        "(pass label_map= / --label-map for the real names and colours)",
        int(num_classes),
    )
    return LabelMap.synthetic(num_classes)


def export_serving_model(
    model,
    export_dir,
    *,
    hparams=None,
    config=None,
    tta=None,
    precision=None,
    warmup_sizes=None,
    model_name="deeplab",
    extra_config=None,
    label_map=None,
    atrous_impl="auto",
):
    """Write a TF Serving-ready SavedModel of `model` to `export_dir` (created; must not hold a model).

    Args:
      model: tf_keras.Model from `models.deeplab.build_deeplab_v3` (float32 RGB 0..255 in, logits out).
      export_dir: local or gs:// directory; becomes the SavedModel root (the Trainer passes
        `fn_args.serving_model_dir`; TF Serving layouts put it under `<base>/<model>/<version>`).
      hparams: models.hparams.HParams or dict; recorded in deeplab_export.json ("hparams"); the model
        configuration is taken from it when `config` is not given.
      config: models.config.ModelConfig of `model` (or anything models.model_io.model_config accepts);
        recorded as "model_config" so models.model_io.load_model can rebuild and re-export the model.
        Needed to change `precision`.
      tta: `models.inference.TTAConfig` or its JSON dict; baked into serving_default,
        serving_examples and predict_images (not into `logits`). Default: whole image, scale 1.
      precision: 'float32' or 'bfloat16' compute (mixed_bfloat16: bf16 math, float32 variables and
        outputs), or 'auto' (bfloat16 only where native: models/precision.py). Default: the model's own.
        deeplab_export.json records it and the reason (`precision_reason`).
      warmup_sizes: (height, width) pairs for the warm-up requests; default the training crop
        found in hparams (else 128x128). () writes no warm-up file.
      model_name: model name recorded in the warm-up requests (TF Serving ignores it at replay).
      extra_config: JSON-serialisable dict added to assets.extra/deeplab_export.json.
      label_map: the classes' names and colours (anything data.label_map.LabelMap.resolve accepts: a LabelMap,
        its JSON dict, a built-in name or a file); served by the `label_map` signature and recorded as
        "label_map" in deeplab_export.json. Default: VOC for 21 classes, else LabelMap.synthetic(N). Its number
        of classes N must equal the model's output channels.
      atrous_impl: the kernels the exported graph runs its dilated convolutions with ("auto": this device's,
        models.precision.resolve_atrous_impl; "taps" / "stock"; None: the model's own); recorded as
        "atrous_impl" / "atrous_impl_reason" in deeplab_export.json.

    Returns:
      export_dir.
    """
    tta = TTAConfig.coerce(tta)
    if config is None and hparams is not None:
        try:
            config = model_config(hparams)
        except ValueError:  # hyper-parameters without the network: recorded as given, no model_config
            config = None
    elif config is not None:
        config = model_config(config)
    if precision is None:  # the export has float32 and bfloat16 graphs only
        precision = "bfloat16" if model_precision(model) == "bfloat16" else "float32"
        precision_reason = "the source model's precision"
    else:
        precision, precision_reason = resolve_export_precision(precision)
    model = with_precision(model, precision, config)
    num_classes = int(model.output_shape[-1]) if model.output_shape[-1] else NUM_CLASSES
    label_map = default_label_map(num_classes) if label_map is None else LabelMap.resolve(label_map)
    if label_map.num_classes != int(num_classes):
        raise ValueError(
            f"the label map {label_map.name!r} has {label_map.num_classes} classes but the model has {num_classes} "
            "output channels (num_classes); export with the label map the model was trained with"
        )
    if tf.io.gfile.exists(os.path.join(export_dir, "saved_model.pb")):
        raise FileExistsError(
            f"{export_dir} already holds a SavedModel; export to a new directory (TF Serving versions are immutable)"
        )
    previous_impl = atrous_impl_of(model)
    if atrous_impl is None:
        atrous_impl, atrous_impl_reason = previous_impl, "the source model's"
    else:
        atrous_impl, atrous_impl_reason = resolve_atrous_impl(atrous_impl)
        set_atrous_impl(model, atrous_impl)  # read when the signatures trace the model, restored below
    log.info(
        "Exporting SavedModel to %s (TTA: %s, precision %s: %s; atrous convolutions %s: %s)",
        export_dir,
        tta.describe(),
        precision,
        precision_reason,
        atrous_impl,
        atrous_impl_reason,
    )
    try:
        module = _ServingModule(model, tta, num_classes, label_map)
        signatures = {name: getattr(module, name).get_concrete_function() for name in SIGNATURES}
        tf.saved_model.save(module, export_dir, signatures=signatures)
    finally:
        if previous_impl in ("taps", "stock"):
            set_atrous_impl(model, previous_impl)

    config = {
        "format_version": FORMAT_VERSION,
        "hparams": _hparams_dict(hparams),
        "model_config": config.to_dict() if config is not None else None,
        "tta": tta.to_json_dict(),
        "precision": precision,
        "precision_reason": precision_reason,
        "atrous_impl": atrous_impl,
        "atrous_impl_reason": atrous_impl_reason,
        "num_classes": num_classes,
        "label_map": label_map.to_json_dict(),
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
