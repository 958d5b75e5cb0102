"""Gating in a real TFX pipeline (LocalDagRunner): ImportExampleGen -> MiouEvaluator (baseline from
LatestBlessedModelStrategy) -> standard Pusher. A good model is blessed and pushed; a degraded
second model is compared with it, not blessed, and not pushed."""

import os

from tests.test_eval_support import colour_table, save_colour_model, write_examples


def _pipeline(root, model_uri, push_dir):
    from tfx import v1 as tfx

    from components.miou_evaluator.component import MiouEvaluator

    example_gen = tfx.components.ImportExampleGen(
        input_base=str(root / "data"),
        input_config=tfx.proto.Input(
            splits=[
                tfx.proto.Input.Split(name="train", pattern="train/*"),
                tfx.proto.Input.Split(name="val", pattern="val/*"),
            ]
        ),
    )
    model = tfx.dsl.Importer(source_uri=model_uri, artifact_type=tfx.types.standard_artifacts.Model).with_id(
        "model_importer"
    )
    baseline = tfx.dsl.Resolver(
        strategy_class=tfx.dsl.experimental.LatestBlessedModelStrategy,
        model=tfx.dsl.Channel(type=tfx.types.standard_artifacts.Model),
        model_blessing=tfx.dsl.Channel(type=tfx.types.standard_artifacts.ModelBlessing),
    ).with_id("latest_blessed_model_resolver")
    evaluator = MiouEvaluator(
        examples=example_gen.outputs["examples"],
        model=model.outputs["result"],
        baseline_model=baseline.outputs["model"],
        miou_threshold=0.5,
        max_regression=0.01,
        num_gallery=1,
    )
    pusher = tfx.components.Pusher(
        model=model.outputs["result"],
        model_blessing=evaluator.outputs["blessing"],
        push_destination=tfx.proto.PushDestination(
            filesystem=tfx.proto.PushDestination.Filesystem(base_directory=str(push_dir))
        ),
    )
    return tfx.dsl.Pipeline(
        pipeline_name="eval_gate_test",
        pipeline_root=str(root / "pipeline_root"),
        components=[example_gen, model, baseline, evaluator, pusher],
        metadata_connection_config=tfx.orchestration.metadata.sqlite_metadata_connection_config(
            str(root / "metadata.sqlite")
        ),
        beam_pipeline_args=["--direct_running_mode=in_memory", "--direct_num_workers=1"],
        enable_cache=True,
    )  # the second run reuses the ExampleGen output


def _blessings(root):
    import ml_metadata as mlmd
    from tfx import v1 as tfx

    store = mlmd.MetadataStore(
        tfx.orchestration.metadata.sqlite_metadata_connection_config(str(root / "metadata.sqlite"))
    )
    out = []
    for a in sorted(store.get_artifacts_by_type("ModelBlessing"), key=lambda a: a.id):
        props = {
            k: (v.int_value if v.HasField("int_value") else v.string_value) for k, v in a.custom_properties.items()
        }
        out.append((a.uri, props))
    return out


def test_good_model_pushed_degraded_model_not(tmp_path):
    from tfx import v1 as tfx

    write_examples(str(tmp_path / "data" / "train"), 2, seed0=100, gzip=False, name="data.tfrecord")
    write_examples(str(tmp_path / "data" / "val"), 6, gzip=False, name="data.tfrecord")
    good = save_colour_model(tmp_path / "models" / "good" / "Format-Serving", colour_table())
    bad = save_colour_model(tmp_path / "models" / "degraded" / "Format-Serving", colour_table(swap=(8, 12)))
    push_dir = tmp_path / "push"

    tfx.orchestration.LocalDagRunner().run(_pipeline(tmp_path, os.path.dirname(good), push_dir))
    versions = os.listdir(push_dir)
    assert len(versions) == 1
    with open(os.path.join(good, "saved_model.pb"), "rb") as f:
        good_pb = f.read()
    with open(push_dir / versions[0] / "saved_model.pb", "rb") as f:
        assert f.read() == good_pb

    tfx.orchestration.LocalDagRunner().run(_pipeline(tmp_path, os.path.dirname(bad), push_dir))
    assert os.listdir(push_dir) == versions, "the degraded model must not be pushed"

    (first_uri, first), (second_uri, second) = _blessings(tmp_path)
    assert first["blessed"] == 1 and "baseline_model" not in first
    assert os.path.exists(os.path.join(first_uri, "BLESSED"))
    assert first["current_model"].endswith("good")
    assert second["blessed"] == 0 and os.path.exists(os.path.join(second_uri, "NOT_BLESSED"))
    assert second["current_model"].endswith("degraded") and second["baseline_model"].endswith("good")
    assert second["current_model_id"] != second["baseline_model_id"] == first["current_model_id"]
    assert "NOT BLESSED" in second["blessing_message"] and "baseline mIoU 1.0000" in second["blessing_message"]
    # The evaluation artifact of the second run holds the report with both models.
    import json

    eval_dirs = sorted(
        (tmp_path / "pipeline_root" / "MiouEvaluator" / "evaluation").iterdir(), key=lambda p: int(p.name)
    )
    result = json.loads((eval_dirs[-1] / "evaluation.json").read_text())
    assert result["baseline"]["metrics"]["miou"] == 1.0 and result["metrics"]["miou"] < 0.99
    assert (eval_dirs[-1] / "index.html").is_file()
