"""`deeplab evaluate` through runner.main (in-process)."""

import json

import pytest

import runner
from tests.test_eval_support import colour_table, save_colour_model, write_examples


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    write_examples(str(root / "examples" / "Split-val"), 4)
    return (
        root,
        save_colour_model(root / "good", colour_table()),
        save_colour_model(root / "bad", colour_table(swap=(8, 12))),
    )


def test_evaluate_prints_summary_and_report_path(setup, capsys):
    root, good, _ = setup
    out = root / "out"
    rc = runner.main(
        [
            "evaluate",
            "--model",
            good,
            "--examples",
            str(root / "examples"),
            "--split",
            "val",
            "--flip",
            "--scales",
            "1.0",
            "--output-dir",
            str(out),
            "--no-tensorboard",
        ]
    )
    printed = capsys.readouterr().out
    assert rc == 0
    assert "mIoU 100.00%" in printed and f"report: {out}/index.html" in printed
    assert "reference-repo style" in printed and "absent (left out of the means)" in printed
    result = json.loads((out / "evaluation.json").read_text())
    assert result["tta"]["flip"] is True and result["data"]["split"] == "val"


def test_gate_exit_code(setup, capsys):
    root, good, bad = setup
    rc = runner.main(
        [
            "evaluate",
            "--model",
            bad,
            "--baseline-model",
            good,
            "--examples",
            str(root / "examples"),
            "--output-dir",
            str(root / "gate"),
            "--max-regression",
            "0.05",
            "--no-tensorboard",
            "--num-gallery",
            "0",
        ]
    )
    printed = capsys.readouterr().out
    assert rc == 1
    assert "NOT BLESSED" in printed and "baseline mIoU 1.0000" in printed


def test_bad_tta_arguments_are_reported(setup):
    root, good, _ = setup
    with pytest.raises(SystemExit, match="crop_size"):
        runner.main(
            [
                "evaluate",
                "--model",
                good,
                "--examples",
                str(root / "examples"),
                "--mode",
                "sliding",
                "--output-dir",
                str(root / "x"),
            ]
        )
