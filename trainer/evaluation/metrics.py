"""Classification metrics in numpy: confusion matrix, accuracy, per-class precision/recall/F1, weighted F1,
UAR (mean recall over the classes in the truth) and WAR (accuracy). Checked against scikit-learn in tests."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["classification_report", "confusion_matrix"]


def confusion_matrix(truth: Sequence[str], pred: Sequence[str], classes: Sequence[str]) -> np.ndarray:
    """Counts ``[i, j]`` of samples of true class ``classes[i]`` predicted as ``classes[j]``.

    Raises:
        ValueError: when the lengths differ, or naming a label that is not in ``classes``.
    """
    if len(truth) != len(pred):
        raise ValueError(f"{len(truth)} true labels but {len(pred)} predictions")
    index = {c: i for i, c in enumerate(classes)}
    stray = sorted({x for x in (*truth, *pred) if x not in index})
    if stray:
        raise ValueError(f"labels {stray} are not among the classes {list(classes)}")
    cm = np.zeros((len(classes), len(classes)), dtype=np.int64)
    np.add.at(cm, ([index[t] for t in truth], [index[p] for p in pred]), 1)
    return cm


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den, 0 where den is 0 (scikit-learn's ``zero_division=0``)."""
    out = np.zeros(num.shape, dtype=np.float64)
    np.divide(num, den, out=out, where=den > 0)
    return out


def classification_report(truth: Sequence[str], pred: Sequence[str], classes: Sequence[str]) -> dict[str, Any]:
    """Every metric of the evaluation, from the confusion matrix over ``classes``.

    A class absent from the predictions has precision 0; one absent from the truth
    has recall 0, weight 0 in the weighted F1, and does not count in UAR.

    Returns:
        ``accuracy`` (= ``war``), ``weighted_f1``, ``macro_f1`` (over classes in the truth), ``uar``,
        ``per_class`` {class: precision, recall, f1, support}, ``confusion`` (lists), ``classes``, ``n``.

    Raises:
        ValueError: on no samples, or as ``confusion_matrix``.
    """
    if len(truth) == 0:
        raise ValueError("no samples to score")
    cm = confusion_matrix(truth, pred, classes)
    tp = np.diag(cm).astype(np.float64)
    support = cm.sum(axis=1).astype(np.float64)
    predicted = cm.sum(axis=0).astype(np.float64)
    precision = _ratio(tp, predicted)
    recall = _ratio(tp, support)
    f1 = _ratio(2 * tp, support + predicted)  # 2tp / (2tp + fp + fn)
    present = support > 0
    accuracy = float(tp.sum() / cm.sum())
    return {
        "n": int(cm.sum()),
        "classes": list(classes),
        "accuracy": accuracy,
        "war": accuracy,
        "uar": float(recall[present].mean()),
        "weighted_f1": float((f1 * support).sum() / support.sum()),
        "macro_f1": float(f1[present].mean()),
        "per_class": {
            c: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, c in enumerate(classes)
        },
        "confusion": cm.tolist(),
    }
