"""Streaming mean IoU for training and validation (confusion matrix accumulated in TF, 255 ignored).

The NumPy mIoU of a finished confusion matrix is models.confusion.iou_from_confusion."""

import tensorflow as tf
import tf_keras as keras

from data.voc import IGNORE_LABEL


@keras.saving.register_keras_serializable(package="deeplab")
class StreamingMeanIoU(keras.metrics.Metric):
    """mIoU over all pixels seen since reset, from logits [B,H,W,C] and labels [B,H,W(,1)].

    Classes that appear neither in labels nor predictions are left out of the mean (as DeepLab's
    eval). The confusion matrix is float64 so counts stay exact past 2**24 pixels.
    """

    def __init__(self, num_classes=21, ignore_label=IGNORE_LABEL, name="miou", **kwargs):
        super().__init__(name=name, **kwargs)
        self.num_classes = num_classes
        self.ignore_label = ignore_label
        self.confusion = self.add_weight(
            "confusion", shape=(num_classes, num_classes), initializer="zeros", dtype=tf.float64
        )

    def update_state(self, y_true, y_pred, sample_weight=None):
        labels = tf.cast(y_true, tf.int32)
        if labels.shape.rank == 4:
            labels = tf.squeeze(labels, axis=-1)
        predictions = tf.argmax(y_pred, axis=-1, output_type=tf.int32)
        # One histogram of label*C + prediction: tf.math.confusion_matrix (boolean_mask, then a float64
        # scatter_nd) took half of the demo model's training step on a CPU; bincount is a single fast pass.
        # Ignored pixels (and any label outside 0..C-1) go to an extra bin that is dropped.
        cells = self.num_classes * self.num_classes
        valid = (labels >= 0) & (labels < self.num_classes) & (labels != self.ignore_label)
        index = tf.where(valid, labels * self.num_classes + predictions, cells)
        # The Bincount op with a constant size: tf.math.bincount's size depends on the data, which XLA cannot
        # compile, and DenseBincount is as slow on a CPU as the scatter it replaces.
        counts = tf.raw_ops.Bincount(arr=tf.reshape(index, [-1]), size=cells + 1, weights=tf.constant([], tf.int32))
        confusion = tf.reshape(tf.cast(counts[:cells], tf.float64), (self.num_classes, self.num_classes))
        self.confusion.assign_add(confusion)

    def per_class_iou(self):
        tp = tf.linalg.diag_part(self.confusion)
        union = tf.reduce_sum(self.confusion, 0) + tf.reduce_sum(self.confusion, 1) - tp
        return tp / tf.maximum(union, 1.0), union > 0

    def result(self):
        iou, present = self.per_class_iou()
        count = tf.reduce_sum(tf.cast(present, tf.float64))
        return tf.cast(tf.reduce_sum(tf.where(present, iou, 0.0)) / tf.maximum(count, 1.0), tf.float32)

    def reset_state(self):
        self.confusion.assign(tf.zeros_like(self.confusion))

    def get_config(self):
        config = super().get_config()
        config.update(num_classes=self.num_classes, ignore_label=self.ignore_label)
        return config
