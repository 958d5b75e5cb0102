"""The Beam side of LabelStatsGen (what workers import): no TFX or TensorFlow imports, so workers start fast."""

import json

import apache_beam as beam

from data import label_histogram


class HistogramFn(beam.CombineFn):
    """Accumulates (pixels per value [256], images containing each value [256], examples, undecodable names)
    with the functions of data/label_histogram.py (shared with models.train's class weights)."""

    def create_accumulator(self):
        return label_histogram.empty_histogram()

    def add_input(self, accumulator, serialized):
        return label_histogram.add_example(accumulator, serialized)

    def merge_accumulators(self, accumulators):
        return label_histogram.merge_histograms(accumulators)

    def extract_output(self, accumulator):
        return label_histogram.histogram_dict(accumulator)


def write_part(histogram, path):
    """Writes one split's histogram as JSON (runs on a worker)."""
    from apache_beam.io.filesystems import FileSystems

    with FileSystems.create(path) as f:
        f.write(json.dumps(histogram).encode("utf-8"))
