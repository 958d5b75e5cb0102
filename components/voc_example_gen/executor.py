"""Beam executor of VocExampleGen: sample refs -> validated tf.train.Example -> sharded GZIP TFRecords.

The Beam transforms live in `transforms.py` (what workers import); this module builds the pipeline
per split, runs it, merges the per-split summaries the pipeline wrote into `example_gen_report.json`
and fails after writing it when a split is empty or rejects more than `max_rejected_fraction`.
Nothing depends on the runner: files go through Beam IO and tf.io.gfile, summaries are written by
the pipeline itself (not read from runner metrics, which some runners do not report), and the DoFns
hold no state beyond Beam counters.
"""

import json
import os
from typing import Any, Dict, List

import apache_beam as beam
import tensorflow as tf
from absl import logging
from tfx.components.example_gen import base_example_gen_executor, write_split
from tfx.components.util import examples_utils
from tfx.proto import example_gen_pb2
from tfx.types import artifact_utils, standard_component_specs
from tfx.utils import proto_utils

from components.types import optional_property
from components.voc_example_gen.spec import (
    DATA_ROOT_KEY,
    LABEL_MAP_KEY,
    LAYOUT_KEY,
    MAX_REJECTED_FRACTION_KEY,
    NUM_SHARDS_KEY,
    SBD_ROOT_KEY,
    VOC_ROOT_KEY,
)
from components.voc_example_gen.transforms import (
    CONVERSIONS,
    EXAMPLES,
    LAYOUTS,
    METRICS_NAMESPACE,
    REFERENCE_PREFIX,
    REJECTS,
    ReadSplit,
    WriteExamples,
    write_summary,
)

REPORT_FILE = "example_gen_report.json"
_SUMMARY_DIR = ".split_summaries"


class IngestError(RuntimeError):
    """The ingest produced unusable output (empty split, too many rejects); the message says why and what to do."""


class RejectsError(IngestError):
    """IngestError after the report was written: carries it for callers (`deeplab ingest` copies `splits` into
    its own report), so nobody has to parse the message.

    Attributes: report_path (the kept example_gen_report.json, outside the output folder the orchestrator
    deletes), splits (its per-split examples, rejects with reasons and files, conversions)."""

    def __init__(self, message, report_path=None, splits=None):
        super().__init__(message)
        self.report_path, self.splits = report_path, splits

    def __reduce__(self):  # picklable with its attributes (exceptions crossing process boundaries)
        return type(self), (str(self), self.report_path, self.splits)


def _input_splits(exec_properties):
    input_config = example_gen_pb2.Input()
    proto_utils.json_to_proto(exec_properties[standard_component_specs.INPUT_CONFIG_KEY], input_config)
    return list(input_config.splits)


def _max_rejected_fraction(exec_properties):
    return float(exec_properties[MAX_REJECTED_FRACTION_KEY])


def _layout(exec_properties):
    layout = optional_property(exec_properties, LAYOUT_KEY, "voc")  # absent for VOC (see the component)
    if layout not in LAYOUTS:
        raise ValueError(f"unknown dataset layout {layout!r}; choose one of {list(LAYOUTS)}")
    return layout


def effective_label_map(exec_properties):
    """The label map JSON the workers use: the `label_map` property (create_pipeline always sets it for a dataset
    with its own); else the dataset layout's own (data.layouts.layout_label_map); else None (VOC)."""
    if exec_properties.get(LABEL_MAP_KEY):
        return exec_properties[LABEL_MAP_KEY]
    from data.label_map import LabelMap
    from data.layouts import layout_label_map

    own = layout_label_map(_layout(exec_properties), exec_properties.get(DATA_ROOT_KEY))
    return None if own is None else json.dumps(LabelMap.resolve(own).to_json_dict(), sort_keys=True)


def _check_dataset(exec_properties):
    from data import fileio
    from data.layouts import open_dataset

    layout = _layout(exec_properties)
    if not exec_properties.get(DATA_ROOT_KEY):
        raise ValueError(f"layout {layout!r} needs data_root (--data-root): the root folder of the dataset")
    dataset = open_dataset(layout, exec_properties[DATA_ROOT_KEY], "voc")  # FileNotFoundError names the folder
    available = dataset.available_splits()
    for split in _input_splits(exec_properties):
        if split.pattern.startswith(REFERENCE_PREFIX):
            continue
        if not fileio.exists(dataset.split_path(split.pattern)) and not (
            layout == "generic" and split.pattern == "all"
        ):
            raise ValueError(
                f"split {split.name!r}: the {dataset.NAME} at {dataset.root} has no split {split.pattern!r} "
                f"(available: {sorted(available)}, or 'all'); choose one with --split-recipe {split.name}=SPLIT"
            )


def check_inputs(exec_properties: Dict[str, Any]) -> None:
    """Fails at once, naming the path and the flag, when a root or a reference glob does not exist."""
    from data.sbd import SbdDataset
    from data.splits import RECIPES
    from data.voc import VocDevkit

    if exec_properties.get(LABEL_MAP_KEY):
        from components.voc_example_gen.transforms import decode_label_map

        decode_label_map(exec_properties[LABEL_MAP_KEY])  # a LabelMapError names the field, before Beam starts
    if _layout(exec_properties) != "voc":
        _check_dataset(exec_properties)
    if exec_properties.get(VOC_ROOT_KEY):
        VocDevkit(exec_properties[VOC_ROOT_KEY])  # raises FileNotFoundError with the fix in the message
    if exec_properties.get(SBD_ROOT_KEY):
        SbdDataset(exec_properties[SBD_ROOT_KEY])
    for split in _input_splits(exec_properties):
        if split.pattern.startswith(REFERENCE_PREFIX):
            pattern = split.pattern[len(REFERENCE_PREFIX) :]
            if not tf.io.gfile.glob(pattern):
                raise FileNotFoundError(
                    f"split {split.name!r}: no reference TFRecords match {pattern!r}; "
                    "check the --reference-tfrecords glob"
                )
            continue
        if _layout(exec_properties) != "voc":
            continue
        if split.pattern not in RECIPES and not split.pattern.startswith("file:"):
            raise ValueError(
                f"split {split.name!r}: unknown split recipe {split.pattern!r}; choose one of "
                f"{sorted(RECIPES)} or 'file:PATH'"
            )
        if not exec_properties.get(VOC_ROOT_KEY) and not exec_properties.get(SBD_ROOT_KEY):
            raise ValueError(
                f"split {split.name!r} uses recipe {split.pattern!r} but neither voc_root nor "
                "sbd_root is set; pass --voc-root (and --sbd-root for SBD recipes)"
            )


class Executor(base_example_gen_executor.BaseExampleGenExecutor):
    """Writes one `Examples` split per input split and an `example_gen_report.json` beside them."""

    def GetInputSourceToExamplePTransform(self) -> beam.PTransform:
        """The ExampleGen hook: (pipeline, exec_properties, split_pattern) -> serialized Examples."""

        @beam.ptransform_fn
        def ExamplesOnly(pipeline, exec_properties, split_pattern):  # pylint: disable=invalid-name
            return (
                pipeline
                | "ReadSplit"
                >> ReadSplit(
                    split_pattern,
                    exec_properties.get(VOC_ROOT_KEY),
                    exec_properties.get(SBD_ROOT_KEY),
                    label_map=effective_label_map(exec_properties),
                    layout=_layout(exec_properties),
                    data_root=exec_properties.get(DATA_ROOT_KEY),
                )
            )[EXAMPLES]

        return ExamplesOnly

    def Do(
        self, input_dict: Dict[str, List[Any]], output_dict: Dict[str, List[Any]], exec_properties: Dict[str, Any]
    ) -> None:
        """Runs the Beam pipeline, writes the report, then fails if a split is empty or too dirty."""
        self._log_startup(input_dict, output_dict, exec_properties)
        check_inputs(exec_properties)
        splits = _input_splits(exec_properties)
        artifact = artifact_utils.get_single_instance(output_dict[standard_component_specs.EXAMPLES_KEY])
        artifact.split_names = artifact_utils.encode_split_names([s.name for s in splits])
        summary_dir = os.path.join(artifact.uri, _SUMMARY_DIR)
        num_shards = int(exec_properties[NUM_SHARDS_KEY])
        label_map = effective_label_map(exec_properties)

        pipeline = self._make_beam_pipeline()
        for split in splits:
            outputs = pipeline | f"ReadSplit[{split.name}]" >> ReadSplit(
                split.pattern,
                exec_properties.get(VOC_ROOT_KEY),
                exec_properties.get(SBD_ROOT_KEY),
                split.name,
                label_map=label_map,
                layout=_layout(exec_properties),
                data_root=exec_properties.get(DATA_ROOT_KEY),
            )
            examples = outputs[EXAMPLES]
            _ = examples | f"WriteSplit[{split.name}]" >> WriteExamples(
                artifact_utils.get_split_uri([artifact], split.name), num_shards
            )
            count = examples | f"Count[{split.name}]" >> beam.combiners.Count.Globally()
            rejects = outputs[REJECTS] | f"Rejects[{split.name}]" >> beam.combiners.ToList()
            conversions = outputs[CONVERSIONS] | f"Conversions[{split.name}]" >> beam.combiners.ToList()
            _ = (
                pipeline
                | f"SummaryKey[{split.name}]" >> beam.Create([split.name])
                | f"Summary[{split.name}]"
                >> beam.Map(
                    write_summary,
                    os.path.join(summary_dir, f"{split.name}.json"),
                    beam.pvalue.AsSingleton(count),
                    beam.pvalue.AsSingleton(rejects),
                    beam.pvalue.AsSingleton(conversions),
                )
            )
        logging.info("VocExampleGen: running Beam for splits %s", [s.name for s in splits])
        result = pipeline.run()
        result.wait_until_finish()
        _log_counters(result)

        report = build_report(summary_dir, splits, exec_properties)
        tf.io.gfile.rmtree(summary_dir)
        with tf.io.gfile.GFile(os.path.join(artifact.uri, REPORT_FILE), "w") as f:
            json.dump(report, f, indent=1)
        examples_utils.set_payload_format(artifact, example_gen_pb2.FORMAT_TF_EXAMPLE)
        examples_utils.set_file_format(artifact, write_split.to_file_format_str(example_gen_pb2.FORMAT_TFRECORDS_GZIP))
        for name, split_report in report["splits"].items():
            logging.info(
                "VocExampleGen[%s]: %d examples written, %d rejected %s, %d converted",
                name,
                split_report["examples"],
                split_report["rejected"],
                split_report["rejects_by_reason"],
                len(split_report["conversions"]),
            )
        try:
            check_report(report, _max_rejected_fraction(exec_properties))
        except IngestError as e:
            # The orchestrator deletes a failed execution's output folder, so the report is kept beside it.
            kept = failed_report_path(artifact.uri)
            tf.io.gfile.makedirs(os.path.dirname(kept))
            tf.io.gfile.copy(os.path.join(artifact.uri, REPORT_FILE), kept, overwrite=True)
            raise RejectsError(f"{e} (rejects report: {kept})", report_path=kept, splits=report["splits"]) from None


def failed_report_path(artifact_uri):
    """Where the report of a failed run is kept: <component dir>/failed_runs/<execution>/example_gen_report.json."""
    execution = os.path.basename(artifact_uri.rstrip("/"))
    component_dir = os.path.dirname(os.path.dirname(artifact_uri.rstrip("/")))
    return os.path.join(component_dir, "failed_runs", execution, REPORT_FILE)


def _log_counters(result):
    try:
        counters = result.metrics().query(beam.metrics.MetricsFilter().with_namespace(METRICS_NAMESPACE))["counters"]
    except Exception as e:  # pylint: disable=broad-except  # some runners do not report metrics
        logging.info("VocExampleGen: runner reported no metrics (%s)", e)
        return
    for counter in sorted(counters, key=lambda c: c.key.metric.name):
        logging.info("VocExampleGen counter %s = %s", counter.key.metric.name, counter.committed)


def build_report(summary_dir, splits, exec_properties):
    """Merges the per-split summaries the pipeline wrote into one report dict."""
    report = {
        "voc_root": exec_properties.get(VOC_ROOT_KEY),
        "sbd_root": exec_properties.get(SBD_ROOT_KEY),
        "max_rejected_fraction": _max_rejected_fraction(exec_properties),
        "splits": {},
    }
    if _layout(exec_properties) != "voc":  # absent for VOC: the report stays as it was
        report["layout"] = _layout(exec_properties)
        report["data_root"] = exec_properties.get(DATA_ROOT_KEY)
    label_map = effective_label_map(exec_properties)
    if label_map:
        report["label_map"] = json.loads(label_map)
    for split in splits:
        with tf.io.gfile.GFile(os.path.join(summary_dir, f"{split.name}.json")) as f:
            summary = json.load(f)
        by_reason = {}
        for reject in summary["rejects"]:
            by_reason[reject["reason"]] = by_reason.get(reject["reason"], 0) + 1
        conversions_by_kind = {}
        for conversion in summary["conversions"]:
            conversions_by_kind[conversion["conversion"]] = conversions_by_kind.get(conversion["conversion"], 0) + 1
        total = summary["examples"] + len(summary["rejects"])
        report["splits"][split.name] = {
            "source": split.pattern,
            "examples": summary["examples"],
            "rejected": len(summary["rejects"]),
            "rejected_fraction": len(summary["rejects"]) / total if total else 0.0,
            "rejects_by_reason": dict(sorted(by_reason.items())),
            "rejects": summary["rejects"],
            "conversions_by_kind": dict(sorted(conversions_by_kind.items())),
            "conversions": summary["conversions"],
        }
    return report


def check_report(report, max_rejected_fraction):
    """Raises IngestError naming the split when it is empty or rejected more than the allowed fraction."""
    problems = []
    for name, split in report["splits"].items():
        if split["examples"] == 0:
            problems.append(
                f"split {name!r} ({split['source']}) is empty: {split['rejected']} samples rejected "
                f"{split['rejects_by_reason']}; check the dataset root and the split list"
            )
        elif split["rejected_fraction"] > max_rejected_fraction:
            problems.append(
                f"split {name!r} rejected {split['rejected']} of "
                f"{split['rejected'] + split['examples']} samples ({split['rejected_fraction']:.1%} > "
                f"max_rejected_fraction {max_rejected_fraction:.1%}): {split['rejects_by_reason']}; "
                "fix the files listed in the report or raise --max-rejected-fraction"
            )
    if problems:
        raise IngestError("VocExampleGen failed: " + "; ".join(problems))
