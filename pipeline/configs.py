"""Defaults of the deeplab-tfx pipeline (TFX template style): one place to read and override them.

Everything here is a plain value; `pipeline/pipeline.py:create_pipeline()` takes each as a keyword
argument and `pipeline/cli.py` maps flags onto them (`RunOptions`); `deeplab serve|predict` (serving/cli.py,
serving/predict.py) and the demo (pipeline/demo.py) read them too. Where the runners use a custom component's own
default, it is re-exported from the component's package (`components/<name>/__init__.py`: plain values, no TFX);
the components never import this module (docs/ARCHITECTURE.md, "Layers").
"""

import os
import posixpath

from components.atomic_pusher import DEFAULT_KEEP_VERSIONS, DEFAULT_MODEL_NAME
from components.miou_evaluator import DEFAULT_EVAL_SPLIT
from components.schema_gate import DEFAULT_ALLOW_ANOMALIES
from components.voc_example_gen import (
    DEFAULT_GENERIC_SPLIT_RECIPES,
    DEFAULT_MAX_REJECTED_FRACTION,
    DEFAULT_NUM_SHARDS,
    DEFAULT_SPLIT_RECIPES,
)

PIPELINE_NAME = "deeplab-tfx"

# Local runs keep the pipeline root, the ML Metadata sqlite file and the served models under one folder.
OUTPUT_DIR = os.path.join("runs", "local")
PIPELINE_ROOT_DIRNAME = "pipeline_root"
METADATA_FILENAME = "metadata.sqlite"

# Data (see README "Data"): the pipeline never downloads; point these at unpacked VOC 2012 / SBD.
VOC_ROOT = None
SBD_ROOT = None
# The split the Trainer fits on and the split it and MiouEvaluator evaluate on (also the names the
# --train-recipe / --val-recipe shortcuts set).
TRAIN_SPLIT = "train"
EVAL_SPLIT = DEFAULT_EVAL_SPLIT
# output split name -> recipe of data.splits (voc_train, voc_val, train_aug, sbd_train_minus_voc_val, file:PATH, ...)
SPLIT_RECIPES = DEFAULT_SPLIT_RECIPES
# The dataset's classes (data/label_map.py): None is Pascal VOC's 21 classes with no `label_map` exec property
# anywhere (so a VOC pipeline compiles, and hits the cache, the same with or without this setting); else a
# built-in name ('voc', 'cityscapes', 'ade20k'), a label map JSON/YAML path, a LabelMap or its dict. It sets the
# mask encoding of the ingest, the classes of the label statistics, the model's num_classes and the evaluator's
# per-class names (`deeplab run --label-map`).
LABEL_MAP = None
# Dataset layout of the ingest: "voc" (VOC_ROOT / SBD_ROOT and SPLIT_RECIPES), or a dataset at DATA_ROOT read by
# data.layouts.open_dataset: "generic" (images/, masks/, splits/<split>.txt, optional label_map.json), "cityscapes",
# "ade20k"; GENERIC_SPLIT_RECIPES maps output splits to the dataset's split names.
LAYOUT = "voc"
DATA_ROOT = None
GENERIC_SPLIT_RECIPES = DEFAULT_GENERIC_SPLIT_RECIPES
# Fail the ingest when a split rejects more than this fraction of its samples.
MAX_REJECTED_FRACTION = DEFAULT_MAX_REJECTED_FRACTION
# Output TFRecord files per split; 0 lets the Beam runner decide (one per bundle on the DirectRunner).
NUM_SHARDS = DEFAULT_NUM_SHARDS

# Beam: two local worker processes by default; pass e.g. --runner=DataflowRunner --project=... to scale out
# (the same pipeline code runs on Dataflow, Flink and Spark).
BEAM_PIPELINE_ARGS = [
    "--direct_running_mode=multi_processing",
    "--direct_num_workers=2",
]
# The demo's few hundred images: Beam in this process. Each multi-processing worker first spends seconds
# importing Beam (and the evaluator's TensorFlow), more than the demo's whole per-record work.
DEMO_BEAM_ARGS = [
    "--direct_running_mode=in_memory",
    "--direct_num_workers=1",
]
# VocExampleGen's own Beam arguments where the DirectRunner would otherwise start worker processes
# (pipeline.pipeline.ingest_beam_args): its per-record work (JPEG/PNG decoding, zlib, CRC-32C) runs in C with the
# GIL released, so threads parallelise it without each worker spending seconds importing Beam or records crossing
# a process boundary. bench/ingest.py, 10,000 images on 2 cores: 1.35-1.40x a plain loop, worker processes 1.05x.
INGEST_BEAM_PIPELINE_ARGS = ["--direct_running_mode=multi_threading"]

# Data validation: ImportSchemaGen loads this curated schema (regenerate a proposal with `deeplab schema`);
# ExampleValidator checks every split against it and SchemaGate stops the run before the Trainer on any
# anomaly unless ALLOW_ANOMALIES (--allow-anomalies).
SCHEMA_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "schema", "schema.pbtxt")
ALLOW_ANOMALIES = DEFAULT_ALLOW_ANOMALIES

# Model (models/hparams.py presets): the Trainer's custom_config. "paper" is DeepLab V3 with ResNet-v2-50 from
# ImageNet weights (a local Keras h5, see README); "demo" is the small MobileNetV2 the demo trains from scratch.
TRAIN_CONFIG = {"preset": "paper"}

# The test-time augmentation baked into the SavedModel the Trainer exports and the Pusher pushes (None: whole
# images at one scale, the fastest answer), as a models.inference.TTAConfig dict, e.g.
# {"scales": [0.75, 1.0, 1.25], "flip": true}. The evaluator's "export" mode then measures exactly that.
SERVING_TTA = None
# Start each training from the latest blessed model's weights (the Trainer's base_model; models/finetune.py copies
# backbone and ASPP, and the logits too when the class count matches). Off: a run trains as its preset says.
WARM_START = False
# Under the pipeline root: the Trainer's resumable state (models/trainer_module.py), kept across TFX executions so a
# killed pipeline continues its training when run again.
TRAINING_STATE_DIRNAME = "_training_state"

# Evaluation and gating (MiouEvaluator): push only a model whose val mIoU >= MIOU_THRESHOLD and which is at most
# MAX_REGRESSION below the latest blessed model. "export" evaluates with the test-time augmentation baked into
# the served graph, so the gate measures exactly what TF Serving answers.
MIOU_THRESHOLD = 0.5
MAX_REGRESSION = 0.01
EVAL_TTA = "export"

# Bulk inference in the pipeline: TFX's BulkInferrer runs the blessed model over this split of the Examples (None:
# no BulkInferrer), with the export's compact `serving_examples_png` signature; its output Examples carry
# `prediction/segmentation_png`, `prediction/height`, `prediction/width` beside the input features.
INFER_SPLIT = None
# `deeplab infer`: most images per model call, and `deeplab serve`'s image limits.
INFER_BATCH_SIZE = 8
INFER_MAX_IMAGE_PIXELS = 4096 * 4096
INFER_MAX_IMAGE_SIDE = 8192
# TFLite beside the pushed SavedModel (components/tflite_pusher): None (none pushed) or the quantization (none,
# float16, int8), at a fixed square input size; the parity gate of models/tflite_export.py decides.
PUSH_TFLITE = None
TFLITE_INPUT_SIZE = 513

# Push (AtomicPusher): <serving dir>/<MODEL_NAME>/<version>/, the layout tensorflow_model_server polls.
MODEL_NAME = DEFAULT_MODEL_NAME
KEEP_VERSIONS = DEFAULT_KEEP_VERSIONS
SERVING_DIRNAME = "serving"
# `deeplab serve` (and tensorflow_model_server's) default ports.
GRPC_PORT = 8500
REST_PORT = 8501

# Kubeflow Pipelines (KubeflowV2DagRunner): compiled PipelineJob JSON.
KUBEFLOW_PIPELINE_ROOT = "gs://YOUR-BUCKET/deeplab-tfx"
KUBEFLOW_OUTPUT_FILE = "pipeline.json"
# Where the pipeline image (Dockerfile: WORKDIR /pipeline) holds the curated schema: Kubeflow tasks read it there,
# not at this checkout's path. `deeplab compile --schema-file gs://...` points elsewhere.
KUBEFLOW_SCHEMA_FILE = "/pipeline/pipeline/schema/schema.pbtxt"

# Synthetic demo dataset (deeplab demo).
DEMO_WORKDIR = os.path.join("runs", "demo")
DEMO_NUM_TRAIN = 300
DEMO_NUM_VAL = 60
DEMO_SEED = 0
DEMO_MIN_SIZE = 160
DEMO_MAX_SIZE = 320
DEMO_PRESET = "demo"
DEMO_MIOU_THRESHOLD = 0.8


def serving_dir_beside(pipeline_root):
    """Default push directory: `serving/` next to the pipeline root (local folder or gs://...)."""
    return posixpath.join(posixpath.dirname(str(pipeline_root).rstrip("/")), SERVING_DIRNAME)


def local_paths(output_dir=OUTPUT_DIR):
    """(pipeline_root, metadata sqlite path) of a local run under `output_dir`."""
    return (os.path.join(output_dir, PIPELINE_ROOT_DIRNAME), os.path.join(output_dir, METADATA_FILENAME))
