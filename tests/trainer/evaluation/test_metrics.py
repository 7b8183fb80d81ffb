"""The evaluation metrics equal scikit-learn's (an independent reference) on fixed cases, including classes
absent from the predictions, classes absent from the truth, and an 'invalid' class that is only predicted."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn import metrics as sk

from trainer.evaluation.labels import LABEL_SETS
from trainer.evaluation.metrics import classification_report, confusion_matrix

MER = LABEL_SETS["mer2023"]
DFEW = LABEL_SETS["dfew"]
CASES = {
    # 'surprise' is in the truth but never predicted; 'worried' never occurs at all.
    "absent_from_predictions": (
        MER,
        ["happy", "sad", "angry", "surprise", "surprise", "neutral", "happy"],
        ["happy", "happy", "angry", "sad", "neutral", "neutral", "sad"],
    ),
    # 'fear' and 'disgust' are predicted but never true.
    "absent_from_truth": (
        DFEW,
        ["happy", "happy", "sad", "neutral", "angry", "neutral", "angry"],
        ["fear", "happy", "disgust", "neutral", "angry", "sad", "angry"],
    ),
    "invalid_class": (
        MER + ("invalid",),
        ["happy", "sad", "neutral", "worried", "angry", "sad", "sad"],
        ["invalid", "sad", "invalid", "worried", "neutral", "sad", "happy"],
    ),
    "all_right": (MER, ["happy", "sad", "neutral"], ["happy", "sad", "neutral"]),
    "all_wrong": (DFEW, ["happy", "sad"], ["sad", "happy"]),
}


def _random_case(seed: int, n: int = 200):
    rng = np.random.default_rng(seed)
    truth = list(rng.choice(DFEW[:5], n))  # disgust and fear never true
    pred = [t if rng.random() < 0.6 else str(rng.choice(DFEW)) for t in truth]
    return DFEW, truth, pred


@pytest.mark.parametrize("case", [*CASES, "random0", "random1"])
def test_metrics_equal_scikit_learn(case):
    classes, truth, pred = CASES[case] if case in CASES else _random_case(int(case[-1]))
    rep = classification_report(truth, pred, classes)
    labels = list(classes)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sklearn warns about the absent classes this test is about
        assert rep["accuracy"] == pytest.approx(sk.accuracy_score(truth, pred), abs=1e-12)
        # WAR: recall weighted by support, computed by scikit-learn on its own (it equals accuracy)
        assert rep["war"] == pytest.approx(
            sk.recall_score(truth, pred, labels=labels, average="weighted", zero_division=0), abs=1e-12
        )
        assert rep["weighted_f1"] == pytest.approx(
            sk.f1_score(truth, pred, labels=labels, average="weighted", zero_division=0), abs=1e-12
        )
        assert rep["uar"] == pytest.approx(sk.balanced_accuracy_score(truth, pred), abs=1e-12)
        p, r, f, s = sk.precision_recall_fscore_support(truth, pred, labels=labels, zero_division=0)
        np.testing.assert_array_equal(np.asarray(rep["confusion"]), sk.confusion_matrix(truth, pred, labels=labels))
    for i, c in enumerate(classes):
        got = rep["per_class"][c]
        assert (got["precision"], got["recall"], got["f1"]) == pytest.approx((p[i], r[i], f[i]), abs=1e-12), c
        assert got["support"] == s[i]


def test_the_fixed_cases_tell_weighted_from_macro_f1():
    """A report that averaged F1 without weights (or recall with) must fail the cases above: each case but
    the all-right / all-wrong ones has weighted F1 != macro F1 and UAR != accuracy."""
    for name, (classes, truth, pred) in CASES.items():
        if name in ("all_right", "all_wrong"):
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            present = sorted(set(truth))
            weighted = sk.f1_score(truth, pred, labels=list(classes), average="weighted", zero_division=0)
            macro = sk.f1_score(truth, pred, labels=present, average="macro", zero_division=0)
            assert abs(weighted - macro) > 1e-3, name
            assert abs(sk.balanced_accuracy_score(truth, pred) - sk.accuracy_score(truth, pred)) > 1e-3, name
        rep = classification_report(truth, pred, classes)
        assert rep["macro_f1"] == pytest.approx(macro, abs=1e-12), name


def test_uar_averages_only_the_classes_in_the_truth():
    # Two true classes, recalls 1 and 0: UAR 0.5 whatever the five classes never seen in the truth.
    rep = classification_report(["happy", "sad"], ["happy", "fear"], DFEW)
    assert rep["uar"] == 0.5 and rep["accuracy"] == 0.5


def test_confusion_matrix_refuses_a_label_outside_the_classes():
    with pytest.raises(ValueError, match="'joy'"):
        confusion_matrix(["happy"], ["joy"], MER)
    with pytest.raises(ValueError, match="2 true labels but 1 predictions"):
        confusion_matrix(["happy", "sad"], ["happy"], MER)
    with pytest.raises(ValueError, match="no samples"):
        classification_report([], [], MER)
