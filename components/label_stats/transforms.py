"""The Beam side of LabelStatsGen (what workers import): no TFX or TensorFlow imports, so workers start fast."""

import io
import json

import apache_beam as beam
import numpy as np


class HistogramFn(beam.CombineFn):
    """Accumulates (pixels per value [256], images containing each value [256], examples, undecodable names)."""

    def create_accumulator(self):
        return np.zeros(256, np.int64), np.zeros(256, np.int64), 0, []

    def add_input(self, accumulator, serialized):
        from PIL import Image

        from components.voc_example_gen.transforms import parse_example
        from data.tfrecord import IMAGE_FILENAME, LABEL_ENCODED

        pixels, images, count, bad = accumulator
        example = parse_example(serialized)
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

    def merge_accumulators(self, accumulators):
        pixels, images, count, bad = self.create_accumulator()
        for p, i, c, b in accumulators:
            pixels, images, count, bad = pixels + p, images + i, count + c, bad + b
        return pixels, images, count, bad

    def extract_output(self, accumulator):
        pixels, images, count, bad = accumulator
        return {
            "pixels": pixels.tolist(),
            "images": images.tolist(),
            "num_examples": count,
            "undecodable": sorted(bad)[:100],
            "num_undecodable": len(bad),
        }


def write_part(histogram, path):
    """Writes one split's histogram as JSON (runs on a worker)."""
    from apache_beam.io.filesystems import FileSystems

    with FileSystems.create(path) as f:
        f.write(json.dumps(histogram).encode("utf-8"))
