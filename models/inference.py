"""Test-time inference for DeepLab V3: whole-image, sliding-window, multi-scale and flip.

One implementation serves both the evaluator (components/miou_evaluator) and the exported
SavedModel (models/export.py), so the numbers the evaluator reports are the numbers the served
model produces. Everything is plain TensorFlow with dynamic shapes: it runs eagerly and inside a
`tf.function` with `input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)]`.

`logits_fn` is any callable mapping float32 RGB images [B, h, w, 3] (0..255) to logits
[B, h, w, C] at the same size, e.g. a `tf_keras.Model` from `models.deeplab.build_deeplab_v3` or a
loaded SavedModel's `logits` signature.
"""

import dataclasses
import math
from typing import Optional, Tuple

import tensorflow as tf

# ImageNet mean RGB (0..255): padding with it makes padded pixels ~0 after the backbone's
# normalisation, so they look like "nothing" instead of a black frame. Same value the DeepLab
# research code pads with. The one pad value of images: inference canvases here, training crops
# (models.input_pipeline) and the serving signatures (models.export).
MEAN_RGB = (123.68, 116.779, 103.939)

MODES = ("whole", "sliding")
AVERAGES = ("logits", "probs")


@dataclasses.dataclass(frozen=True)
class TTAConfig:
    """Test-time augmentation settings, serialisable to JSON (TFX exec properties, reports).

    `kwargs()` gives the keyword arguments of `predict_logits` / `predict_labels`.
    """

    scales: Tuple[float, ...] = (1.0,)
    flip: bool = False
    mode: str = "whole"
    crop_size: Optional[Tuple[int, int]] = None
    stride_fraction: float = 2.0 / 3.0
    average: str = "logits"
    pad_multiple: Optional[int] = None
    pad_offset: int = 0

    def __post_init__(self):
        object.__setattr__(self, "scales", tuple(float(s) for s in self.scales))
        if self.crop_size is not None:
            object.__setattr__(self, "crop_size", _pair(self.crop_size, "crop_size"))
        _validate(
            self.scales,
            self.mode,
            self.crop_size,
            self.stride_fraction,
            self.average,
            self.pad_multiple,
            self.pad_offset,
        )

    def kwargs(self):
        return dataclasses.asdict(self)

    def to_json_dict(self):
        d = dataclasses.asdict(self)
        d["scales"] = list(self.scales)
        d["crop_size"] = list(self.crop_size) if self.crop_size else None
        return d

    @classmethod
    def coerce(cls, value):
        """A TTAConfig from None (whole image, scale 1), a TTAConfig or its `to_json_dict()` dict.

        Raises TypeError for anything else (callers with extra cases add them on top)."""
        if value is None:
            return cls()
        if isinstance(value, cls):
            return value
        if isinstance(value, dict):
            return cls.from_json_dict(value)
        raise TypeError(f"tta must be a TTAConfig or dict, got {type(value).__name__}")

    @classmethod
    def from_json_dict(cls, d):
        """Inverse of `to_json_dict`; unknown keys are an error (a typo would silently change TTA)."""
        unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(
                f"unknown TTA setting(s) {sorted(unknown)}; known: {[f.name for f in dataclasses.fields(cls)]}"
            )
        return cls(**d)

    def describe(self):
        """Short human-readable summary, e.g. 'whole, scales 0.5/1.0/1.5, flip, average logits'."""
        parts = [
            self.mode
            if self.mode == "whole"
            else f"sliding {self.crop_size[0]}x{self.crop_size[1]} stride {self.stride_fraction:.2f}"
        ]
        parts.append("scales " + "/".join(f"{s:g}" for s in self.scales))
        if self.flip:
            parts.append("flip")
        if len(self.scales) > 1 or self.flip:
            parts.append(f"average {self.average}")
        if self.pad_multiple:
            parts.append(f"pad to {self.pad_multiple}k+{self.pad_offset}")
        return ", ".join(parts)


def _pair(value, name):
    if isinstance(value, (int, float)):
        value = (value, value)
    value = tuple(int(v) for v in value)
    if len(value) != 2 or min(value) < 1:
        raise ValueError(f"{name} must be a positive int or (height, width), got {value!r}")
    return value


def _validate(scales, mode, crop_size, stride_fraction, average, pad_multiple, pad_offset):
    if not scales or any(not s > 0 for s in scales):
        raise ValueError(f"scales must be a non-empty list of positive numbers, got {scales!r}")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if mode == "sliding" and crop_size is None:
        raise ValueError("mode='sliding' needs crop_size (the training crop, e.g. 513)")
    if not 0.0 < stride_fraction <= 1.0:
        raise ValueError(f"stride_fraction must be in (0, 1], got {stride_fraction!r}")
    if average not in AVERAGES:
        raise ValueError(f"average must be one of {AVERAGES}, got {average!r}")
    if pad_multiple is not None and (int(pad_multiple) < 1 or not 0 <= int(pad_offset) < int(pad_multiple)):
        raise ValueError(
            f"pad_multiple must be >= 1 and 0 <= pad_offset < pad_multiple, got {pad_multiple!r}, {pad_offset!r}"
        )


def _pad_to(images, height, width, pad_value):
    """Pad images [B,h,w,3] at the bottom/right to [B,height,width,3] (height >= h) with pad_value."""
    shape = tf.shape(images)
    paddings = [[0, 0], [0, height - shape[1]], [0, width - shape[2]], [0, 0]]
    value = tf.constant(pad_value, tf.float32)
    # Pad the offset-from-mean with zeros: per-channel constant padding in one op.
    return tf.pad(images - value, paddings) + value


def _whole(logits_fn, images, pad_multiple, pad_offset, pad_value):
    """Whole-image prediction, optionally padding to k*pad_multiple + pad_offset and cropping back."""
    if not pad_multiple:
        return logits_fn(images)
    shape = tf.shape(images)
    h, w = shape[1], shape[2]

    def target(n):
        # Smallest t >= n with t % pad_multiple == pad_offset.
        return n + tf.math.floormod(pad_offset - n, pad_multiple)

    logits = logits_fn(_pad_to(images, target(h), target(w), pad_value))
    return logits[:, :h, :w, :]


def _window_starts(length, crop, stride):
    """Start offsets of windows of size `crop` covering [0, length) (length >= crop): last one flush."""
    n = tf.maximum(0, -((crop - length) // stride)) + 1  # ceil((length - crop) / stride) + 1
    return tf.minimum(tf.range(n) * stride, length - crop)


def _sliding(logits_fn, images, crop_size, stride_fraction, pad_value):
    """Sliding-window prediction: windows of crop_size with overlap, logits averaged where they overlap.

    Images smaller than the crop are padded up to it (as in training), then cropped back.
    """
    ch, cw = crop_size
    sh = max(1, int(math.ceil(ch * stride_fraction)))
    sw = max(1, int(math.ceil(cw * stride_fraction)))
    shape = tf.shape(images)
    h, w = shape[1], shape[2]
    ph, pw = tf.maximum(h, ch), tf.maximum(w, cw)
    padded = _pad_to(images, ph, pw, pad_value)
    ys = _window_starts(ph, ch, sh)
    xs = _window_starts(pw, cw, sw)
    nx = tf.size(xs)
    n_windows = tf.size(ys) * nx

    def window_logits(k):
        y, x = ys[k // nx], xs[k % nx]
        logits = logits_fn(padded[:, y : y + ch, x : x + cw, :])
        # Place the window's logits on the full canvas (zeros elsewhere) so windows just add up.
        placed = tf.pad(logits, [[0, 0], [y, ph - y - ch], [x, pw - x - cw], [0, 0]])
        ones = tf.pad(tf.ones([ch, cw], tf.float32), [[y, ph - y - ch], [x, pw - x - cw]])
        return placed, ones

    # The first window is outside the loop so the number of classes (static) is known.
    total, count = window_logits(0)
    num_classes = total.shape[-1]

    def body(k, total, count):
        placed, ones = window_logits(k)
        return k + 1, total + placed, count + ones

    _, total, count = tf.while_loop(
        lambda k, *_: k < n_windows,
        body,
        (tf.constant(1), total, count),
        shape_invariants=(
            tf.TensorShape([]),
            tf.TensorShape([None, None, None, num_classes]),
            tf.TensorShape([None, None]),
        ),
    )
    logits = total / count[tf.newaxis, :, :, tf.newaxis]
    return logits[:, :h, :w, :]


def predict_logits(
    logits_fn,
    images,
    scales=(1.0,),
    flip=False,
    mode="whole",
    crop_size=None,
    stride_fraction=2.0 / 3.0,
    average="logits",
    pad_multiple=None,
    pad_offset=0,
    pad_value=MEAN_RGB,
):
    """Logits with test-time augmentation: float32 [B, H, W, C] at the input size.

    Args:
      logits_fn: callable float32 images [B, h, w, 3] (RGB 0..255) -> logits [B, h, w, C], same size.
      images: float32 (or uint8) [B, H, W, 3], RGB 0..255. H, W may be dynamic.
      scales: image scales to predict at (e.g. 0.5, 0.75, 1.0, 1.25, 1.5, 1.75); each prediction is
        resized back to [H, W] bilinearly before averaging.
      flip: also predict the left-right mirrored image (mirrored back before averaging).
      mode: 'whole' (one call per scale/flip) or 'sliding' (crop_size windows, overlapping by
        1 - stride_fraction, averaged in logit space where they overlap; for images larger than
        the training crop).
      crop_size: int or (height, width) window for mode='sliding'.
      stride_fraction: window stride as a fraction of crop_size (2/3 -> 1/3 overlap).
      average: 'logits' (mean of logits) or 'probs' (mean of softmax probabilities; when more than
        one prediction is averaged the result is returned as log-probabilities, so that its
        softmax/argmax are those of the mean).
      pad_multiple, pad_offset: in 'whole' mode, pad each (scaled) image at the bottom/right to
        the next size k * pad_multiple + pad_offset (e.g. 16, 1 -> 513-style sizes) and crop the
        logits back. None: no padding.
      pad_value: RGB value for padded pixels (default: ImageNet mean).

    Returns:
      float32 logits [B, H, W, C].
    """
    scales = tuple(float(s) for s in scales)
    if crop_size is not None:
        crop_size = _pair(crop_size, "crop_size")
    _validate(scales, mode, crop_size, stride_fraction, average, pad_multiple, pad_offset)
    images = tf.cast(tf.convert_to_tensor(images), tf.float32)
    shape = tf.shape(images)
    h, w = shape[1], shape[2]

    def predict(x):
        if mode == "sliding":
            return _sliding(logits_fn, x, crop_size, stride_fraction, pad_value)
        return _whole(logits_fn, x, pad_multiple, pad_offset, pad_value)

    outputs = []
    for scale in scales:
        if scale == 1.0:
            scaled = images
        else:
            size = tf.maximum(1, tf.cast(tf.round(tf.cast(tf.stack([h, w]), tf.float32) * scale), tf.int32))
            scaled = tf.image.resize(images, size, method="bilinear")
        variants = [(scaled, False)] + ([(tf.reverse(scaled, axis=[2]), True)] if flip else [])
        for x, flipped in variants:
            logits = tf.cast(predict(x), tf.float32)
            if flipped:
                logits = tf.reverse(logits, axis=[2])
            if scale != 1.0:
                logits = tf.image.resize(logits, tf.stack([h, w]), method="bilinear")
            outputs.append(logits)

    if len(outputs) == 1:
        return outputs[0]
    if average == "probs":
        mean = tf.add_n([tf.nn.softmax(o, axis=-1) for o in outputs]) / float(len(outputs))
        # log of the mean probability: softmax(log p) == p because p sums to 1.
        return tf.math.log(tf.maximum(mean, 1e-30))
    return tf.add_n(outputs) / float(len(outputs))


def predict_labels(logits_fn, images, **kwargs):
    """Argmax of `predict_logits(logits_fn, images, **kwargs)`: int64 class ids [B, H, W]."""
    return tf.argmax(predict_logits(logits_fn, images, **kwargs), axis=-1, output_type=tf.int64)


# ---------------------------------------------------------------------------------------------
# batching images of different sizes without changing any image's answer (the evaluator)
#
# Padding images of different sizes into one canvas would change their predictions: the
# image-pooling branch of ASPP averages over the whole canvas and the strided convolutions'
# sampling grid moves with the size. So images share a model call only when the one-image path
# would feed the model tensors of the same size anyway: the same (height, width), or, in whole
# mode at scale 1 without flip with `pad_multiple`, the same padded canvas (the one-image path
# pads each image to that canvas before the model, so padding it up front is the same tensor).


def shared_canvas(height, width, scales=(1.0,), flip=False, mode="whole", pad_multiple=None, pad_offset=0, **_):
    """(canvas_height, canvas_width) when images of this size can be padded up front to the canvas
    the one-image path of `predict_logits` pads them to (whole mode, scale 1, no flip,
    `pad_multiple` set), else None. Takes `TTAConfig.kwargs()`; plain Python ints."""
    if not (pad_multiple and mode == "whole" and tuple(float(s) for s in scales) == (1.0,) and not flip):
        return None
    return (canvas_side(int(height), pad_multiple, pad_offset), canvas_side(int(width), pad_multiple, pad_offset))


def canvas_side(size, pad_multiple, pad_offset=0):
    """The next k * pad_multiple + pad_offset >= size: the side the one-image path pads to. Python ints
    or integer tensors (`%` is a floor modulo for both)."""
    return size + (int(pad_offset) - size) % int(pad_multiple)


def batch_key(height, width, **tta_kwargs):
    """Images with equal keys can go through `predict_logits` as one batch with the one-image
    answers: the shared canvas (see `shared_canvas`) or else the image size itself."""
    return shared_canvas(height, width, **tta_kwargs) or (int(height), int(width))


def size_groups(shapes, batch_size, **tta_kwargs):
    """Splits images (their (height, width, ...) shapes, in order) into batches that each share a
    `batch_key`: a list of (key, [indices]) with at most `batch_size` indices, in order of first
    appearance (deterministic)."""
    batch_size = max(1, int(batch_size))
    by_key = {}
    for i, shape in enumerate(shapes):
        by_key.setdefault(batch_key(shape[0], shape[1], **tta_kwargs), []).append(i)
    return [
        (key, members[k : k + batch_size])
        for key, members in by_key.items()
        for k in range(0, len(members), batch_size)
    ]


def pad_to_canvas(images, height, width, pad_value=MEAN_RGB):
    """float32 [B,h,w,3] padded at the bottom/right to [B,height,width,3] with the one-image path's
    own op (so the pixels are bit for bit those `predict_logits(..., pad_multiple=...)` feeds the model)."""
    return _pad_to(tf.cast(tf.convert_to_tensor(images), tf.float32), height, width, pad_value)
