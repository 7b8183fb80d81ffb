"""Label sets of the evaluations and the original's answer parsing: the answer's last word is the label."""

from __future__ import annotations

import string

from featstore.names import DFEW_LABELS, MER2023_LABELS, MERR_LABELS
from trainer.data.tasks import EMOTION_LABELS

__all__ = ["INVALID", "LABEL_SETS", "UNKNOWN_POLICIES", "emotion_instruction", "get_label_set", "parse_label"]

# Each set in the order its confusion matrix and per-class metrics are listed (featstore.names).
LABEL_SETS = {
    "mer2023": tuple(MER2023_LABELS),
    "dfew": tuple(DFEW_LABELS[k] for k in sorted(DFEW_LABELS)),
    "merr": tuple(MERR_LABELS),
}
INVALID = "invalid"  # the extra class of ``--unknown invalid``
UNKNOWN_POLICIES = ("neutral", INVALID)
_STRIP = string.punctuation + "\u201c\u201d\u2018\u2019\u3002\uff0c\uff01\uff1f"  # ASCII and common CJK/quote marks


def get_label_set(name: str) -> tuple[str, ...]:
    """The labels of ``name`` (mer2023, dfew, merr).

    Raises:
        ValueError: naming the set and the known ones.
    """
    if name not in LABEL_SETS:
        raise ValueError(f"unknown label set {name!r}; label sets are {sorted(LABEL_SETS)}")
    return LABEL_SETS[name]


def emotion_instruction(labels: tuple[str, ...]) -> str:
    """The original's emotion instruction listing ``labels``; for MERR's nine, exactly the training instruction."""
    listed = EMOTION_LABELS if sorted(labels) == sorted(EMOTION_LABELS) else labels
    return "Please determine which emotion label in the video represents: " + ", ".join(listed) + "."


def parse_label(answer: str, labels: tuple[str, ...], unknown: str = "neutral") -> tuple[str, bool]:
    """The label an answer gives, as the original reads it: its last word, lower-cased, punctuation stripped.

    Args:
        answer: the generated text.
        labels: the label set.
        unknown: "neutral" (the original: a word outside the set counts as neutral) or "invalid"
            (it counts as the class ``INVALID``).

    Returns:
        (label, known): ``known`` is False when the last word was not in ``labels``.

    Raises:
        ValueError: naming a bad policy, or "neutral" with a label set that has no neutral.
    """
    if unknown not in UNKNOWN_POLICIES:
        raise ValueError(f"unknown-word policy {unknown!r} must be one of {list(UNKNOWN_POLICIES)}")
    if unknown == "neutral" and "neutral" not in labels:
        raise ValueError(f"label set {labels} has no 'neutral' for unknown answers; use --unknown invalid")
    words = answer.split()
    word = words[-1].strip(_STRIP).lower() if words else ""
    if word in labels:
        return word, True
    return unknown, False
