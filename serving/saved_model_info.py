"""Reading an exported SavedModel's files without building anything: its SignatureDefs (what TF Serving
and `saved_model_cli show --all` read) and assets.extra/deeplab_export.json (written by
models.export.export_serving_model). TensorFlow only (gfile, protos); no model code, so
serving/server can use it.
"""

import json
import os

import tensorflow as tf

ASSETS_EXTRA = "assets.extra"
CONFIG_FILENAME = "deeplab_export.json"


def read_export_config(export_dir):
    """assets.extra/deeplab_export.json of an exported SavedModel as a dict."""
    path = os.path.join(export_dir, ASSETS_EXTRA, CONFIG_FILENAME)
    if not tf.io.gfile.exists(path):
        raise FileNotFoundError(
            f"{path} not found: {export_dir} was not written by models.export "
            "(re-export needs the hparams; pass a .keras file or checkpoint + --hparams)"
        )
    with tf.io.gfile.GFile(path) as f:
        return json.load(f)


def label_map_from_config(config):
    """The data.label_map.LabelMap recorded under "label_map" in a deeplab_export.json (or hparams) dict; None
    when there is none (exports written before label maps were recorded: their classes are VOC's)."""
    from data.label_map import LabelMap

    value = (config or {}).get("label_map")
    if value is None:
        return None
    return (
        LabelMap.from_json_dict(value, source=f"{CONFIG_FILENAME} 'label_map'")
        if isinstance(value, dict)
        else LabelMap.resolve(value)
    )


def read_label_map(export_dir):
    """The LabelMap recorded in an export's deeplab_export.json; None for older exports (VOC classes)."""
    return label_map_from_config(read_export_config(export_dir))


def read_signature_defs(export_dir, tag="serve"):
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


def describe_signatures(export_dir):
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
