"""Executor of SchemaGate: read each split's SchemaDiff.pb, fail (or warn) naming every anomaly."""

import json
import os
from typing import Dict, List

import tensorflow as tf
from absl import logging
from tfx.dsl.components.base import base_executor
from tfx.types import artifact_utils

from components.schema_gate.spec import ALLOW_ANOMALIES_KEY, ANOMALIES_KEY, RESULT_KEY
from components.types import ArtifactDict, ExecProperties

RESULT_FILE = "validation.json"
SCHEMA_DIFF_FILE = "SchemaDiff.pb"
SCHEMA_PATH = "pipeline/schema/schema.pbtxt"


class SchemaAnomalyError(RuntimeError):
    """ExampleValidator found examples that break the schema and anomalies are not allowed."""


def read_split_anomalies(anomalies_uri: str, split: str) -> List[Dict[str, str]]:
    """The anomalies of one split: [{feature, short_description, description}], [] when none.

    Returns None when the split has no SchemaDiff.pb."""
    from tensorflow_metadata.proto.v0 import anomalies_pb2

    path = os.path.join(anomalies_uri, f"Split-{split}", SCHEMA_DIFF_FILE)
    if not tf.io.gfile.exists(path):
        return None
    with tf.io.gfile.GFile(path, "rb") as f:
        anomalies = anomalies_pb2.Anomalies.FromString(f.read())
    found = []
    for feature, info in sorted(anomalies.anomaly_info.items()):
        found.append(
            {
                "feature": feature,
                "short_description": info.short_description,
                "description": info.description or "; ".join(r.description for r in info.reason),
            }
        )
    if anomalies.HasField("dataset_anomaly_info"):
        info = anomalies.dataset_anomaly_info
        found.append(
            {"feature": "<dataset>", "short_description": info.short_description, "description": info.description}
        )
    return found


def format_anomalies(per_split: Dict[str, List[Dict[str, str]]]) -> str:
    """One line per anomaly: split, feature, short description and description."""
    return "\n".join(
        f"  split {split!r}, feature {a['feature']!r}: {a['short_description']} ({a['description']})"
        for split, found in per_split.items()
        for a in found
    )


class Executor(base_executor.BaseExecutor):
    """Reads the ExampleAnomalies artifact, writes validation.json, fails on anomalies unless allowed."""

    def Do(self, input_dict: ArtifactDict, output_dict: ArtifactDict, exec_properties: ExecProperties) -> None:
        self._log_startup(input_dict, output_dict, exec_properties)
        anomalies = artifact_utils.get_single_instance(input_dict[ANOMALIES_KEY])
        result = artifact_utils.get_single_instance(output_dict[RESULT_KEY])
        allow = bool(exec_properties[ALLOW_ANOMALIES_KEY])
        splits = artifact_utils.decode_split_names(anomalies.split_names)
        per_split, missing = {}, []
        for split in splits:
            found = read_split_anomalies(anomalies.uri, split)
            if found is None:
                missing.append(split)
            elif found:
                per_split[split] = found
        if missing:
            raise SchemaAnomalyError(
                f"no {SCHEMA_DIFF_FILE} for split(s) {missing} in {anomalies.uri}: "
                "was this artifact written by ExampleValidator?"
            )
        count = sum(len(found) for found in per_split.values())
        tf.io.gfile.makedirs(result.uri)
        with tf.io.gfile.GFile(os.path.join(result.uri, RESULT_FILE), "w") as f:
            json.dump(
                {
                    "splits": splits,
                    "anomalies": per_split,
                    "num_anomalies": count,
                    "allow_anomalies": allow,
                    "anomalies_uri": anomalies.uri,
                },
                f,
                indent=1,
            )
        result.set_int_custom_property("blessed", int(count == 0))
        result.set_int_custom_property("num_anomalies", count)
        if not count:
            logging.info("SchemaGate: no schema anomalies in split(s) %s", splits)
            return
        listing = format_anomalies(per_split)
        if allow:
            logging.warning(
                "SchemaGate: %d schema anomal%s, allowed (allow_anomalies / --allow-anomalies):\n%s",
                count,
                "y" if count == 1 else "ies",
                listing,
            )
            return
        raise SchemaAnomalyError(
            f"schema validation failed: {count} anomal{'y' if count == 1 else 'ies'} in the examples of split(s) "
            f"{sorted(per_split)} (ExampleValidator, {anomalies.uri}); the model is not trained:\n{listing}\n"
            f"Fix the data; or, if the data are right and the schema is out of date, update {SCHEMA_PATH} "
            "(`deeplab schema --output-dir OUTPUT_DIR` shows the change, `--write` applies it); or pass "
            "--allow-anomalies (create_pipeline(allow_anomalies=True)) to train anyway."
        )
