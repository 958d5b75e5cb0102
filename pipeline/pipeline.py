"""The deeplab-tfx pipeline, wired in one function (TFX template style), and its two runners.

    VocExampleGen -> StatisticsGen -> ExampleValidator (schema: ImportSchemaGen) -> SchemaGate
                  -> LabelStatsGen                                                      |
                  -> Transform (models.transform.preprocessing_fn, train split, after SchemaGate)
                  -> Trainer (models.trainer_module.run_fn, transform_graph) -> MiouEvaluator -> AtomicPusher
                     latest blessed model (Resolver) ------------^      |                 -> TflitePusher (option)
                                                                       -> BulkInferrer (option: infer_split)

`create_pipeline()` builds the component list in order; `with_model=False` stops after the data half
(what `deeplab ingest` runs). `run_local()` runs it with LocalDagRunner (sqlite ML Metadata,
caching); `compile_kubeflow()` writes the same pipeline as a Kubeflow Pipelines v2 PipelineJob JSON,
offline.
"""

import contextlib
import json
import os
import posixpath
from typing import Any, Dict, List, Optional

from tfx import v1 as tfx

from components.atomic_pusher.component import AtomicPusher
from components.label_stats.component import LabelStatsGen
from components.miou_evaluator.component import MiouEvaluator
from components.schema_gate.component import SchemaGate
from components.tflite_pusher.component import TflitePusher
from components.voc_example_gen.component import VocExampleGen, label_map_json
from models import trainer_module
from pipeline import configs


def create_pipeline(
    pipeline_name: str = configs.PIPELINE_NAME,
    pipeline_root: str = configs.local_paths()[0],
    *,
    # Data: VocExampleGen.
    voc_root: Optional[str] = configs.VOC_ROOT,
    sbd_root: Optional[str] = configs.SBD_ROOT,
    split_recipes: Optional[Dict[str, str]] = None,
    reference_tfrecords: Optional[Dict[str, str]] = None,
    layout: str = configs.LAYOUT,
    data_root: Optional[str] = configs.DATA_ROOT,
    label_map: Any = configs.LABEL_MAP,
    max_rejected_fraction: float = configs.MAX_REJECTED_FRACTION,
    num_shards: int = configs.NUM_SHARDS,
    # Validation: ImportSchemaGen, ExampleValidator, SchemaGate.
    schema_file: str = configs.SCHEMA_FILE,
    allow_anomalies: bool = configs.ALLOW_ANOMALIES,
    # Model: Trainer, MiouEvaluator, AtomicPusher.
    with_model: bool = True,
    train_config: Optional[Dict[str, Any]] = None,
    train_steps: Optional[int] = None,
    warm_start: bool = configs.WARM_START,
    eval_split: str = configs.EVAL_SPLIT,
    eval_tta: Any = configs.EVAL_TTA,
    miou_threshold: float = configs.MIOU_THRESHOLD,
    max_regression: float = configs.MAX_REGRESSION,
    serving_dir: Optional[str] = None,
    serving_tta: Any = configs.SERVING_TTA,
    model_name: str = configs.MODEL_NAME,
    keep_versions: int = configs.KEEP_VERSIONS,
    push_tflite: Optional[str] = configs.PUSH_TFLITE,
    tflite_input_size: int = configs.TFLITE_INPUT_SIZE,
    infer_split: Optional[str] = configs.INFER_SPLIT,
    # Running.
    beam_pipeline_args: Optional[List[str]] = None,
    metadata_path: Optional[str] = None,
    enable_cache: bool = True,
) -> tfx.dsl.Pipeline:
    """Builds the pipeline.

    Args:
      pipeline_name: name in ML Metadata and on Kubeflow.
      pipeline_root: where artifacts are written (local folder or gs://...).
      voc_root, sbd_root: dataset roots (see components/voc_example_gen/component.py).
      split_recipes: output split -> data.splits recipe; default configs.SPLIT_RECIPES (unless only
        reference_tfrecords are given).
      reference_tfrecords: output split -> glob of reference-format TFRecords to import.
      layout, data_root: 'voc' (voc_root / sbd_root recipes) or a dataset at data_root: 'generic'
        (data.generic: images/, masks/, splits/<split>.txt), 'cityscapes' or 'ade20k' (data.cityscapes,
        data.ade20k); split_recipes map output splits to its split names, default configs.GENERIC_SPLIT_RECIPES.
      label_map: the dataset's classes (data.label_map.LabelMap.resolve: None = VOC, a built-in name, a JSON/YAML
        path, a LabelMap or its dict). Resolved once here; VocExampleGen, LabelStatsGen and MiouEvaluator get
        its JSON (`label_map` exec property) and the Trainer its dict (custom_config["label_map"]). None adds
        nothing anywhere (the VOC pipeline as before); with layout 'generic', the dataset's ROOT/label_map.json
        when it has one; 'cityscapes' and 'ade20k': their built-in maps.
      max_rejected_fraction, num_shards: VocExampleGen settings.
      schema_file: the curated schema (tensorflow_metadata Schema text proto) ImportSchemaGen loads and
        ExampleValidator checks every split against (default pipeline/schema/schema.pbtxt).
      allow_anomalies: with_model only: SchemaGate logs schema anomalies as a warning instead of failing
        the run before the Trainer. The data half alone (with_model=False) never fails on them; they are
        in the ExampleValidator artifact and the ingest report.
      with_model: add Transform -> Trainer -> MiouEvaluator -> AtomicPusher after the data half.
      train_config: Trainer custom_config: {"preset": NAME, <models.hparams.HParams field>: value}
        (default configs.TRAIN_CONFIG, the paper's ResNet-v2-50 setup).
      train_steps: Trainer steps (None: the preset's train_steps).
      warm_start: with_model only: the Trainer starts from the latest blessed model's weights (its base_model).
      eval_split, eval_tta, miou_threshold, max_regression: MiouEvaluator settings; the model is pushed
        only when its mIoU on `eval_split` >= miou_threshold and it does not fall more than
        max_regression below the latest blessed model.
      serving_dir, model_name, keep_versions: the Pusher writes `<serving_dir>/<model_name>/<version>/`
        (default serving_dir: `serving` beside the pipeline root).
      serving_tta: the test-time augmentation baked into the exported (and pushed) SavedModel: None (whole
        image, one scale), a models.inference.TTAConfig or its dict.
      push_tflite, tflite_input_size: with a quantization (none, float16, int8), TflitePusher converts the
        pushed model to TFLite at that square input size and writes it beside the SavedModel when it passes the
        parity gate (models/tflite_export.py; int8 calibrates on the train split, the gate reads eval_split).
      infer_split: TFX's BulkInferrer segments this split with the blessed model (signature
        serving_examples_png; output Examples with prediction/segmentation_png, height, width).
      beam_pipeline_args: passed to every Beam-based component (default configs.BEAM_PIPELINE_ARGS); where they
        run the DirectRunner in worker processes, VocExampleGen runs in threads instead (ingest_beam_args).
      metadata_path: sqlite ML Metadata file for local runs; None for orchestrators that bring their own.
      enable_cache: TFX caching (re-runs reuse unchanged components' outputs).
    """
    generic = layout not in (None, "voc")  # a LabelledDataset layout: generic, cityscapes, ade20k
    beam_pipeline_args = list(configs.BEAM_PIPELINE_ARGS if beam_pipeline_args is None else beam_pipeline_args)
    label_map = label_map_json(dataset_label_map(label_map, layout, data_root))  # resolved once, for every stage
    if split_recipes is None and not reference_tfrecords:
        split_recipes = dict(configs.GENERIC_SPLIT_RECIPES if generic else configs.SPLIT_RECIPES)
    components = []

    # Data: ingest, then validate.
    example_gen = VocExampleGen(
        voc_root=voc_root,
        sbd_root=sbd_root,
        split_recipes=split_recipes,
        reference_tfrecords=reference_tfrecords,
        max_rejected_fraction=max_rejected_fraction,
        num_shards=num_shards,
        label_map=label_map,
        layout=layout if generic else None,
        data_root=data_root if generic else None,
    )
    example_gen.with_beam_pipeline_args(ingest_beam_args(beam_pipeline_args))
    components.append(example_gen)
    statistics_gen = tfx.components.StatisticsGen(examples=example_gen.outputs["examples"])
    components.append(statistics_gen)
    # A curated schema kept in the repo, not one inferred from the very statistics it should check.
    schema_gen = tfx.components.ImportSchemaGen(schema_file=str(schema_file))
    components.append(schema_gen)
    example_validator = tfx.components.ExampleValidator(
        statistics=statistics_gen.outputs["statistics"], schema=schema_gen.outputs["schema"]
    )
    components.append(example_validator)
    label_stats = LabelStatsGen(examples=example_gen.outputs["examples"], label_map=label_map)
    components.append(label_stats)

    if with_model:
        # Schema anomalies stop the run here, before training (unless allow_anomalies).
        schema_gate = SchemaGate(anomalies=example_validator.outputs["anomalies"], allow_anomalies=allow_anomalies)
        components.append(schema_gate)
        # Dataset statistics the Trainer needs (class pixel and image counts, channel mean/std): full-pass
        # analyzers over the training split on Beam; the transform graph alone (materialize=False), no statistics
        # of the raw bytes (StatisticsGen has them).
        transform = tfx.components.Transform(
            examples=example_gen.outputs["examples"],
            schema=schema_gen.outputs["schema"],
            preprocessing_fn="models.transform.preprocessing_fn",
            splits_config=tfx.proto.SplitsConfig(analyze=[configs.TRAIN_SPLIT]),
            materialize=False,
            disable_statistics=True,
            # The analyzer cache serves incremental runs over spans; whole-split runs are reused by TFX caching.
            disable_analyzer_cache=True,
            custom_config=transform_custom_config(label_map),
        )
        transform.add_upstream_node(schema_gate)
        components.append(transform)
        # Model: train, evaluate against the latest blessed model, push only what was blessed.
        latest_blessed = tfx.dsl.Resolver(
            strategy_class=tfx.dsl.experimental.LatestBlessedModelStrategy,
            model=tfx.dsl.Channel(type=tfx.types.standard_artifacts.Model),
            model_blessing=tfx.dsl.Channel(type=tfx.types.standard_artifacts.ModelBlessing),
        ).with_id("latest_blessed_model_resolver")
        trainer = tfx.components.Trainer(
            run_fn="models.trainer_module.run_fn",
            examples=example_gen.outputs["examples"],
            transform_graph=transform.outputs["transform_graph"],
            train_args=tfx.proto.TrainArgs(splits=[configs.TRAIN_SPLIT], num_steps=train_steps),
            eval_args=tfx.proto.EvalArgs(splits=[eval_split]),
            custom_config=trainer_custom_config(train_config, serving_tta, pipeline_root, label_map=label_map),
            # warm_start: the latest blessed model seeds the weights (models/finetune.py; a new class count
            # re-initialises only the logits). Without a blessed model yet, training starts as configured.
            base_model=latest_blessed.outputs["model"] if warm_start else None,
        )
        trainer.add_upstream_node(schema_gate)
        components += [trainer, latest_blessed]
        evaluator = MiouEvaluator(
            examples=example_gen.outputs["examples"],
            model=trainer.outputs["model"],
            baseline_model=latest_blessed.outputs["model"],
            eval_split=eval_split,
            miou_threshold=miou_threshold,
            max_regression=max_regression,
            tta=eval_tta,
            label_map=label_map,
        )
        components.append(evaluator)
        pusher = AtomicPusher(
            model=trainer.outputs["model"],
            model_blessing=evaluator.outputs["blessing"],
            serving_dir=serving_dir or configs.serving_dir_beside(pipeline_root),
            model_name=model_name,
            keep_versions=keep_versions,
        )
        components.append(pusher)
        if push_tflite is not None:
            components.append(
                TflitePusher(
                    model=trainer.outputs["model"],
                    pushed_model=pusher.outputs["pushed_model"],
                    examples=example_gen.outputs["examples"],
                    quantize=push_tflite,
                    input_size=tflite_input_size,
                    train_split=configs.TRAIN_SPLIT,
                    eval_split=eval_split,
                )
            )
        if infer_split:
            components.append(bulk_inferrer(example_gen, trainer, evaluator, infer_split))

    return tfx.dsl.Pipeline(
        pipeline_name=pipeline_name,
        pipeline_root=str(pipeline_root),
        components=components,
        enable_cache=enable_cache,
        metadata_connection_config=(
            tfx.orchestration.metadata.sqlite_metadata_connection_config(str(metadata_path)) if metadata_path else None
        ),
        beam_pipeline_args=beam_pipeline_args,
    )


def bulk_inferrer(example_gen, trainer, evaluator, infer_split):
    """TFX's standard BulkInferrer on `infer_split` with the model the evaluator blessed (nothing when it did not).

    It runs the export's `serving_examples_png` signature, not `serving_examples`: a PredictionLog holds every output
    of the signature for every image, and the full answer of one 513x513 image is a 2 MB int64 map plus a 1 MB
    float32 confidence; the PNG is a few KB (docs/ARCHITECTURE.md). The output Examples are the input features plus
    `prediction/segmentation_png` (the label map as a PNG of class ids), `prediction/height` and
    `prediction/width`: ExampleGen-format records any later component or `data.tfrecord` reader can take."""
    from models.export import BULK_INFER_SIGNATURE, COMPACT_OUTPUTS

    columns = [tfx.proto.PredictOutputCol(output_key=key, output_column=f"prediction/{key}") for key in COMPACT_OUTPUTS]
    return tfx.components.BulkInferrer(
        examples=example_gen.outputs["examples"],
        model=trainer.outputs["model"],
        model_blessing=evaluator.outputs["blessing"],
        data_spec=tfx.proto.DataSpec(example_splits=[infer_split]),
        model_spec=tfx.proto.ModelSpec(model_signature_name=[BULK_INFER_SIGNATURE]),
        output_example_spec=tfx.proto.OutputExampleSpec(
            output_columns_spec=[
                tfx.proto.OutputColumnsSpec(predict_output=tfx.proto.PredictOutput(output_columns=columns))
            ]
        ),
    )


def ingest_beam_args(beam_pipeline_args):
    """VocExampleGen's own Beam arguments, which TFX appends to the pipeline's (so they win): threads
    (configs.INGEST_BEAM_PIPELINE_ARGS) where the pipeline's DirectRunner would start worker processes; none
    for any other running mode or runner, which the ingest then shares with the rest of the pipeline."""
    from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions

    options = PipelineOptions(list(beam_pipeline_args))
    if not _is_direct_runner(options) or options.view_as(DirectOptions).direct_running_mode != "multi_processing":
        return []
    return list(configs.INGEST_BEAM_PIPELINE_ARGS)


def _is_direct_runner(options):
    from apache_beam.options.pipeline_options import StandardOptions

    return options.view_as(StandardOptions).runner in (None, "DirectRunner", "direct", "BundleBasedDirectRunner")


def dataset_label_map(label_map, layout, data_root):
    """The label map a run uses: the one given, else the dataset layout's own (data.layouts.layout_label_map),
    else None (VOC)."""
    from data.layouts import layout_label_map

    return label_map if label_map is not None else layout_label_map(layout, data_root)


def transform_custom_config(label_map):
    """The Transform's custom_config (models.transform.transform_config): the label map's (JSON, None = VOC) class
    count and ignore label, which the analyzers' bins and the mask check follow."""
    from data.label_map import LabelMap
    from models.transform import transform_config

    resolved = LabelMap.resolve(json.loads(label_map) if label_map is not None else None)
    return transform_config(resolved.num_classes, resolved.ignore_label)


def trainer_custom_config(train_config, serving_tta, pipeline_root, label_map=None):
    """The Trainer's custom_config: hyper-parameters, the export's TTA and where a killed run's state survives
    (models/trainer_module.py); with a `label_map` (anything label_map_json takes; None = VOC adds nothing) also
    the label map's dict under "label_map" (the model's num_classes and the export's classes)."""
    from models.inference import TTAConfig

    config = dict(configs.TRAIN_CONFIG if train_config is None else train_config)
    config[trainer_module.SERVING_TTA_KEY] = (
        None if serving_tta is None else TTAConfig.coerce(serving_tta).to_json_dict()
    )
    config[trainer_module.RESUME_ROOT_KEY] = posixpath.join(str(pipeline_root), configs.TRAINING_STATE_DIRNAME)
    label_map = label_map_json(label_map)
    if label_map is not None:
        config[trainer_module.LABEL_MAP_KEY] = json.loads(label_map)
    return config


def run_local(pipeline: tfx.dsl.Pipeline) -> None:
    """Runs the pipeline in this process with LocalDagRunner (raises when a component fails)."""
    if pipeline.metadata_connection_config is None:
        raise ValueError("a local run needs an ML Metadata store: build the pipeline with metadata_path=...")
    with _no_tfx_sdist_for_the_direct_runner(pipeline.beam_pipeline_args):
        tfx.orchestration.LocalDagRunner().run(pipeline)


@contextlib.contextmanager
def _no_tfx_sdist_for_the_direct_runner(beam_pipeline_args):
    """TFX builds a throw-away sdist of itself before every Beam component so that remote workers (Dataflow,
    Flink) can import TFX: ~1.3 s per component. The DirectRunner's workers run in this Python environment and never
    install it, so a local run with the DirectRunner skips that step; any other runner keeps it."""
    from apache_beam.options.pipeline_options import PipelineOptions
    from tfx.utils import dependency_utils

    if not _is_direct_runner(PipelineOptions(list(beam_pipeline_args or []))):
        yield
        return
    original = dependency_utils.make_beam_dependency_flags
    dependency_utils.make_beam_dependency_flags = list
    try:
        yield
    finally:
        dependency_utils.make_beam_dependency_flags = original


def compile_kubeflow(pipeline: tfx.dsl.Pipeline, image: str, output_path: str) -> str:
    """Compiles the pipeline to a Kubeflow Pipelines v2 PipelineJob JSON (offline) and returns its path."""
    output_dir, output_filename = os.path.split(os.path.abspath(output_path))
    os.makedirs(output_dir, exist_ok=True)
    runner = tfx.orchestration.experimental.KubeflowV2DagRunner(
        config=tfx.orchestration.experimental.KubeflowV2DagRunnerConfig(default_image=image),
        output_dir=output_dir,
        output_filename=output_filename,
    )
    runner.run(pipeline, write_out=True)
    return os.path.join(output_dir, output_filename)
