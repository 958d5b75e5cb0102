"""components/miou_evaluator/metrics.py against hand-worked numbers and independent loops."""

import numpy as np
import pytest

from components.miou_evaluator import metrics
from components.miou_evaluator.evaluate import decide_blessing
from data.voc import IGNORE_LABEL, NUM_CLASSES, VOC_CLASSES

NAMES4 = ("bg", "a", "b", "c")


def test_hand_worked_4x4():
    labels = np.array([[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 255, 255], [2, 2, 2, 255]])
    preds = np.array([[0, 1, 1, 1], [0, 0, 1, 2], [2, 0, 2, 2], [2, 2, 2, 0]])
    cm = metrics.confusion_matrix(labels, preds, num_classes=4)
    # 13 labelled pixels (3 are 255). Truth 0 -> predicted 0,1,0,0; truth 1 -> 1,1,1,2;
    # truth 2 -> 2,0,2,2,2. Class 3 is in neither.
    expected = np.array([[3, 1, 0, 0, 0], [0, 3, 1, 0, 0], [1, 0, 4, 0, 0], [0, 0, 0, 0, 0]])
    np.testing.assert_array_equal(cm, expected)
    assert cm.dtype == np.int64
    m = metrics.metrics_from_confusion(cm, NAMES4)
    # TP 3,3,4; GT 4,4,5; predicted 4,4,5 -> unions 5,5,6 -> IoU 3/5, 3/5, 4/6
    assert m["per_class"][0]["iou"] == pytest.approx(0.6)
    assert m["per_class"][1]["iou"] == pytest.approx(0.6)
    assert m["per_class"][2]["iou"] == pytest.approx(2 / 3)
    assert m["per_class"][3]["iou"] is None and not m["per_class"][3]["present"]
    assert m["miou"] == pytest.approx((0.6 + 0.6 + 2 / 3) / 3)  # 0.6222, class 3 left out
    assert m["pixel_accuracy"] == pytest.approx(10 / 13)  # 0.7692
    assert m["mean_class_accuracy"] == pytest.approx((3 / 4 + 3 / 4 + 4 / 5) / 3)  # 0.7667
    assert m["frequency_weighted_iou"] == pytest.approx(4 / 13 * 0.6 + 4 / 13 * 0.6 + 5 / 13 * 2 / 3)  # 0.6256
    assert m["absent_classes"] == ["c"]
    assert m["num_pixels"] == 13 and m["invalid_predictions"] == 0 and m["num_classes_present"] == 3


def test_prediction_outside_class_range_counts_as_miss():
    labels = np.array([[1, 1], [0, 255]])
    preds = np.array([[1, 7], [-1, 3]])  # 7 and -1 are not classes of a 4-class problem
    cm = metrics.confusion_matrix(labels, preds, num_classes=4)
    np.testing.assert_array_equal(cm[:, 4], [1, 1, 0, 0])
    m = metrics.metrics_from_confusion(cm, NAMES4)
    assert m["invalid_predictions"] == 2 and m["num_pixels"] == 3
    assert m["pixel_accuracy"] == pytest.approx(1 / 3)
    # class 1: TP 1, GT 2 (one invalid), predicted 1 -> IoU 1/2; class 0: TP 0, GT 1 -> IoU 0
    assert m["per_class"][1]["iou"] == pytest.approx(0.5)
    assert m["per_class"][0]["iou"] == 0.0
    assert m["absent_classes"] == ["b", "c"]


def test_bad_ground_truth_is_an_error():
    with pytest.raises(ValueError, match="neither class ids"):
        metrics.confusion_matrix(np.array([[0, 30]]), np.array([[0, 0]]), num_classes=21)
    with pytest.raises(ValueError, match="same shape"):
        metrics.confusion_matrix(np.zeros((2, 2)), np.zeros((2, 3)))


def _random_case(seed, shape=(37, 41), num_classes=NUM_CLASSES):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, num_classes - 4, size=shape)  # the top classes stay absent in truth
    labels[rng.random(shape) < 0.15] = IGNORE_LABEL
    preds = np.where(rng.random(shape) < 0.6, labels, rng.integers(0, num_classes - 3, size=shape))
    preds[rng.random(shape) < 0.01] = num_classes + 5  # out-of-range predictions
    return labels, preds


def test_random_maps_match_independent_loops():
    labels, preds = _random_case(0)
    C = NUM_CLASSES
    cm = metrics.confusion_matrix(labels, preds)
    # Independent: explicit loops over (truth, prediction) pairs with boolean masks.
    counted = labels != IGNORE_LABEL
    for t in range(C):
        for p in range(C):
            assert cm[t, p] == int(np.sum(counted & (labels == t) & (preds == p)))
        assert cm[t, C] == int(np.sum(counted & (labels == t) & ((preds < 0) | (preds >= C))))
    m = metrics.metrics_from_confusion(cm, VOC_CLASSES)

    ious, accs, weights = [], [], []
    for c in range(C):
        tp = int(np.sum(counted & (labels == c) & (preds == c)))
        gt = int(np.sum(counted & (labels == c)))
        pr = int(np.sum(counted & (preds == c)))
        row = m["per_class"][c]
        assert (row["tp"], row["gt_pixels"], row["pred_pixels"]) == (tp, gt, pr)
        if gt + pr - tp == 0:
            assert row["iou"] is None and VOC_CLASSES[c] in m["absent_classes"]
            continue
        ious.append(tp / (gt + pr - tp))
        assert row["iou"] == pytest.approx(ious[-1], abs=1e-12)
        if gt:
            accs.append(tp / gt)
            weights.append((gt, tp / (gt + pr - tp)))
    n = int(counted.sum())
    assert m["num_pixels"] == n
    assert m["miou"] == pytest.approx(sum(ious) / len(ious), abs=1e-12)
    assert m["pixel_accuracy"] == pytest.approx(int(np.sum(counted & (labels == preds))) / n, abs=1e-12)
    assert m["mean_class_accuracy"] == pytest.approx(sum(accs) / len(accs), abs=1e-12)
    assert m["frequency_weighted_iou"] == pytest.approx(sum(g * i for g, i in weights) / n, abs=1e-12)
    assert m["invalid_predictions"] == int(np.sum(counted & (preds >= C)))
    # Truth covers classes 0..16; 17 is only predicted (IoU 0, present); 18..20 are in neither.
    assert m["absent_classes"] == list(VOC_CLASSES[18:])
    assert m["per_class"][17]["iou"] == 0.0


def test_confusion_matrices_add_up_over_shards():
    parts = [_random_case(s, shape=(9, 13)) for s in range(5)]
    total = sum(metrics.confusion_matrix(label, p) for label, p in parts)
    whole = metrics.confusion_matrix(
        np.concatenate([label for label, _ in parts]), np.concatenate([p for _, p in parts])
    )
    np.testing.assert_array_equal(total, whole)


def test_per_image_average_differs_from_dataset_level():
    # Image A: 2x2 all background, predicted right -> per-image mIoU 1.0.
    # Image B: 2x2 all class 1, 3 pixels predicted background -> classes 0 (IoU 0/3) and 1 (IoU 1/4):
    #   per-image mIoU 0.125.   Reference style: (1.0 + 0.125) / 2 = 0.5625.
    # Dataset level: cm [[4,0],[3,1]] -> IoU0 = 4 / (4 + 7 - 4) = 4/7, IoU1 = 1 / 4 -> mIoU 0.4107.
    a = metrics.confusion_matrix(np.zeros((2, 2), int), np.zeros((2, 2), int), num_classes=2)
    b = metrics.confusion_matrix(np.ones((2, 2), int), np.array([[1, 0], [0, 0]]), num_classes=2)
    summaries = [metrics.image_summary(a), metrics.image_summary(b)]
    assert summaries[0]["miou"] == 1.0 and summaries[1]["miou"] == pytest.approx(0.125)
    avg = metrics.per_image_average(summaries + [metrics.image_summary(np.zeros((2, 3), np.int64))])
    assert avg[metrics.REFERENCE_STYLE_KEY] == pytest.approx(0.5625)
    assert avg["per_image_mean_pixel_accuracy"] == pytest.approx((1.0 + 0.25) / 2)
    assert avg["images_averaged"] == 2 and avg["images_without_labelled_pixels"] == 1
    dataset = metrics.metrics_from_confusion(a + b, ("bg", "x"))
    assert dataset["miou"] == pytest.approx((4 / 7 + 1 / 4) / 2)


def test_empty_matrix_has_no_means():
    m = metrics.metrics_from_confusion(np.zeros((4, 5), np.int64), NAMES4)
    assert m["miou"] is None and m["pixel_accuracy"] is None and m["absent_classes"] == list(NAMES4)


def test_normalized_confusion_rows_sum_to_one():
    labels, preds = _random_case(3)
    norm = metrics.normalized_confusion(metrics.confusion_matrix(labels, preds))
    sums = norm.sum(axis=1)
    np.testing.assert_allclose(sums[:17], 1.0)
    np.testing.assert_array_equal(sums[17:], 0.0)


@pytest.mark.parametrize(
    "miou, threshold, base, tol, blessed",
    [
        (0.70, 0.65, None, 0.0, True),  # no baseline: absolute threshold only
        (0.60, 0.65, None, 0.0, False),  # below threshold
        (0.70, 0.65, 0.705, 0.01, True),  # 0.70 >= 0.705 - 0.01
        (0.70, 0.65, 0.72, 0.01, False),  # 0.70 < 0.71: regression
        (0.70, None, 0.70, 0.0, True),  # equal to baseline passes
        (None, 0.0, None, 0.0, False),  # nothing evaluated: never blessed
    ],
)
def test_blessing_rule(miou, threshold, base, tol, blessed):
    decision = decide_blessing(miou, threshold, base, tol)
    assert decision["blessed"] is blessed
    assert decision["message"].startswith("BLESSED" if blessed else "NOT BLESSED")
    if not blessed and miou is not None:
        assert f"{miou:.4f}" in decision["message"]  # the log says why, with numbers


def test_resolve_tta():
    from components.miou_evaluator.evaluate import resolve_tta
    from models.inference import TTAConfig

    assert resolve_tta(None) == TTAConfig()
    assert resolve_tta({"flip": True}).flip is True
    with pytest.raises(ValueError, match="tta must be"):
        resolve_tta("sliding")
    with pytest.raises(ValueError, match="model directory"):
        resolve_tta("export")
