"""Shared pieces for the evaluator tests (no tests here): tiny colour-coded examples and
SavedModels whose `logits` signature classifies each pixel by its nearest class colour, so every
prediction (and so every confusion matrix) is known exactly."""

import io
import os

import numpy as np
from PIL import Image

from data.tfrecord import Sample, to_example
from data.voc import IGNORE_LABEL, NUM_CLASSES

# Classes drawn in the synthetic images, with their pure colours; background is class 0.
CLASS_COLOURS = {0: (0, 0, 0), 1: (230, 40, 40), 8: (40, 230, 40), 15: (40, 40, 230)}
FAR = (-1000.0, -1000.0, -1000.0)


def colour_table(swap=None):
    """[C, 3] colours; classes not drawn sit far away so they are never nearest. swap=(a, b):
    class b gets class a's colour and a is moved away (a model that calls every a a b)."""
    table = np.array([CLASS_COLOURS.get(c, FAR) for c in range(NUM_CLASSES)], np.float32)
    if swap:
        a, b = swap
        table[b], table[a] = table[a], FAR
    return table


def nearest_colour_labels(image, table):
    """NumPy reference of the colour model: int64 [H, W]."""
    d = ((image[:, :, None, :].astype(np.float64) - table[None, None].astype(np.float64)) ** 2).sum(-1)
    return d.argmin(-1)


def save_colour_model(export_dir, table):
    """Writes a SavedModel with the `logits` signature of docs/ARCHITECTURE.md: images float32
    [B,H,W,3] 0..255 -> logits float32 [B,H,W,C] = -squared distance to each class colour / 1000."""
    import tensorflow as tf

    class ColourModel(tf.Module):
        def __init__(self):
            super().__init__()
            self.colours = tf.Variable(table, trainable=False)

        @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32, name="images")])
        def logits(self, images):
            d = tf.reduce_sum(tf.square(images[:, :, :, None, :] - self.colours), axis=-1)
            return {"logits": -d / 1000.0}

    module = ColourModel()
    tf.saved_model.save(module, str(export_dir), signatures={"logits": module.logits})
    return str(export_dir)


def png_bytes(array):
    buf = io.BytesIO()
    Image.fromarray(np.asarray(array, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def make_sample(seed, size=32):
    """(image uint8 [H,W,3], label uint8 [H,W]) with 1-2 coloured rectangles, 255 borders and noise."""
    rng = np.random.default_rng(seed)
    h, w = size, size + (seed % 3) * 4  # a few sizes, so dynamic shapes are exercised
    label = np.zeros((h, w), np.uint8)
    for _ in range(1 + seed % 2):
        cls = int(rng.choice([1, 8, 15]))
        y0, x0 = rng.integers(0, h // 2), rng.integers(0, w // 2)
        y1, x1 = y0 + rng.integers(6, h // 2), x0 + rng.integers(6, w // 2)
        label[y0:y1, x0:x1] = cls
    colours = np.array([CLASS_COLOURS.get(c, (0, 0, 0)) for c in range(NUM_CLASSES)], np.int16)
    image = colours[label] + rng.integers(-25, 26, size=(h, w, 3))
    image = np.clip(image, 0, 255).astype(np.uint8)
    # VOC-style ignore band on object boundaries.
    edge = np.zeros_like(label, bool)
    edge[:-1] |= label[:-1] != label[1:]
    edge[:, :-1] |= label[:, :-1] != label[:, 1:]
    label[edge] = IGNORE_LABEL
    return image, label


def serialized_example(image, label, filename):
    sample = Sample(
        image_bytes=png_bytes(image),
        image_format="png",
        mask_png=png_bytes(label),
        height=image.shape[0],
        width=image.shape[1],
        filename=filename,
        converted=None,
    )
    return to_example(sample).SerializeToString()


def write_examples(directory, n, seed0=0, gzip=True, name="data_tfrecord-00000-of-00001.gz", extra_records=()):
    """Writes n examples as one TFRecord file (GZIP like ExampleGen) and returns [(image, label, filename)]."""
    import tensorflow as tf

    os.makedirs(directory, exist_ok=True)
    samples = []
    options = tf.io.TFRecordOptions(compression_type="GZIP" if gzip else None)
    with tf.io.TFRecordWriter(os.path.join(directory, name), options=options) as writer:
        for i in range(n):
            image, label = make_sample(seed0 + i)
            filename = f"img_{seed0 + i:03d}"
            writer.write(serialized_example(image, label, filename))
            samples.append((image, label, filename))
        for record in extra_records:
            writer.write(record)
    return samples
