"""Segmentation metrics from confusion matrices (NumPy only; no TensorFlow import).

Confusion matrices add up, so dataset-level metrics come from the sum of per-image matrices
(what the Beam CombineFn does) and are exactly the same however the data is sharded.

Layout: `cm[t, p]` counts pixels of ground-truth class t predicted as class p, for the C classes,
plus one extra column `cm[t, C]` for predictions outside 0..C-1 (a broken model or a head with
the wrong number of classes). Those pixels count as misses of their true class instead of
vanishing; pixels labelled `ignore_label` are not counted anywhere.
"""

import numpy as np

from data.voc import IGNORE_LABEL, NUM_CLASSES, VOC_CLASSES
from models.confusion import iou_from_confusion

REFERENCE_STYLE_KEY = "per_image_mean_miou_reference_style"


def confusion_matrix(labels, preds, num_classes=NUM_CLASSES, ignore_label=IGNORE_LABEL):
    """Pixel confusion matrix: int64 [num_classes, num_classes + 1] (rows truth, columns prediction).

    labels: int array of class ids (any shape); `ignore_label` pixels are skipped.
    preds: int array of the same shape. Values outside 0..num_classes-1 are counted in the last
      column (as errors), never dropped.
    Raises ValueError for shape mismatches and for label values that are neither class ids nor
    `ignore_label` (that is a data bug: the fix is in the dataset, not here).
    """
    labels = np.asarray(labels)
    preds = np.asarray(preds)
    if labels.shape != preds.shape:
        raise ValueError(f"labels {labels.shape} and predictions {preds.shape} must have the same shape")
    labels = labels.astype(np.int64).ravel()
    preds = preds.astype(np.int64).ravel()
    valid = labels != ignore_label
    labels, preds = labels[valid], preds[valid]
    bad = (labels < 0) | (labels >= num_classes)
    if bad.any():
        raise ValueError(
            f"ground-truth labels hold values {sorted(set(labels[bad].tolist()))[:10]} that are "
            f"neither class ids 0..{num_classes - 1} nor the ignore label {ignore_label}"
        )
    preds = np.where((preds < 0) | (preds >= num_classes), num_classes, preds)
    counts = np.bincount(labels * (num_classes + 1) + preds, minlength=num_classes * (num_classes + 1))
    return counts.reshape(num_classes, num_classes + 1).astype(np.int64)


def _square(cm):
    """(cm restricted to the C real classes, per-class ground-truth totals incl. invalid predictions)."""
    cm = np.asarray(cm, dtype=np.int64)
    if cm.ndim != 2 or cm.shape[1] not in (cm.shape[0], cm.shape[0] + 1):
        raise ValueError(f"confusion matrix must be [C, C] or [C, C+1], got {cm.shape}")
    return cm[:, : cm.shape[0]], cm.sum(axis=1)


def _ratio(num, den):
    return float(num) / float(den) if den else None


def _mean(values):
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def metrics_from_confusion(cm, class_names=VOC_CLASSES):
    """Dataset-level metrics of a confusion matrix ([C, C] or [C, C+1], see module doc).

    Returns a JSON-ready dict:
      miou: mean over classes present in ground truth or prediction of TP / (TP + FP + FN).
      pixel_accuracy: correct pixels / counted pixels.
      mean_class_accuracy: mean over classes present in ground truth of TP / ground-truth pixels.
      frequency_weighted_iou: IoU per class weighted by its share of ground-truth pixels.
      per_class: list of {id, name, iou, accuracy, gt_pixels, pred_pixels, tp, present}.
      absent_classes: names of classes in neither ground truth nor prediction; they are left out
        of every mean (an IoU of 0/0 is undefined, not 0 or 1).
      num_pixels, invalid_predictions, num_classes_present.
    Every mean is None when no class qualifies (e.g. an empty matrix).
    """
    square, gt = _square(cm)
    num_classes = square.shape[0]
    if len(class_names) != num_classes:
        raise ValueError(f"{len(class_names)} class names for a {num_classes}-class confusion matrix")
    tp = np.diag(square)
    pred = square.sum(axis=0)
    total = int(gt.sum())
    iou, miou = iou_from_confusion(cm)  # the one IoU implementation; miou None for an empty matrix

    per_class, absent = [], []
    for c, name in enumerate(class_names):
        present = not np.isnan(iou[c])
        if not present:
            absent.append(name)
        per_class.append(
            {
                "id": c,
                "name": name,
                "present": present,
                "iou": float(iou[c]) if present else None,
                "accuracy": _ratio(tp[c], gt[c]),
                "tp": int(tp[c]),
                "gt_pixels": int(gt[c]),
                "pred_pixels": int(pred[c]),
            }
        )
    fw = None
    if total:
        fw = float(sum(gt[c] / total * per_class[c]["iou"] for c in range(num_classes) if gt[c] > 0))
    return {
        "miou": miou,
        "pixel_accuracy": _ratio(tp.sum(), total),
        "mean_class_accuracy": _mean(p["accuracy"] for p in per_class),
        "frequency_weighted_iou": fw,
        "num_pixels": total,
        "invalid_predictions": int(total - square.sum()),
        "num_classes_present": int(num_classes - len(absent)),
        "absent_classes": absent,
        "per_class": per_class,
    }


def image_summary(cm):
    """Per-image figures used for the reference-style average and the best/worst gallery.

    Returns {miou, pixel_accuracy, num_pixels, classes}: miou over the classes present in this
    image's ground truth or prediction (what TF1's `tf.metrics.mean_iou` gives on one image);
    None for an image with no counted pixels.
    """
    square, gt = _square(cm)
    tp = np.diag(square)
    iou, miou = iou_from_confusion(cm)
    present = ~np.isnan(iou)
    return {
        "miou": miou,
        "pixel_accuracy": _ratio(tp.sum(), gt.sum()),
        "num_pixels": int(gt.sum()),
        "classes": [int(c) for c in np.flatnonzero(present)],
    }


def per_image_average(summaries):
    """The reference repo's figure: per-image mIoU and pixel accuracy averaged over images.

    It differs from the dataset-level mIoU (small objects and rare classes weigh as much as whole
    images; classes missing from an image do not count there), so it is reported under its own
    name, REFERENCE_STYLE_KEY. Images without counted pixels are left out and counted.
    """
    usable = [s for s in summaries if s["miou"] is not None]
    return {
        REFERENCE_STYLE_KEY: _mean(s["miou"] for s in usable),
        "per_image_mean_pixel_accuracy": _mean(s["pixel_accuracy"] for s in usable),
        "images_averaged": len(usable),
        "images_without_labelled_pixels": len(summaries) - len(usable),
    }


def normalized_confusion(cm):
    """Rows divided by their ground-truth totals (recall view), float64 [C, C+1]; empty rows stay 0."""
    cm = np.asarray(cm, dtype=np.float64)
    rows = cm.sum(axis=1, keepdims=True)
    return np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)
