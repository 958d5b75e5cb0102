"""Segmentation loss: softmax cross-entropy over the pixels whose label is not IGNORE_LABEL, optionally
weighted per class (HParams.class_weights, against class imbalance; class_weights_from_histogram).

Weight decay is not here: it lives in the model as kernel regularizers (models.layers.l2_regularizer)
and Keras adds `model.losses` to this loss in every training step (the reference repo declared
its L2 regularizer but never added it to the loss).
"""

import math

import numpy as np
import tensorflow as tf
import tf_keras as keras

from data.voc import IGNORE_LABEL

MEDIAN_FREQUENCY = "median_frequency"
INVERSE_SQRT = "inverse_sqrt"
# The automatic class-weight methods (HParams.class_weights accepts these names); "auto" = median_frequency.
CLASS_WEIGHT_METHODS = {"auto": MEDIAN_FREQUENCY, MEDIAN_FREQUENCY: MEDIAN_FREQUENCY, INVERSE_SQRT: INVERSE_SQRT}


def masked_softmax_cross_entropy(labels, logits, ignore_label=IGNORE_LABEL, class_weights=None):
    """Mean softmax cross-entropy over valid pixels (label != ignore_label); 0 when none is valid.

    labels: int [B,H,W] or [B,H,W,1]; logits: float [B,H,W,C]. Ignored pixels contribute neither
    loss nor gradient (their label is replaced by 0 only so the op accepts it, then masked out).

    class_weights: None, or C non-negative numbers w[c]. With weights the result is the weighted mean
    sum_valid w[label] * ce / sum_valid w[label], exactly what torch.nn.CrossEntropyLoss(weight=w,
    ignore_index=ignore_label, reduction="mean") computes; 0 (not NaN) when no valid pixel has a
    non-zero weight. Without weights the code path (and result) is the unweighted mean of before.
    """
    labels = tf.cast(labels, tf.int32)
    if labels.shape.rank == 4:
        labels = tf.squeeze(labels, axis=-1)
    valid = tf.not_equal(labels, ignore_label)
    safe_labels = tf.where(valid, labels, tf.zeros_like(labels))
    per_pixel = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=safe_labels, logits=tf.cast(logits, tf.float32))
    weights = tf.cast(valid, tf.float32)
    if class_weights is None:
        return tf.reduce_sum(per_pixel * weights) / tf.maximum(tf.reduce_sum(weights), 1.0)
    class_weights = tf.convert_to_tensor(class_weights, tf.float32)
    num_classes = logits.shape[-1]
    if class_weights.shape.rank != 1 or (num_classes is not None and class_weights.shape[0] != num_classes):
        raise ValueError(f"class_weights: expected one weight per class ({num_classes}), got {class_weights.shape}")
    weights = weights * tf.gather(class_weights, safe_labels)
    return tf.math.divide_no_nan(tf.reduce_sum(per_pixel * weights), tf.reduce_sum(weights))


def check_class_weights(class_weights, num_classes=None, name="class_weights"):
    """class_weights as a list of floats: finite, >= 0, not all 0 and (with num_classes) one per class.
    ValueError naming `name` otherwise."""
    try:
        values = [float(v) for v in class_weights]
    except (TypeError, ValueError):
        raise ValueError(f"{name}: expected a list of numbers, got {class_weights!r}") from None
    if num_classes is not None and len(values) != int(num_classes):
        raise ValueError(
            f"{name}: got {len(values)} weight(s), expected num_classes={num_classes} (one per class id "
            f"0..{int(num_classes) - 1})"
        )
    if not values or any(not math.isfinite(v) or v < 0 for v in values) or not any(values):
        raise ValueError(f"{name}: weights must be finite, >= 0 and not all 0; got {values}")
    return values


def class_weights_from_histogram(pixel_counts, method=MEDIAN_FREQUENCY, num_classes=None):
    """Per-class loss weights (a list of floats) from a class pixel histogram.

    freq_c = pixels of class c / all labelled pixels (class ids 0..num_classes-1; the ignore label 255 and
    out-of-range values are not counted). method:
      "median_frequency", and "auto" which means it: w_c = median(freq) / freq_c, the median taken over the
          classes present. This is Eigen & Fergus's median frequency balancing (ICCV 2015) in its common
          split-wide form: they divide a class's pixels by the pixels of the images that contain it, which a
          class pixel histogram does not keep. A class at the median frequency weighs 1, rarer ones more,
          more frequent ones less.
      "inverse_sqrt": w_c = 1 / sqrt(freq_c), scaled so that the pixel-weighted mean weight
          sum_c freq_c * w_c is 1 (the loss keeps the scale of the unweighted one on such data).
    A class with no labelled pixel gets weight 0 under both methods: training never sees a pixel of it, so its
    weight cannot act on the loss, and 0 (rather than an unbounded 1/0, or a cap) keeps the weights finite and
    marks the class as absent.

    pixel_counts: labelled pixels per class id. With num_classes, only pixel_counts[:num_classes] are classes,
    so LabelStatsGen's 256-bin histogram ("pixels") can be passed as it is.
    ValueError for an unknown method or a histogram without any labelled pixel.
    """
    if method not in CLASS_WEIGHT_METHODS:
        raise ValueError(f"class weight method {method!r}: expected one of {sorted(CLASS_WEIGHT_METHODS)}")
    method = CLASS_WEIGHT_METHODS[method]
    counts = np.asarray(pixel_counts, np.float64)
    if num_classes is not None:
        counts = counts[: int(num_classes)]
    if counts.ndim != 1 or np.any(counts < 0):
        raise ValueError(f"pixel_counts: expected non-negative counts per class, got {pixel_counts!r}")
    total = counts.sum()
    if total <= 0:
        raise ValueError("class weights: the histogram holds no labelled pixel (every label is ignored or absent)")
    freq = counts / total
    present = freq > 0
    weights = np.zeros_like(freq)
    if method == MEDIAN_FREQUENCY:
        weights[present] = np.median(freq[present]) / freq[present]
    else:
        inverse_sqrt = 1.0 / np.sqrt(freq[present])
        weights[present] = inverse_sqrt / np.sum(freq[present] * inverse_sqrt)
    return [float(w) for w in weights]


@keras.saving.register_keras_serializable(package="deeplab")
class MaskedSparseCrossEntropy(keras.losses.Loss):
    """Keras loss of masked_softmax_cross_entropy (already a per-replica mean over valid pixels; with
    class_weights the per-replica weighted mean)."""

    def __init__(self, ignore_label=IGNORE_LABEL, class_weights=None, name="masked_cross_entropy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.ignore_label = ignore_label
        self.class_weights = None if class_weights is None else check_class_weights(class_weights)

    def call(self, y_true, y_pred):
        if self.class_weights is None:
            return masked_softmax_cross_entropy(y_true, y_pred, self.ignore_label)
        return masked_softmax_cross_entropy(y_true, y_pred, self.ignore_label, class_weights=self.class_weights)

    def get_config(self):
        config = super().get_config()
        config.update(ignore_label=self.ignore_label, class_weights=self.class_weights)
        return config
