"""Beam executor of LabelStatsGen: decode every mask, sum a 256-bin histogram per split, report anomalies."""

import io
import json
import os
from typing import Any, Dict, List

import apache_beam as beam
import numpy as np
import tensorflow as tf
from absl import logging
from tfx.dsl.components.base import base_beam_executor
from tfx.types import artifact_utils, standard_component_specs
from tfx.utils import io_utils

from components.label_stats.spec import (
    DEFAULT_FAIL_ON_ANOMALY,
    FAIL_ON_ANOMALY_KEY,
    LABEL_MAP_KEY,
    LABEL_STATISTICS_KEY,
    NUM_CLASSES_KEY,
)
from components.label_stats.transforms import HistogramFn, write_part
from components.types import optional_property

STATS_FILE = "label_stats.json"
PLOT_FILE = "label_stats.png"
METRICS_NAMESPACE = "LabelStatsGen"
_PARTS_DIR = ".split_histograms"


class LabelAnomalyError(RuntimeError):
    """Masks hold labels that are neither class ids nor the ignore label (or cannot be decoded)."""


def split_stats(histogram, num_classes, names=None, ignore_label=None):
    """Readable per-split statistics from the raw 256-bin histogram.

    names: class names (index = class id; default the VOC names for 21 classes, else the ids);
    ignore_label: the label not counted as a class (default data.voc.IGNORE_LABEL, 255).
    """
    from data.voc import IGNORE_LABEL, VOC_CLASSES

    if ignore_label is None:
        ignore_label = IGNORE_LABEL
    if names is None:
        names = VOC_CLASSES if num_classes == len(VOC_CLASSES) else [str(i) for i in range(num_classes)]
    if len(names) != num_classes:
        raise ValueError(f"{len(names)} class names for {num_classes} classes")
    pixels, images = histogram["pixels"], histogram["images"]
    total = int(sum(pixels))
    labelled = int(sum(pixels[:num_classes]))
    return {
        "num_examples": histogram["num_examples"],
        "total_pixels": total,
        "class_pixels": {names[c]: int(pixels[c]) for c in range(num_classes)},
        "class_pixel_fraction": {names[c]: (pixels[c] / labelled if labelled else 0.0) for c in range(num_classes)},
        "images_with_class": {names[c]: int(images[c]) for c in range(num_classes)},
        "ignore_pixels": int(pixels[ignore_label]),
        "out_of_range_pixels": {
            str(v): int(pixels[v]) for v in range(num_classes, 256) if v != ignore_label and pixels[v]
        },
        "out_of_range_images": {
            str(v): int(images[v]) for v in range(num_classes, 256) if v != ignore_label and images[v]
        },
        "num_undecodable_masks": histogram["num_undecodable"],
        "undecodable_masks": histogram["undecodable"],
    }


def find_anomalies(stats):
    """(errors, warnings): errors are bad labels/masks; warnings are classes missing from a split."""
    errors, warnings = [], []
    for split, s in stats.items():
        if s["out_of_range_pixels"]:
            errors.append(
                f"split {split!r}: labels outside the class ids and 255 in {sum(s['out_of_range_images'].values())}"
                f" image(s): value -> pixels {s['out_of_range_pixels']}"
            )
        if s["num_undecodable_masks"]:
            errors.append(
                f"split {split!r}: {s['num_undecodable_masks']} mask(s) cannot be decoded, e.g. "
                f"{s['undecodable_masks'][:3]}"
            )
        missing = [name for name, n in s["class_pixels"].items() if n == 0]
        if missing:
            warnings.append(f"split {split!r}: no pixels of class(es) {missing}")
    return errors, warnings


def plot_histograms(stats, path, palette=None, ignore_label=None):
    """Bar chart (log scale) of class pixels per split, bars in the class colours; written with tf.io.gfile.

    palette: uint8 [256, 3] colours by class id (a label map's `colors()`; default the VOC colour map);
    ignore_label: the id of the ignore bar (default 255).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from data.voc import voc_palette

    palette = (voc_palette() if palette is None else np.asarray(palette)) / 255.0
    ignore_label = 255 if ignore_label is None else int(ignore_label)
    fig, axes = plt.subplots(len(stats), 1, figsize=(11, 3.2 * len(stats)), squeeze=False)
    for ax, (split, s) in zip(axes[:, 0], stats.items()):
        names = list(s["class_pixels"]) + [f"ignore ({ignore_label})"]
        values = list(s["class_pixels"].values()) + [s["ignore_pixels"]]
        colors = [palette[i] for i in range(len(names) - 1)] + [palette[ignore_label]]
        for value, count in s["out_of_range_pixels"].items():
            names.append(f"bad {value}")
            values.append(count)
            colors.append((1.0, 0.0, 0.0))
        # Zero counts get no bar (log scale); the tick label still names the class.
        ax.bar(
            range(len(names)),
            [v if v > 0 else float("nan") for v in values],
            color=colors,
            edgecolor="black",
            linewidth=0.4,
        )
        ax.set_yscale("log")
        ax.set_ylim(bottom=0.8)
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(names, rotation=60, ha="right", fontsize=7)
        ax.set_ylabel("pixels")
        ax.set_title(f"{split}: {s['num_examples']} images, {s['total_pixels']:,} pixels")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    with tf.io.gfile.GFile(path, "wb") as f:
        f.write(buf.getvalue())


class Executor(base_beam_executor.BaseBeamExecutor):
    """Computes the histograms in one Beam pipeline over all splits."""

    def Do(
        self, input_dict: Dict[str, List[Any]], output_dict: Dict[str, List[Any]], exec_properties: Dict[str, Any]
    ) -> None:
        from data.voc import NUM_CLASSES

        self._log_startup(input_dict, output_dict, exec_properties)
        examples = artifact_utils.get_single_instance(input_dict[standard_component_specs.EXAMPLES_KEY])
        exclude = json.loads(optional_property(exec_properties, standard_component_specs.EXCLUDE_SPLITS_KEY, "[]"))
        splits = [s for s in artifact_utils.decode_split_names(examples.split_names) if s not in exclude]
        if not splits:
            raise ValueError(
                f"no splits left to analyse in {examples.uri} (split_names={examples.split_names}, "
                f"exclude_splits={exclude})"
            )
        num_classes = int(optional_property(exec_properties, NUM_CLASSES_KEY, NUM_CLASSES))
        names = palette = ignore_label = None
        label_map = None
        if exec_properties.get(LABEL_MAP_KEY) is not None:
            from data.label_map import LabelMap

            label_map = LabelMap.from_json_dict(
                json.loads(exec_properties[LABEL_MAP_KEY]), source="LabelStatsGen exec property label_map"
            )
            num_classes, names = label_map.num_classes, list(label_map.names)
            palette, ignore_label = label_map.colors(), label_map.ignore_label
        fail_on_anomaly = bool(optional_property(exec_properties, FAIL_ON_ANOMALY_KEY, DEFAULT_FAIL_ON_ANOMALY))
        output = artifact_utils.get_single_instance(output_dict[LABEL_STATISTICS_KEY])
        output.set_string_custom_property("split_names", artifact_utils.encode_split_names(splits))
        parts_dir = os.path.join(output.uri, _PARTS_DIR)
        tf.io.gfile.makedirs(parts_dir)

        with self._make_beam_pipeline() as pipeline:
            for split in splits:
                pattern = io_utils.all_files_pattern(artifact_utils.get_split_uri([examples], split))
                _ = (
                    pipeline
                    | f"Read[{split}]" >> beam.io.ReadFromTFRecord(pattern)
                    | f"Histogram[{split}]" >> beam.CombineGlobally(HistogramFn())
                    | f"WritePart[{split}]" >> beam.Map(write_part, os.path.join(parts_dir, f"{split}.json"))
                )

        stats = {}
        for split in splits:
            with tf.io.gfile.GFile(os.path.join(parts_dir, f"{split}.json")) as f:
                stats[split] = split_stats(json.load(f), num_classes, names, ignore_label)
        tf.io.gfile.rmtree(parts_dir)
        errors, warnings = find_anomalies(stats)
        report = {"num_classes": num_classes, "splits": stats, "anomalies": errors, "warnings": warnings}
        if label_map is not None:  # absent for VOC: the report stays as it was
            report["label_map"] = label_map.name
            report["class_names"] = names
            report["ignore_label"] = ignore_label
        with tf.io.gfile.GFile(os.path.join(output.uri, STATS_FILE), "w") as f:
            json.dump(report, f, indent=1)
        plot_histograms(stats, os.path.join(output.uri, PLOT_FILE), palette, ignore_label)
        output.set_int_custom_property("num_anomalies", len(errors))
        for split, s in stats.items():
            logging.info(
                "LabelStatsGen[%s]: %d images, ignore %d px, out-of-range %s",
                split,
                s["num_examples"],
                s["ignore_pixels"],
                s["out_of_range_pixels"] or "none",
            )
        for warning in warnings:
            logging.warning("LabelStatsGen: %s", warning)
        if errors:
            message = (
                "LabelStatsGen found label anomalies: "
                + "; ".join(errors)
                + f" (details: {os.path.join(output.uri, STATS_FILE)})"
            )
            if fail_on_anomaly:
                raise LabelAnomalyError(message + "; fix the masks, or pass fail_on_anomaly=False to only record them")
            logging.error("%s", message)
