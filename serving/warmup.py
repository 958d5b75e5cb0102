"""TF Serving's warm-up file: assets.extra/tf_serving_warmup_requests, PredictionLog protos replayed at
load so the first real request does not pay for kernel/graph initialisation. Written by
models.export.export_serving_model (through write_warmup_file), replayed by serving/server/manager.py.
"""

import os

import numpy as np
import tensorflow as tf

from serving.saved_model_info import ASSETS_EXTRA

WARMUP_FILENAME = "tf_serving_warmup_requests"


def _warmup_images(sizes, seed=0):
    from data.synthetic import render_sample

    rng = np.random.default_rng(seed)
    return [render_sample(rng, int(h), int(w))[0] for h, w in sizes]


def _encode_png(image):
    return tf.io.encode_png(image).numpy()


def warmup_requests(sizes=((128, 128),), model_name="deeplab", batch_size=1):
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


def write_warmup_file(export_dir, logs):
    path = os.path.join(export_dir, ASSETS_EXTRA, WARMUP_FILENAME)
    tf.io.gfile.makedirs(os.path.dirname(path))
    with tf.io.TFRecordWriter(path) as writer:
        for entry in logs:
            writer.write(entry.SerializeToString())
    return path


def read_warmup_file(export_dir):
    """The PredictionLog protos of a SavedModel's warm-up file ([] when it has none)."""
    from tensorflow_serving.apis import prediction_log_pb2

    path = os.path.join(export_dir, ASSETS_EXTRA, WARMUP_FILENAME)
    if not tf.io.gfile.exists(path):
        return []
    return [prediction_log_pb2.PredictionLog.FromString(r.numpy()) for r in tf.data.TFRecordDataset(path)]
