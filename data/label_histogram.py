"""The class pixel histogram of segmentation Examples: LabelStatsGen's per-split label validation and plot (its Beam
CombineFn, components/label_stats/transforms.py). Training reads its statistics from the Transform's analyzers
instead (models/transform.py). Pure numpy + PIL + protobuf: no Beam, TFX or TensorFlow imports.

An accumulator is (pixels per value [256], images containing each value [256], examples, undecodable names).
"""

import io

import numpy as np


def empty_histogram():
    """A new accumulator: no pixel, no example."""
    return np.zeros(256, np.int64), np.zeros(256, np.int64), 0, []


def add_example(accumulator, serialized):
    """`accumulator` plus one serialized official-format Example: its mask's 256-bin histogram, or, when the
    mask cannot be decoded or is not single-channel, its name in the undecodable list."""
    from PIL import Image

    from data.tfrecord import IMAGE_FILENAME, LABEL_ENCODED, parse_light_example

    pixels, images, count, bad = accumulator
    example = parse_light_example(serialized)
    features = example.features.feature
    name = features[IMAGE_FILENAME].bytes_list.value[0].decode() if IMAGE_FILENAME in features else "?"
    try:
        mask = Image.open(io.BytesIO(features[LABEL_ENCODED].bytes_list.value[0]))
        if mask.mode not in ("L", "P"):
            raise ValueError(f"mask mode {mask.mode}, expected single-channel class ids")
        hist = np.bincount(np.asarray(mask, np.uint8).ravel(), minlength=256)
    except Exception as e:  # pylint: disable=broad-except  # counted as an anomaly, not a crash
        bad.append(f"{name}: {e}")
        return pixels, images, count + 1, bad
    return pixels + hist, images + (hist > 0), count + 1, bad


def merge_histograms(accumulators):
    pixels, images, count, bad = empty_histogram()
    for p, i, c, b in accumulators:
        pixels, images, count, bad = pixels + p, images + i, count + c, bad + b
    return pixels, images, count, bad


def histogram_dict(accumulator):
    """The JSON form LabelStatsGen writes per split: pixels [256], images [256], num_examples, undecodable."""
    pixels, images, count, bad = accumulator
    return {
        "pixels": pixels.tolist(),
        "images": images.tolist(),
        "num_examples": count,
        "undecodable": sorted(bad)[:100],
        "num_undecodable": len(bad),
    }


def histogram_of_examples(serialized_examples):
    """histogram_dict of an iterable of serialized Examples (what LabelStatsGen computes for one split)."""
    accumulator = empty_histogram()
    for serialized in serialized_examples:
        accumulator = add_example(accumulator, serialized)
    return histogram_dict(accumulator)
