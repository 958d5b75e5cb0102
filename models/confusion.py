"""IoU from a confusion matrix: the one implementation (NumPy only, no TensorFlow import), used by
training's final evaluation (models.train.evaluate_miou) and the evaluator's report
(components.miou_evaluator.metrics.metrics_from_confusion).
"""

import numpy as np


def iou_from_confusion(confusion):
    """(per-class IoU, mIoU) of a confusion matrix.

    confusion[i, j] = pixels of true class i predicted as j; [C, C], or [C, C+1] where the extra column
    counts predictions outside 0..C-1 (they are misses of the true class: in its row's ground truth).
    Per-class IoU = TP / (TP + FP + FN), a float64 array, NaN for a class absent from both ground truth
    and predictions (0/0 is undefined, not 0 or 1). mIoU = mean over the present classes, None when no
    class is present (an empty matrix): "no answer", JSON null in every report.
    """
    confusion = np.asarray(confusion, dtype=np.float64)
    num_classes = confusion.shape[0]
    square = confusion[:, :num_classes]
    tp = np.diag(square)
    union = confusion.sum(axis=1) + square.sum(axis=0) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, tp / np.where(union > 0, union, 1.0), np.nan)
    present = union > 0
    return iou, float(np.mean(iou[present])) if present.any() else None
