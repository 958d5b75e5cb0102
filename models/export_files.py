"""The files an export holds for TF Serving besides its graph, written by models/export.py and read by the
model loader (models/model_io.py), the evaluator, `deeplab export` and the server (serving/server/):

- `assets.extra/deeplab_export.json`: the network's description, hparams, TTA, precision and label map, what
  `load_model` rebuilds from (`read_export_config`, `label_map_from_config`, `read_label_map`);
- `assets.extra/tf_serving_warmup_requests`: TF Serving's warm-up file, PredictionLog protos replayed at load so
  the first real request does not pay for kernel/graph initialisation (`warmup_requests`, `write_warmup_file`,
  `read_warmup_file`);
- the SignatureDefs of saved_model.pb, read as TF Serving and `saved_model_cli show --all` read them
  (`read_signature_defs`, `describe_signatures`).

The writer of a format and its reader live in one module, here beside the export. It imports TensorFlow,
tensorflow-serving-api's protos and data/ only, never the network code (tf_keras, models.deeplab, ...), so
serving/server reads exports through it and stays free of the model layer (docs/ARCHITECTURE.md, "Layers").
"""

import json
import os
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

ASSETS_EXTRA = "assets.extra"
CONFIG_FILENAME = "deeplab_export.json"
WARMUP_FILENAME = "tf_serving_warmup_requests"


def is_export(path: str) -> bool:
    """True when `path` is a SavedModel directory (holds saved_model.pb); local or remote."""
    return tf.io.gfile.exists(os.path.join(str(path), "saved_model.pb"))


def export_versions(base_path: str) -> List[str]:
    """The numeric version folders of a TF Serving base path that hold a SavedModel, oldest first (paths)."""
    from data.fileio import numbered_children

    return numbered_children(base_path, is_export)


def read_export_config(export_dir: str) -> Dict[str, Any]:
    """assets.extra/deeplab_export.json of an exported SavedModel as a dict."""
    path = os.path.join(export_dir, ASSETS_EXTRA, CONFIG_FILENAME)
    if not tf.io.gfile.exists(path):
        raise FileNotFoundError(
            f"{path} not found: {export_dir} was not written by models.export "
            "(re-export needs the hparams; pass a .keras file or checkpoint + --hparams)"
        )
    with tf.io.gfile.GFile(path) as f:
        return json.load(f)


def label_map_from_config(config: Optional[Mapping[str, Any]]):
    """The data.label_map.LabelMap recorded under "label_map" in a deeplab_export.json (or hparams) dict; None
    when there is none (such an export's classes are VOC's)."""
    from data.label_map import LabelMap

    value = (config or {}).get("label_map")
    if value is None:
        return None
    return (
        LabelMap.from_json_dict(value, source=f"{CONFIG_FILENAME} 'label_map'")
        if isinstance(value, dict)
        else LabelMap.resolve(value)
    )


def read_label_map(export_dir: str):
    """The LabelMap recorded in an export's deeplab_export.json; None where it records none (VOC classes)."""
    return label_map_from_config(read_export_config(export_dir))


def read_signature_defs(export_dir: str, tag: str = "serve") -> Dict[str, Any]:
    """{name: SignatureDef proto} of the MetaGraph tagged `tag` (what TF Serving and
    `saved_model_cli show --all` read)."""
    from tensorflow.core.protobuf import saved_model_pb2

    saved_model = saved_model_pb2.SavedModel()
    with tf.io.gfile.GFile(os.path.join(export_dir, "saved_model.pb"), "rb") as f:
        saved_model.ParseFromString(f.read())
    for meta_graph in saved_model.meta_graphs:
        if tag in meta_graph.meta_info_def.tags:
            return dict(meta_graph.signature_def)
    raise ValueError(f"{export_dir}: SavedModel has no MetaGraph tagged {tag!r}")


def describe_signatures(export_dir: str) -> List[str]:
    """One line per signature: 'name: input dtype [shape], ... -> output dtype [shape], ...'."""

    def tensors(infos):
        parts = []
        for alias in sorted(infos):
            info = infos[alias]
            shape = (
                "<unknown rank>"
                if info.tensor_shape.unknown_rank
                else "[" + ",".join("?" if d.size == -1 else str(d.size) for d in info.tensor_shape.dim) + "]"
            )
            parts.append(f"{alias} {tf.dtypes.as_dtype(info.dtype).name} {shape}")
        return ", ".join(parts)

    return [
        f"{name}: {tensors(sig.inputs)} -> {tensors(sig.outputs)}"
        for name, sig in sorted(read_signature_defs(export_dir).items())
        if not name.startswith("__")
    ]


def _warmup_images(sizes, seed=0):
    from data.synthetic import render_sample

    rng = np.random.default_rng(seed)
    return [render_sample(rng, int(h), int(w))[0] for h, w in sizes]


def _encode_png(image):
    return tf.io.encode_png(image).numpy()


def warmup_requests(
    sizes: Sequence[Tuple[int, int]] = ((128, 128),), model_name: str = "deeplab", batch_size: int = 1
) -> list:
    """PredictionLog protos for TF Serving's warm-up file: serving_default and predict_images at
    each size, so the first real request does not pay for kernel/graph initialisation."""
    from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

    logs = []
    for image in _warmup_images(sizes):
        h, w = image.shape[:2]
        req = predict_pb2.PredictRequest()
        req.model_spec.name = model_name
        req.model_spec.signature_name = "serving_default"
        req.inputs["images"].CopyFrom(tf.make_tensor_proto([_encode_png(image)] * batch_size, dtype=tf.string))
        logs.append(prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=req)))

        req = predict_pb2.PredictRequest()
        req.model_spec.name = model_name
        req.model_spec.signature_name = "predict_images"
        req.inputs["images"].CopyFrom(tf.make_tensor_proto(image[np.newaxis].astype(np.float32)))
        req.inputs["height"].CopyFrom(tf.make_tensor_proto(h, dtype=tf.int32, shape=[1]))
        req.inputs["width"].CopyFrom(tf.make_tensor_proto(w, dtype=tf.int32, shape=[1]))
        logs.append(prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=req)))
    return logs


def write_warmup_file(export_dir: str, logs: Sequence[Any]) -> str:
    """Writes `logs` (PredictionLog protos) as the export's warm-up file; returns its path."""
    path = os.path.join(export_dir, ASSETS_EXTRA, WARMUP_FILENAME)
    tf.io.gfile.makedirs(os.path.dirname(path))
    with tf.io.TFRecordWriter(path) as writer:
        for entry in logs:
            writer.write(entry.SerializeToString())
    return path


def read_warmup_file(export_dir: str) -> list:
    """The PredictionLog protos of a SavedModel's warm-up file ([] when it has none)."""
    from tensorflow_serving.apis import prediction_log_pb2

    path = os.path.join(export_dir, ASSETS_EXTRA, WARMUP_FILENAME)
    if not tf.io.gfile.exists(path):
        return []
    return [prediction_log_pb2.PredictionLog.FromString(r.numpy()) for r in tf.data.TFRecordDataset(path)]
