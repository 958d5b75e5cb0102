"""The gate sees every image: skipped evaluation records above max_eval_skipped_fraction (default 0.0)
mean NOT_BLESSED, with the count, the fraction, the threshold and the reasons in evaluation.json, the
report and the blessing message. Tiny colour-coded data and model from tests/test_eval_support.py."""

import json
import os

import pytest

from components.miou_evaluator.evaluate import decide_blessing
from tests.test_eval_support import colour_table, save_colour_model, write_examples

N_GOOD = 7  # + 1 corrupt record: 1 of 8 skipped, fraction 0.125


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("gate_skipped")
    write_examples(str(root / "examples" / "Split-val"), N_GOOD, extra_records=[b"not an example"])
    save_colour_model(root / "model" / "Format-Serving", colour_table())  # a Trainer-style Model artifact dir
    return root


def _run_executor(root, name, **exec_properties):
    """Runs the MiouEvaluator executor (in-process Beam) -> (evaluation dir, blessing artifact)."""
    from tfx.types import artifact_utils, standard_artifacts

    from components.miou_evaluator import spec
    from components.miou_evaluator.executor import Executor

    examples = standard_artifacts.Examples()
    examples.uri = str(root / "examples")
    examples.split_names = artifact_utils.encode_split_names(["val"])
    model = standard_artifacts.Model()
    model.uri = str(root / "model")
    evaluation = standard_artifacts.ModelEvaluation()
    evaluation.uri = str(root / name / "evaluation")
    blessing = standard_artifacts.ModelBlessing()
    blessing.uri = str(root / name / "blessing")
    for artifact in (evaluation, blessing):
        os.makedirs(artifact.uri, exist_ok=True)
    props = {"eval_split": "val", "miou_threshold": 0.0, "max_regression": 0.0, "tta": "null", "num_gallery": 1}
    props.update(exec_properties)
    Executor().Do(
        {spec.EXAMPLES_KEY: [examples], spec.MODEL_KEY: [model]},
        {spec.EVALUATION_KEY: [evaluation], spec.BLESSING_KEY: [blessing]},
        props,
    )
    return evaluation.uri, blessing


def test_one_corrupt_record_is_not_blessed_by_default(setup):
    from components.miou_evaluator import spec

    assert spec.DEFAULT_MAX_EVAL_SKIPPED_FRACTION == 0.0
    eval_dir, blessing = _run_executor(setup, "default")  # no max_eval_skipped_fraction: the default

    result = json.loads(open(os.path.join(eval_dir, "evaluation.json")).read())
    assert result["metrics"]["miou"] == 1.0  # the mIoU check alone would pass
    b, d = result["blessing"], result["data"]
    assert b["blessed"] is False
    assert (b["images_skipped"], b["images_total"], b["skipped_fraction"]) == (1, N_GOOD + 1, 0.125)
    assert b["max_eval_skipped_fraction"] == 0.0 and b["skipped_by_reason"] == {"bad_record": 1}
    assert (d["images_evaluated"], d["images_skipped"], d["images_total"]) == (N_GOOD, 1, N_GOOD + 1)
    assert d["skipped_fraction"] == 0.125 and d["max_eval_skipped_fraction"] == 0.0
    assert d["skipped_by_reason"] == {"bad_record": 1} and d["skipped"][0]["reason"] == "bad_record"
    check = {c["name"]: c for c in b["checks"]}["skipped_records"]
    assert check["passed"] is False
    for words in ("1 of 8 evaluation records skipped", "0.1250", "max_eval_skipped_fraction 0.0000", "bad_record 1"):
        assert words in check["detail"] and words in b["message"]

    # The ModelBlessing says NOT_BLESSED, and why.
    assert blessing.get_int_custom_property("blessed") == 0
    assert os.path.exists(os.path.join(blessing.uri, "NOT_BLESSED"))
    assert not os.path.exists(os.path.join(blessing.uri, "BLESSED"))
    message = blessing.get_string_custom_property("blessing_message")
    assert message.startswith("NOT BLESSED") and "1 of 8 evaluation records skipped" in message
    assert "max_eval_skipped_fraction 0.0000" in message and "bad_record" in message

    page = open(os.path.join(eval_dir, "index.html")).read()
    assert "NOT BLESSED" in page and "1 of 8 records (12.50%) skipped" in page
    assert "max_eval_skipped_fraction 0.0" in page and "bad_record" in page


def test_blessed_when_the_skipped_fraction_is_allowed(setup):
    eval_dir, blessing = _run_executor(setup, "allowed", max_eval_skipped_fraction=0.2)

    result = json.loads(open(os.path.join(eval_dir, "evaluation.json")).read())
    assert result["blessing"]["blessed"] is True
    assert result["blessing"]["max_eval_skipped_fraction"] == 0.2 and result["data"]["max_eval_skipped_fraction"] == 0.2
    check = {c["name"]: c for c in result["blessing"]["checks"]}["skipped_records"]
    assert check["passed"] is True and "(fraction 0.1250) <= max_eval_skipped_fraction 0.2000" in check["detail"]
    assert blessing.get_int_custom_property("blessed") == 1
    assert os.path.exists(os.path.join(blessing.uri, "BLESSED"))
    assert "bad_record 1" in blessing.get_string_custom_property("blessing_message")


@pytest.mark.parametrize(
    "evaluated, skipped, allowed, blessed",
    [
        (7, 1, 0.125, True),  # 1/8 == 0.125: equal to the threshold passes
        (7, 1, 0.12, False),  # 0.125 > 0.12
        (3, 1, 0.25, True),  # 1/4 == 0.25
        (3, 1, 0.2499, False),
        (8, 0, 0.0, True),  # nothing skipped: the default passes
        (7, 1, 0.0, False),  # the default: any skipped record fails
        (0, 3, 1.0, True),  # the skipped check alone (an mIoU is given here)
    ],
)
def test_gate_decision_at_the_boundary(evaluated, skipped, allowed, blessed):
    decision = decide_blessing(
        0.9,
        0.5,
        None,
        0.0,
        images_evaluated=evaluated,
        images_skipped=skipped,
        skipped_by_reason={"bad_record": skipped} if skipped else {},
        max_eval_skipped_fraction=allowed,
    )
    assert decision["blessed"] is blessed
    assert [c["name"] for c in decision["checks"]] == ["miou_threshold", "max_regression", "skipped_records"]
    assert decision["checks"][-1]["passed"] is blessed
    assert decision["skipped_fraction"] == skipped / (evaluated + skipped)
    assert decision["max_eval_skipped_fraction"] == allowed and decision["images_skipped"] == skipped
    if not blessed:
        assert decision["message"].startswith("NOT BLESSED") and f"{allowed:.4f}" in decision["message"]
        assert "bad_record" in decision["message"]


def test_gate_rejects_bad_fractions_and_unknown_totals():
    with pytest.raises(ValueError, match=r"max_eval_skipped_fraction is a fraction in \[0, 1\]"):
        decide_blessing(0.9, images_evaluated=7, max_eval_skipped_fraction=1.5)
    with pytest.raises(ValueError, match="images_evaluated"):
        decide_blessing(0.9, images_skipped=1)
    # Without counts (older callers), nothing is known to be skipped: the check passes.
    assert decide_blessing(0.9, 0.5)["checks"][-1] == {
        "name": "skipped_records",
        "passed": True,
        "detail": "0 evaluation records skipped (fraction 0.0000) <= max_eval_skipped_fraction 0.0000",
    }


def test_component_parameter():
    from tfx import types
    from tfx.types import standard_artifacts

    from components.miou_evaluator.component import MiouEvaluator
    from components.miou_evaluator.spec import DEFAULT_MAX_EVAL_SKIPPED_FRACTION

    channels = dict(
        examples=types.Channel(type=standard_artifacts.Examples), model=types.Channel(type=standard_artifacts.Model)
    )
    assert MiouEvaluator(**channels).exec_properties["max_eval_skipped_fraction"] == DEFAULT_MAX_EVAL_SKIPPED_FRACTION
    assert (
        MiouEvaluator(**channels, max_eval_skipped_fraction=0.05).exec_properties["max_eval_skipped_fraction"] == 0.05
    )
    with pytest.raises(ValueError, match="max_eval_skipped_fraction"):
        MiouEvaluator(**channels, max_eval_skipped_fraction=-0.1)


def test_num_gallery_zero_through_the_component_writes_no_gallery(setup):
    """num_gallery=0 is a value, not a missing one: the component's exec property reaches the executor as 0 and
    the report has no gallery (it was turned into the default 4 once); 2 writes both galleries."""
    from tfx import types
    from tfx.types import standard_artifacts

    from components.miou_evaluator.component import MiouEvaluator

    channels = dict(
        examples=types.Channel(type=standard_artifacts.Examples), model=types.Channel(type=standard_artifacts.Model)
    )
    galleries = {}
    for num_gallery in (0, 2):
        props = MiouEvaluator(**channels, num_gallery=num_gallery, max_eval_skipped_fraction=0.2).exec_properties
        assert props["num_gallery"] == num_gallery
        eval_dir, _ = _run_executor(setup, f"gallery_{num_gallery}", **props)
        result = json.loads(open(os.path.join(eval_dir, "evaluation.json")).read())
        assert result["data"]["images_evaluated"] == N_GOOD
        galleries[num_gallery] = sorted(f for f in os.listdir(eval_dir) if f.startswith("gallery"))
    assert galleries == {0: [], 2: ["gallery_best.png", "gallery_worst.png"]}


def test_cli_flag(setup, capsys):
    import runner
    from components.miou_evaluator import DEFAULT_MAX_EVAL_SKIPPED_FRACTION

    args = runner.build_parser("evaluate").parse_args(
        ["evaluate", "--model", "m", "--examples", "e", "--output-dir", "o"]
    )
    assert args.max_eval_skipped_fraction == DEFAULT_MAX_EVAL_SKIPPED_FRACTION
    base = [
        "evaluate",
        "--model",
        str(setup / "model"),
        "--examples",
        str(setup / "examples"),
        "--miou-threshold",
        "0",
        "--no-tensorboard",
        "--num-gallery",
        "0",
    ]
    rc = runner.main(base + ["--output-dir", str(setup / "cli")])
    printed = capsys.readouterr().out
    assert rc == 1
    assert "skipped 1 of 8 records, 12.50%, OVER max_eval_skipped_fraction 0.0000" in printed
    assert "NOT BLESSED" in printed and "bad_record 1" in printed
    with pytest.raises(SystemExit, match="max-eval-skipped-fraction"):
        runner.main(base + ["--output-dir", str(setup / "x"), "--max-eval-skipped-fraction", "2"])
