"""Data validation that can fail the run: the curated schema (pipeline/schema/schema.pbtxt) accepts what
ingestion writes (synthetic demo data, real VOC), examples that break it stop the pipeline before the
Trainer (SchemaGate) unless anomalies are allowed, and `deeplab schema` proposes a schema with a diff."""

import os

import numpy as np
import pytest

import runner
from data import tfrecord as tfr
from data.splits import SampleRef
from data.synthetic import generate_voc_dataset
from data.voc import VocDevkit
from pipeline import configs

TALL = 8200  # > the schema's image/height max (8192)


def _validate(serialized_examples):
    """Anomalies of the checked-in schema on the statistics of these examples (tfdv in memory, no Beam)."""
    import tensorflow_data_validation as tfdv
    from tensorflow_data_validation.statistics import stats_impl
    from tfx_bsl.coders import example_coder

    from pipeline.schema_cli import load_schema

    batch = example_coder.ExamplesToRecordBatchDecoder().DecodeBatch(serialized_examples)
    stats = stats_impl.generate_statistics_in_memory(batch)
    return tfdv.validate_statistics(stats, load_schema(configs.SCHEMA_FILE)), stats


def _encoded_split(voc_root, split):
    voc = VocDevkit(voc_root)
    return [
        tfr.example_bytes(tfr.load_sample(SampleRef(i, "voc", voc.image_path(i), voc.mask_path(i))))
        for i in voc.split_ids(split)
    ]


def test_schema_file_ships_with_the_package():
    assert os.path.isfile(configs.SCHEMA_FILE)
    assert configs.SCHEMA_FILE == os.path.join(
        os.path.dirname(os.path.abspath(configs.__file__)), "schema", "schema.pbtxt"
    )
    setup = open(os.path.join(os.path.dirname(os.path.dirname(configs.SCHEMA_FILE)), "..", "setup.py")).read()
    assert '"pipeline": ["schema/*.pbtxt"]' in setup


def test_curated_schema_constraints():
    from pipeline.schema_cli import load_schema

    schema = load_schema(configs.SCHEMA_FILE)
    features = {f.name: f for f in schema.feature}
    assert sorted(features) == sorted(
        [
            tfr.IMAGE_ENCODED,
            tfr.IMAGE_FILENAME,
            tfr.IMAGE_FORMAT,
            tfr.IMAGE_HEIGHT,
            tfr.IMAGE_WIDTH,
            tfr.IMAGE_CHANNELS,
            tfr.LABEL_ENCODED,
            tfr.LABEL_FORMAT,
        ]
    )
    for f in features.values():
        assert f.presence.min_fraction == 1.0 and (f.value_count.min, f.value_count.max) == (1, 1), f.name
    domains = {d.name: list(d.value) for d in schema.string_domain}
    assert domains[features[tfr.IMAGE_FORMAT].domain] == ["jpeg", "png"]
    assert domains[features[tfr.LABEL_FORMAT].domain] == ["png"]
    assert (features[tfr.IMAGE_CHANNELS].int_domain.min, features[tfr.IMAGE_CHANNELS].int_domain.max) == (3, 3)
    assert (features[tfr.IMAGE_HEIGHT].int_domain.min, features[tfr.IMAGE_HEIGHT].int_domain.max) == (1, 8192)


def test_synthetic_demo_data_has_no_anomalies(tmp_path):
    # The demo's image sizes (configs.DEMO_MIN_SIZE..DEMO_MAX_SIZE), JPEG images, palette masks.
    voc_root = generate_voc_dataset(
        tmp_path,
        num_train=4,
        num_val=2,
        seed=configs.DEMO_SEED,
        min_size=configs.DEMO_MIN_SIZE,
        max_size=configs.DEMO_MAX_SIZE,
    )
    for split in ("train", "val"):
        anomalies, _ = _validate(_encoded_split(voc_root, split))
        assert dict(anomalies.anomaly_info) == {}, split


def test_converted_png_images_have_no_anomalies():
    # Images in other modes are written as RGB PNGs: image/format "png" is in the domain.
    rng = np.random.default_rng(0)
    example = tfr.reference_record_to_example(
        tfr.reference_example(rng.integers(0, 256, (9, 7, 3), dtype=np.uint8), np.zeros((9, 7), np.uint8))
    )
    assert example.features.feature[tfr.IMAGE_FORMAT].bytes_list.value == [b"png"]
    anomalies, _ = _validate([example.SerializeToString()])
    assert dict(anomalies.anomaly_info) == {}


def test_real_voc_sample_has_no_anomalies(voc_sample_root):
    anomalies, stats = _validate(_encoded_split(str(voc_sample_root), "trainval"))
    assert stats.datasets[0].num_examples > 0
    assert dict(anomalies.anomaly_info) == {}


def test_schema_catches_what_it_should():
    rng = np.random.default_rng(1)
    good = tfr.reference_record_to_example(
        tfr.reference_example(rng.integers(0, 256, (9, 7, 3), dtype=np.uint8), np.zeros((9, 7), np.uint8))
    )
    bad_format = type(good).FromString(good.SerializeToString())
    bad_format.features.feature[tfr.LABEL_FORMAT].bytes_list.value[0] = b"jpeg"
    missing = type(good).FromString(good.SerializeToString())
    del missing.features.feature[tfr.IMAGE_FILENAME]
    anomalies, _ = _validate([good.SerializeToString(), bad_format.SerializeToString(), missing.SerializeToString()])
    assert sorted(anomalies.anomaly_info) == [tfr.IMAGE_FILENAME, tfr.LABEL_FORMAT]


def test_kubeflow_trainer_waits_for_the_gate(tmp_path):
    import json

    from pipeline.pipeline import compile_kubeflow, create_pipeline

    pipeline = create_pipeline(
        pipeline_root="gs://bucket/root", voc_root="gs://bucket/VOC2012", train_config={"preset": "demo"}
    )
    tasks = json.load(open(compile_kubeflow(pipeline, "img", str(tmp_path / "p.json"))))["pipelineSpec"]["root"]["dag"][
        "tasks"
    ]
    assert "SchemaGate" in tasks["Trainer"]["dependentTasks"]
    assert "SchemaGen" not in tasks and "schema.pbtxt" in json.dumps(tasks["ImportSchemaGen"]["inputs"])
    assert "ExampleValidator" in tasks["SchemaGate"]["dependentTasks"]


# ---------------------------------------------------------------------------------------------- end to end
def _write_reference_split(path, sizes, seed):
    import tensorflow as tf

    rng = np.random.default_rng(seed)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for height, width in sizes:
            image = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
            mask = rng.choice(np.array([0, 3, 255], np.uint8), size=(height, width))
            writer.write(tfr.reference_example(image, mask).SerializeToString())


@pytest.fixture(scope="module")
def bad_data_runs(tmp_path_factory, in_process_beam):
    """One local run folder, three runs on data whose train split holds an image taller than the schema allows:
    the data half (ingest), the whole pipeline (fails at the gate), the pipeline with allow_anomalies up to the gate."""
    from tfx import v1 as tfx
    from tfx.orchestration.pipeline import RunOptions

    from pipeline.cli import RunOptions as CliRunOptions
    from pipeline.cli import run_pipeline
    from pipeline.pipeline import create_pipeline, run_local
    from pipeline.report import latest_outputs

    work = tmp_path_factory.mktemp("schema_e2e")
    _write_reference_split(work / "train.tfrecords", [(20, 24), (TALL, 2), (22, 18)], seed=0)
    _write_reference_split(work / "val.tfrecords", [(21, 19), (18, 20)], seed=1)
    references = {"train": str(work / "train.tfrecords"), "val": str(work / "val.tfrecords")}
    out = work / "out"
    pipeline_root, metadata_path = configs.local_paths(str(out))
    beam = list(configs.DEMO_BEAM_ARGS)

    ingest_report = run_pipeline(CliRunOptions(output_dir=str(out), reference_tfrecords=references, beam_args=beam))

    def pipeline(allow_anomalies):
        return create_pipeline(
            pipeline_root=pipeline_root,
            metadata_path=metadata_path,
            reference_tfrecords=references,
            beam_pipeline_args=beam,
            with_model=True,
            train_config={"preset": "demo", "precision": "float32"},
            train_steps=1,
            miou_threshold=0.0,
            allow_anomalies=allow_anomalies,
        )

    with pytest.raises(Exception) as failure:
        run_local(pipeline(allow_anomalies=False))
    after_failure = latest_outputs(metadata_path, configs.PIPELINE_NAME)

    # allow_anomalies: run the same pipeline only up to the gate (a partial run; the Trainer is not what is tested).
    allowed = pipeline(allow_anomalies=True)
    tfx.orchestration.LocalDagRunner().run(allowed, run_options=RunOptions(to_nodes=["SchemaGate"]))
    after_allowed = latest_outputs(metadata_path, configs.PIPELINE_NAME)
    return dict(
        out=out,
        pipeline_root=pipeline_root,
        metadata_path=metadata_path,
        ingest_report=ingest_report,
        failure=failure.value,
        after_failure=after_failure,
        after_allowed=after_allowed,
    )


def test_ingest_reports_anomalies_without_failing(bad_data_runs):
    report = bad_data_runs["ingest_report"]
    assert report["status"] == "ok"
    assert report["splits"]["train"]["examples"] == 3
    assert any(a.startswith(f"{tfr.IMAGE_HEIGHT}: ") for a in report["splits"]["train"]["schema_anomalies"])
    assert report["splits"]["val"]["schema_anomalies"] == []
    # The schema artifact is the imported curated file.
    schema = open(os.path.join(report["artifacts"]["schema"], "schema.pbtxt")).read()
    assert "max: 8192" in schema and 'value: "jpeg"' in schema


def test_anomalies_stop_the_run_before_the_trainer(bad_data_runs):
    from components.schema_gate.executor import SchemaAnomalyError

    error = bad_data_runs["failure"]
    message = str(error)
    print(f"{type(error).__name__}: {message}")
    assert isinstance(error, SchemaAnomalyError) or "SchemaAnomalyError" in message
    assert "split 'train', feature 'image/height'" in message
    assert "'val'" not in message  # only the split with anomalies is named
    assert "pipeline/schema/schema.pbtxt" in message and "deeplab schema" in message and "--allow-anomalies" in message
    outputs = bad_data_runs["after_failure"]
    assert "ExampleValidator" in outputs and "SchemaGate" not in outputs
    assert "Trainer" not in outputs
    assert not os.path.exists(os.path.join(bad_data_runs["pipeline_root"], "Trainer"))


def test_allow_anomalies_lets_the_gate_pass(bad_data_runs):
    import json

    from components.schema_gate.executor import RESULT_FILE
    from pipeline.report import artifact_properties

    outputs = bad_data_runs["after_allowed"]
    result_uri = outputs["SchemaGate"]["result"][0]
    result = json.load(open(os.path.join(result_uri, RESULT_FILE)))
    assert result["allow_anomalies"] is True and result["num_anomalies"] >= 1
    assert [a["feature"] for a in result["anomalies"]["train"]] == [tfr.IMAGE_HEIGHT]
    assert artifact_properties(bad_data_runs["metadata_path"], result_uri)["blessed"] == 0
    assert "Trainer" not in outputs


def test_schema_command_prints_a_diff(bad_data_runs, capsys, tmp_path):
    # --output-dir: the latest StatisticsGen artifact of the run, found in ML Metadata.
    assert runner.main(["schema", "--output-dir", str(bad_data_runs["out"])]) == 0
    captured = capsys.readouterr()
    assert f"--- {configs.SCHEMA_FILE}" in captured.err and "+++ proposed" in captured.err
    assert "image/height" in captured.err and "Out-of-range" in captured.err
    assert f"+  max: {TALL}" in captured.err.replace("    ", "  ") or f"+    max: {TALL}" in captured.err
    assert 'name: "image/height"' in captured.out  # the proposal itself on stdout

    # --statistics (a split folder) and --out / --write on a copy of the schema.
    statistics = bad_data_runs["ingest_report"]["artifacts"]["statistics"]
    schema_copy = tmp_path / "schema.pbtxt"
    schema_copy.write_text(open(configs.SCHEMA_FILE).read())
    assert (
        runner.main(
            [
                "schema",
                "--statistics",
                os.path.join(statistics, "Split-val"),
                "--schema",
                str(schema_copy),
                "--out",
                str(tmp_path / "proposed.pbtxt"),
            ]
        )
        == 0
    )
    captured = capsys.readouterr()
    assert "no change to" in captured.err and captured.out.splitlines()[0].startswith("log: ")
    assert len(captured.out.splitlines()) == 1  # no schema printed when nothing changed
    assert runner.main(["schema", "--statistics", statistics, "--schema", str(schema_copy), "--write"]) == 0
    assert f"max: {TALL}" in schema_copy.read_text()
    assert open(configs.SCHEMA_FILE).read().count("max: 8192") == 2  # the checked-in file is untouched
