"""The Beam evaluation and report end to end (DirectRunner, in-process) on tiny colour-coded data."""

import json
import os

import numpy as np
import pytest

from components.miou_evaluator import beam_eval, metrics, report
from components.miou_evaluator.evaluate import evaluate
from data.tfrecord import load_sample, parse_example_np
from models.inference import TTAConfig
from tests.test_eval_support import colour_table, nearest_colour_labels, save_colour_model, write_examples


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    samples = write_examples(str(root / "examples" / "Split-val"), 7, extra_records=[b"not an example"])
    good_table, bad_table = colour_table(), colour_table(swap=(8, 12))
    return {
        "root": root,
        "samples": samples,
        "good": save_colour_model(root / "good", good_table),
        "good_table": good_table,
        "bad": save_colour_model(root / "bad" / "Format-Serving", bad_table),
        "bad_table": bad_table,
    }


def _expected_cm(samples, table):
    return sum(metrics.confusion_matrix(label, nearest_colour_labels(image, table)) for image, label, _ in samples)


@pytest.fixture(scope="module")
def evaluated(setup):
    out = setup["root"] / "report"
    result = evaluate(
        setup["good"],
        str(out),
        examples_pattern=beam_eval.resolve_examples(setup["root"] / "examples", "val"),
        baseline_model_dir=str(setup["root"] / "bad"),  # a Trainer-style dir: Format-Serving inside
        miou_threshold=0.5,
        max_regression=0.0,
        num_gallery=2,
        # The corrupt record is here to test counting; allow it so the mIoU/baseline gate decides.
        max_eval_skipped_fraction=0.2,
        data_description={"examples": "test"},
    )
    return out, result


def test_dataset_confusion_matrix_is_exact(setup, evaluated):
    _, result = evaluated
    np.testing.assert_array_equal(
        np.array(result["confusion_matrix"]), _expected_cm(setup["samples"], setup["good_table"])
    )
    np.testing.assert_array_equal(
        np.array(result["baseline"]["confusion_matrix"]), _expected_cm(setup["samples"], setup["bad_table"])
    )
    expected = metrics.metrics_from_confusion(_expected_cm(setup["samples"], setup["good_table"]))
    assert result["metrics"]["miou"] == expected["miou"]
    assert result["absent_classes"] == expected["absent_classes"]


def test_counts_skips_and_blessing(setup, evaluated):
    _, result = evaluated
    assert result["data"]["images_evaluated"] == 7
    assert result["data"]["images_skipped"] == 1 and result["data"]["skipped_by_reason"] == {"bad_record": 1}
    assert len(result["per_image"]) == 7 and all("baseline_miou" in r for r in result["per_image"])
    # The degraded model calls every "cat" (8) a "dog" (12): strictly worse, so the good one passes.
    assert result["baseline"]["metrics"]["miou"] < result["metrics"]["miou"]
    assert result["comparison"]["metrics"]["miou"] > 0
    assert result["blessing"]["blessed"] is True
    assert result["tta"] == TTAConfig().to_json_dict()
    # Best first / worst first, ordered by per-image mIoU.
    best = [i["miou"] for i in result["best_images"]]
    worst = [i["miou"] for i in result["worst_images"]]
    assert best == sorted(best, reverse=True) and worst == sorted(worst)
    all_mious = sorted(r["miou"] for r in result["per_image"])
    assert worst == all_mious[:2] and best == all_mious[::-1][:2]


def test_report_files(evaluated):
    out, result = evaluated
    for name in (
        report.EVALUATION_JSON,
        report.PER_IMAGE_CSV,
        report.CONFUSION_PNG,
        report.PER_CLASS_PNG,
        report.GALLERY_PNG["best"],
        report.GALLERY_PNG["worst"],
        report.INDEX_HTML,
    ):
        assert (out / name).is_file() and (out / name).stat().st_size > 100, name
    for name in (report.CONFUSION_PNG, report.PER_CLASS_PNG, report.GALLERY_PNG["best"]):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    on_disk = json.loads((out / report.EVALUATION_JSON).read_text())
    assert on_disk["metrics"]["miou"] == result["metrics"]["miou"]
    assert on_disk["blessing"]["blessed"] is True
    html = (out / report.INDEX_HTML).read_text()
    assert 'src="confusion_matrix.png"' in html and "BLESSED" in html and "http" not in html
    assert len((out / report.PER_IMAGE_CSV).read_text().strip().splitlines()) == 8
    assert any(f.startswith("events.out.tfevents") for f in os.listdir(out / report.TENSORBOARD_DIR))
    assert not (out / ".staging").exists()
    assert result["beam_counters"]["images_evaluated"] == 7 and result["beam_counters"]["skipped_bad_record"] == 1


def test_tensorboard_scalars(evaluated):
    import tensorflow as tf

    out, result = evaluated
    logdir = out / report.TENSORBOARD_DIR
    scalars = {}
    for name in os.listdir(logdir):
        for event in tf.compat.v1.train.summary_iterator(str(logdir / name)):
            for v in event.summary.value:
                if v.metadata.plugin_data.plugin_name == "scalars":
                    scalars[v.tag] = float(tf.make_ndarray(v.tensor))
    assert scalars["eval/miou"] == pytest.approx(result["metrics"]["miou"])
    assert scalars["eval/" + metrics.REFERENCE_STYLE_KEY] == pytest.approx(
        result["metrics"][metrics.REFERENCE_STYLE_KEY]
    )
    assert "iou/08_cat" in scalars


def test_tta_modes_agree_for_a_per_pixel_model(setup, evaluated, tmp_path):
    # The colour model has no spatial context: flip and sliding windows must give the same integers.
    _, whole = evaluated
    tta = TTAConfig(flip=True, mode="sliding", crop_size=16, stride_fraction=0.5)
    result = evaluate(
        setup["good"],
        str(tmp_path),
        examples_pattern=beam_eval.resolve_examples(setup["root"] / "examples" / "Split-val"),
        tta=tta,
        tensorboard=False,
        num_gallery=0,
    )
    assert result["confusion_matrix"] == whole["confusion_matrix"]
    assert result["tta"]["mode"] == "sliding" and result["blessing"]["checks"][0]["name"] == "max_regression"


def test_examples_and_model_resolution_errors(setup, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"splits \['val'\]"):
        beam_eval.resolve_examples(setup["root"] / "examples", "train")
    with pytest.raises(FileNotFoundError, match="no TFRecord files"):
        beam_eval.resolve_examples(tmp_path)
    with pytest.raises(FileNotFoundError, match="Format-Serving"):
        beam_eval.resolve_model_dir(tmp_path)
    assert beam_eval.resolve_model_dir(setup["root"] / "bad").endswith("Format-Serving")


def test_voc_root_source(voc_sample_root, setup, tmp_path):
    from data.splits import resolve_recipe

    refs = resolve_recipe("voc_val", voc_root=str(voc_sample_root))
    assert len(refs) == 16
    refs = refs[:5]  # real JPEGs and palette masks with 255 borders; a few keep the test quick
    result = evaluate(setup["good"], str(tmp_path), sample_refs=refs, tensorboard=False, num_gallery=1)
    expected = 0
    for ref in refs:
        from data.tfrecord import to_example

        image, label, _ = parse_example_np(to_example(load_sample(ref)).SerializeToString())
        expected = expected + metrics.confusion_matrix(label, nearest_colour_labels(image, setup["good_table"]))
    assert result["data"]["images_evaluated"] == len(refs)
    np.testing.assert_array_equal(np.array(result["confusion_matrix"]), expected)


@pytest.mark.slow
def test_multi_processing_runner_gives_the_same_integers(setup, evaluated, tmp_path):
    # Two DirectRunner worker processes, each loading the models in DoFn.setup.
    _, in_process = evaluated
    result = evaluate(
        setup["good"],
        str(tmp_path),
        examples_pattern=beam_eval.resolve_examples(setup["root"] / "examples", "val"),
        baseline_model_dir=str(setup["root"] / "bad"),
        tensorboard=False,
        num_gallery=2,
        beam_args=["--direct_running_mode=multi_processing", "--direct_num_workers=2"],
    )
    assert result["confusion_matrix"] == in_process["confusion_matrix"]
    assert result["baseline"]["confusion_matrix"] == in_process["baseline"]["confusion_matrix"]
    assert result["best_images"] == in_process["best_images"]
    assert result["data"]["skipped_by_reason"] == {"bad_record": 1}
