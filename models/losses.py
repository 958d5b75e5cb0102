"""Segmentation loss: softmax cross-entropy over the pixels whose label is not IGNORE_LABEL.

Weight decay is not here: it lives in the model as kernel regularizers (models.layers.l2_regularizer)
and Keras adds `model.losses` to this loss in every training step (the reference repo declared
its L2 regularizer but never added it to the loss).
"""

import tensorflow as tf
import tf_keras as keras

from data.voc import IGNORE_LABEL


def masked_softmax_cross_entropy(labels, logits, ignore_label=IGNORE_LABEL):
    """Mean softmax cross-entropy over valid pixels (label != ignore_label); 0 when none is valid.

    labels: int [B,H,W] or [B,H,W,1]; logits: float [B,H,W,C]. Ignored pixels contribute neither
    loss nor gradient (their label is replaced by 0 only so the op accepts it, then masked out).
    """
    labels = tf.cast(labels, tf.int32)
    if labels.shape.rank == 4:
        labels = tf.squeeze(labels, axis=-1)
    valid = tf.not_equal(labels, ignore_label)
    safe_labels = tf.where(valid, labels, tf.zeros_like(labels))
    per_pixel = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=safe_labels, logits=tf.cast(logits, tf.float32))
    weights = tf.cast(valid, tf.float32)
    return tf.reduce_sum(per_pixel * weights) / tf.maximum(tf.reduce_sum(weights), 1.0)


@keras.saving.register_keras_serializable(package="deeplab")
class MaskedSparseCrossEntropy(keras.losses.Loss):
    """Keras loss of masked_softmax_cross_entropy (already a per-replica mean over valid pixels)."""

    def __init__(self, ignore_label=IGNORE_LABEL, name="masked_cross_entropy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.ignore_label = ignore_label

    def call(self, y_true, y_pred):
        return masked_softmax_cross_entropy(y_true, y_pred, self.ignore_label)

    def get_config(self):
        config = super().get_config()
        config.update(ignore_label=self.ignore_label)
        return config
