"""The no-regression check compares only models of the same label map: a baseline with other classes (a
warm start onto another dataset) is not evaluated, and evaluation.json, the report and the blessing line say
why. Tiny colour-coded data and models from tests/test_eval_support.py."""

import json
import os

import pytest

import runner
from data.label_map import LabelMap
from tests.test_eval_support import colour_table, save_colour_model, write_examples


def _record_label_map(model_dir, label_map):
    """What models.export records of an export's classes (assets.extra/deeplab_export.json)."""
    from models.export_files import ASSETS_EXTRA, CONFIG_FILENAME

    os.makedirs(os.path.join(model_dir, ASSETS_EXTRA), exist_ok=True)
    with open(os.path.join(model_dir, ASSETS_EXTRA, CONFIG_FILENAME), "w") as f:
        json.dump({"label_map": label_map.to_json_dict()}, f)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("gate_label_map")
    write_examples(str(root / "examples" / "Split-val"), 3)
    current = save_colour_model(root / "current", colour_table())  # no record: VOC's classes
    same = save_colour_model(root / "same", colour_table(swap=(8, 15)))
    _record_label_map(same, LabelMap.voc())
    other = save_colour_model(root / "other", colour_table())
    _record_label_map(other, LabelMap.synthetic(21))  # 21 classes too, but other names
    return root, current, same, other


def _evaluate(root, model, baseline, name, threshold):
    out = root / name
    code = runner.main(
        ["evaluate", "--model", model, "--baseline-model", baseline, "--examples", str(root / "examples")]
        + ["--output-dir", str(out), "--miou-threshold", str(threshold), "--no-tensorboard", "--num-gallery", "0"]
    )
    return code, json.loads((out / "evaluation.json").read_text()), (out / "index.html").read_text()


def test_baseline_of_another_label_map_is_skipped_with_the_reason_everywhere(models):
    root, current, _, other = models
    code, result, html = _evaluate(root, current, other, "other", 0.5)
    assert code == 0
    blessing = result["blessing"]
    reason = blessing["regression_skipped"]
    assert "label map" in reason and "not comparable" in reason
    assert result["baseline"] is None and result["comparison"] is None
    assert result["baseline_model"] == {"path": other, "evaluated": False, "reason": reason}
    check = next(c for c in blessing["checks"] if c["name"] == "max_regression")
    assert check["passed"] and check["skipped"] and reason in check["detail"]
    assert blessing["blessed"] and f"regression check skipped: {reason}" in blessing["message"]
    assert "regression check skipped" in html and "not evaluated" in html

    # Not blessed for another reason: the blessing line still says why the baseline did not count.
    code, result, _ = _evaluate(root, current, other, "other_strict", 1.01)
    assert code == 1
    message = result["blessing"]["message"]
    assert message.startswith("NOT BLESSED: ") and "threshold" in message and "regression check skipped" in message


def test_baseline_of_the_same_label_map_is_compared(models):
    root, current, same, _ = models
    code, result, _ = _evaluate(root, current, same, "same", 0.5)
    assert result["blessing"]["regression_skipped"] is None
    assert result["baseline"] is not None and result["comparison"] is not None
    check = next(c for c in result["blessing"]["checks"] if c["name"] == "max_regression")
    assert "baseline mIoU" in check["detail"] and not check.get("skipped")
    # the swapped-colour baseline is worse, so the current model does not regress
    assert check["passed"] and code == 0
