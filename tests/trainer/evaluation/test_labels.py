"""Label parsing as the original: the answer's last word, lower-cased, punctuation stripped; a word outside the
set counts as neutral, or as 'invalid' when asked. The label sets are featstore.names' own."""

from __future__ import annotations

import pytest

from featstore.names import DFEW_LABELS, MER2023_LABELS, MERR_LABELS
from trainer.data.tasks import TASKS
from trainer.evaluation.labels import LABEL_SETS, emotion_instruction, get_label_set, parse_label


def test_label_sets_are_the_papers():
    assert get_label_set("mer2023") == ("neutral", "angry", "happy", "sad", "worried", "surprise") == MER2023_LABELS
    assert get_label_set("dfew") == ("happy", "sad", "neutral", "angry", "surprise", "disgust", "fear")
    assert set(get_label_set("dfew")) == set(DFEW_LABELS.values())
    assert get_label_set("merr") == MERR_LABELS and len(LABEL_SETS["merr"]) == 9
    with pytest.raises(ValueError, match="'emer'"):
        get_label_set("emer")


@pytest.mark.parametrize(
    "answer,label,known",
    [
        ("The emotion of the person is Happy.", "happy", True),
        ("sad", "sad", True),
        ('  the label is "WORRIED"!  ', "worried", True),
        ("happy, not sad", "sad", True),  # the last word, not the first label found
        ("I think she is happy and calm", "neutral", False),
        ("", "neutral", False),
        ("The emotion is fear.", "neutral", False),  # fear is not a MER2023 label
    ],
)
def test_last_word_is_the_label(answer, label, known):
    assert parse_label(answer, MER2023_LABELS) == (label, known)


def test_unknown_words_as_their_own_class():
    assert parse_label("She looks joyful.", MER2023_LABELS, "invalid") == ("invalid", False)
    assert parse_label("She looks happy.", MER2023_LABELS, "invalid") == ("happy", True)
    with pytest.raises(ValueError, match="'maybe'"):
        parse_label("x", MER2023_LABELS, "maybe")


def test_merr_instruction_is_the_training_one():
    assert emotion_instruction(get_label_set("merr")) == TASKS["emotion"].instructions[0]
    assert emotion_instruction(get_label_set("dfew")).endswith("happy, sad, neutral, angry, surprise, disgust, fear.")
