"""`deeplab compile --target kubeflow` writes a Kubeflow Pipelines v2 PipelineJob offline."""

import json
import os

import pytest

import runner
from tests.helpers import PIPELINE_STAGES

RESOLVER = "latest_blessed_model_resolver"
# On Kubeflow the resolver compiles to two nodes, one per resolved channel.
COMPONENTS = sorted(
    [stage for stage in PIPELINE_STAGES if stage != RESOLVER]
    + [f"{RESOLVER}-model-blessing-resolver", f"{RESOLVER}-model-resolver"]
)


def test_kubeflow_json_names_every_component(tmp_path):
    out = tmp_path / "pipeline.json"
    assert (
        runner.main(
            [
                "compile",
                "--target",
                "kubeflow",
                "--image",
                "gcr.io/proj/deeplab-tfx:1",
                "--output",
                str(out),
                "--voc-root",
                "gs://bucket/VOCdevkit/VOC2012",
                "--sbd-root",
                "gs://bucket/benchmark_RELEASE",
                "--train-recipe",
                "train_aug",
                "--pipeline-root",
                "gs://bucket/root",
                "--beam-arg=--runner=DataflowRunner",
            ]
        )
        == 0
    )
    job = json.load(open(out))
    spec = job["pipelineSpec"]
    assert sorted(spec["root"]["dag"]["tasks"]) == COMPONENTS
    executors = spec["deploymentSpec"]["executors"]
    example_gen = executors["VocExampleGen_executor"]["container"]
    assert example_gen["image"] == "gcr.io/proj/deeplab-tfx:1"
    assert "components.voc_example_gen.executor.Executor" in example_gen["args"]
    assert "--runner=DataflowRunner" in example_gen["args"]
    assert "components.label_stats.executor.Executor" in executors["LabelStatsGen_executor"]["container"]["args"]
    assert job["runtimeConfig"]["gcsOutputDirectory"] == "gs://bucket/root"
    assert "models.trainer_module.run_fn" in json.dumps(spec["root"]["dag"]["tasks"]["Trainer"]["inputs"])
    # The Transform (models.transform.preprocessing_fn, train split only, graph only) feeds the Trainer its graph.
    transform = spec["root"]["dag"]["tasks"]["Transform"]
    assert "models.transform.preprocessing_fn" in json.dumps(transform["inputs"])
    splits = json.loads(
        transform["inputs"]["parameters"]["splits_config"]["runtimeValue"]["constantValue"]["stringValue"]
    )
    assert splits == {"analyze": ["train"]}
    assert "SchemaGate" in transform["dependentTasks"]  # after the schema gate
    outputs = spec["components"]["Transform"]["outputDefinitions"]["artifacts"]
    assert set(outputs) == {"transform_graph"}  # not materialized, no analyzer cache
    assert transform["cachingOptions"].get("enableCache") is True
    trainer_artifacts = spec["root"]["dag"]["tasks"]["Trainer"]["inputs"]["artifacts"]
    assert trainer_artifacts["transform_graph"]["taskOutputArtifact"] == {
        "outputArtifactKey": "transform_graph",
        "producerTask": "Transform",
    }
    assert "--runner=DataflowRunner" in executors["Transform_executor"]["container"]["args"]
    # The push directory defaults to serving/ beside the pipeline root, in the bucket.
    assert "gs://bucket/serving/deeplab" in json.dumps(spec["root"]["dag"]["tasks"]["AtomicPusher"]["inputs"])
    # The Trainer keeps its resumable state on the pipeline root (a killed task resumes there) and bakes
    # the chosen serving TTA into the export; ImportSchemaGen reads the schema inside the image.
    trainer_inputs = json.dumps(spec["root"]["dag"]["tasks"]["Trainer"]["inputs"])
    assert "gs://bucket/root/_training_state" in trainer_inputs and "serving_tta" in trainer_inputs
    assert "/pipeline/pipeline/schema/schema.pbtxt" in json.dumps(spec["root"]["dag"]["tasks"]["ImportSchemaGen"])
    # The split recipes and roots travel as parameters of the ExampleGen task.
    params = json.dumps(spec["root"]["dag"]["tasks"]["VocExampleGen"]["inputs"])
    assert "train_aug" in params and "gs://bucket/VOCdevkit/VOC2012" in params


def test_compile_needs_a_data_location(tmp_path):
    with pytest.raises(SystemExit, match="--voc-root"):
        runner.main(["compile", "--image", "img", "--output", str(tmp_path / "p.json")])


def test_run_without_imagenet_weights_fails_before_ingesting(tmp_path, monkeypatch):
    monkeypatch.setenv("DEEPLAB_WEIGHTS_DIR", str(tmp_path))
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(SystemExit, match=r"(?s)resnet50v2_weights_tf_dim_ordering_tf_kernels_notop\.h5.*weights=null"):
        runner.main(["run", "--voc-root", str(tmp_path), "--output-dir", str(tmp_path / "out")])
    assert not (tmp_path / "out" / "pipeline_root").exists()


def test_demo_reuses_its_synthetic_data_so_the_pipeline_cache_holds(tmp_path):
    from pipeline.demo import demo_make_data

    root = demo_make_data(str(tmp_path), 3, 2, 0)
    val_list = os.path.join(root, "ImageSets", "Segmentation", "val.txt")
    before = os.stat(val_list).st_mtime_ns
    assert demo_make_data(str(tmp_path), 3, 2, 0) == root
    assert os.stat(val_list).st_mtime_ns == before  # untouched: the ExampleGen fingerprint is unchanged
    demo_make_data(str(tmp_path), 4, 2, 0)  # other settings: written anew
    assert len(open(os.path.join(root, "ImageSets", "Segmentation", "train.txt")).read().split()) == 4


def test_flags_become_one_run_options_that_maps_onto_create_pipeline():
    import inspect

    from pipeline import configs
    from pipeline.cli import options_from_args
    from pipeline.pipeline import create_pipeline

    args = runner.build_parser("run").parse_args(
        [
            "run",
            "--voc-root",
            "/voc",
            "--train-recipe",
            "train_aug",
            "--beam-arg=--direct_num_workers=4",
            "--set",
            "weights=null",
            "--miou-threshold",
            "0.3",
            "--no-cache",
        ]
    )
    options = options_from_args(args, with_model=True)
    kwargs = options.pipeline_kwargs()
    assert set(kwargs) <= set(inspect.signature(create_pipeline).parameters)
    assert kwargs["split_recipes"] == {configs.TRAIN_SPLIT: "train_aug"} and kwargs["voc_root"] == "/voc"
    assert kwargs["beam_pipeline_args"] == configs.BEAM_PIPELINE_ARGS + ["--direct_num_workers=4"]
    assert kwargs["miou_threshold"] == 0.3 and kwargs["train_config"]["weights"] is None
    assert kwargs["with_model"] and not kwargs["enable_cache"] and kwargs["model_name"] == configs.MODEL_NAME
    local = options.local()
    assert (local.pipeline_root, local.metadata_path) == configs.local_paths(configs.OUTPUT_DIR)


def test_the_ingest_runs_in_threads_where_the_direct_runner_would_start_worker_processes():
    from pipeline import configs
    from pipeline.pipeline import create_pipeline, ingest_beam_args

    threads = configs.INGEST_BEAM_PIPELINE_ARGS
    assert ingest_beam_args(configs.BEAM_PIPELINE_ARGS) == threads  # the default: worker processes
    assert ingest_beam_args(configs.BEAM_PIPELINE_ARGS + ["--direct_num_workers=4"]) == threads
    assert ingest_beam_args(configs.DEMO_BEAM_ARGS) == []
    assert ingest_beam_args(configs.BEAM_PIPELINE_ARGS + ["--direct_running_mode=in_memory"]) == []
    assert ingest_beam_args(configs.BEAM_PIPELINE_ARGS + ["--runner=DataflowRunner", "--project=p"]) == []

    def running_modes(pipeline):
        from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions

        return {
            c.id: PipelineOptions(c.executor_spec.beam_pipeline_args).view_as(DirectOptions).direct_running_mode
            for c in pipeline.components
            if hasattr(c.executor_spec, "beam_pipeline_args")
        }

    modes = running_modes(create_pipeline(voc_root="/voc", with_model=False))
    # TFX puts the pipeline's arguments first and the component's after them: the component's win.
    assert modes.pop("VocExampleGen") == "multi_threading"
    assert set(modes.values()) == {"multi_processing"}
    modes = running_modes(create_pipeline(voc_root="/voc", with_model=False, beam_pipeline_args=configs.DEMO_BEAM_ARGS))
    assert set(modes.values()) == {"in_memory"}


def test_warm_start_feeds_the_latest_blessed_model_to_the_trainer():
    from pipeline.pipeline import create_pipeline

    def trainer_of(**kwargs):
        pipeline = create_pipeline(pipeline_root="gs://bucket/root", voc_root="gs://bucket/VOC2012", **kwargs)
        return next(c for c in pipeline.components if c.id == "Trainer")

    assert "base_model" not in trainer_of().inputs
    trainer = trainer_of(warm_start=True)
    assert trainer.inputs["base_model"].producer_component_id == RESOLVER
    args = runner.build_parser("run").parse_args(["run", "--voc-root", "x", "--output-dir", "y", "--warm-start"])
    assert args.warm_start and not runner.build_parser("run").parse_args(["run", "--output-dir", "y"]).warm_start


def test_local_direct_runner_runs_skip_the_tfx_sdist_other_runners_keep_it():
    from tfx.utils import dependency_utils

    from pipeline.pipeline import _no_tfx_sdist_for_the_direct_runner

    original = dependency_utils.make_beam_dependency_flags
    for args in ([], ["--direct_running_mode=multi_processing", "--direct_num_workers=2"], ["--runner=DirectRunner"]):
        with _no_tfx_sdist_for_the_direct_runner(args):
            assert dependency_utils.make_beam_dependency_flags(["--a"]) == ["--a"]
        assert dependency_utils.make_beam_dependency_flags is original
    with _no_tfx_sdist_for_the_direct_runner(["--runner=DataflowRunner", "--project=p"]):
        assert dependency_utils.make_beam_dependency_flags is original
