"""The instruction tasks: what each asks, and which annotation field is its answer.

``emotion`` (answer: the label word), ``reason`` (the MERR coarse ``caption``)
and ``reason_v2`` (the MERR fine ``smp_reason_caption``, kept by featstore's
manifest as ``reasoning``). Each task has a small pool of instructions; the one
an example gets is a deterministic choice from (seed, sample id, task).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Mapping

from featstore.names import MERR_LABELS

__all__ = ["EMOTION_LABELS", "TASKS", "Task", "get_task", "parse_tasks"]

# The nine MERR labels (featstore.names), in the order the original's instruction lists them.
EMOTION_LABELS = ("happy", "sad", "neutral", "angry", "worried", "surprise", "fear", "contempt", "doubt")
assert sorted(EMOTION_LABELS) == sorted(MERR_LABELS)
_EMOTION_FIRST = "Please determine which emotion label in the video represents: " + ", ".join(EMOTION_LABELS) + "."


@dataclass(frozen=True)
class Task:
    """One instruction task.

    Attributes:
        name: the identifier written as ``[name]`` in the prompt.
        fields: annotation keys that may hold the answer, first present wins.
        instructions: the pool an example's instruction is drawn from.
    """

    name: str
    fields: tuple[str, ...]
    instructions: tuple[str, ...]

    def answer(self, meta: Mapping[str, Any]) -> str:
        """The answer text for a sample's annotation.

        Raises:
            ValueError: naming the sample and the fields looked for when none holds text.
        """
        for key in self.fields:
            value = meta.get(key)
            if value is None and isinstance(meta.get("extra"), Mapping):
                value = meta["extra"].get(key)
            if isinstance(value, str) and value.strip():
                return value.strip()
        raise ValueError(
            f"sample {meta.get('sample_id')!r} has no answer for task {self.name!r}: "
            f"none of {list(self.fields)} holds text"
        )

    def instruction(self, sample_id: str, seed: int) -> str:
        """A deterministic choice from the pool: the same (seed, sample, task) always gets the same one."""
        digest = hashlib.sha256(f"{seed}:{sample_id}:{self.name}".encode()).digest()
        return self.instructions[int.from_bytes(digest[:8], "big") % len(self.instructions)]


TASKS: Mapping[str, Task] = {
    "emotion": Task(
        "emotion",
        ("label",),
        (
            _EMOTION_FIRST,
            "Which emotion does the person in the video show? Answer with one of: " + ", ".join(EMOTION_LABELS) + ".",
            "Identify the emotion of the person in the video. Choose from: " + ", ".join(EMOTION_LABELS) + ".",
        ),
    ),
    "reason": Task(
        "reason",
        ("caption",),
        (
            "Please analyze all the clues in the video and reason out the emotional label of the person in the video.",
            "Describe the facial expression and the tone of voice of the person in the video.",
            "What clues in the face, the voice and the words show how the person in the video feels?",
        ),
    ),
    "reason_v2": Task(
        "reason_v2",
        ("smp_reason_caption", "reasoning"),
        (
            "Please analyze all the clues in the video and reason out the emotional label of the person in the video.",
            "Explain, from the facial movements, the voice and the words, which emotion the person feels and why.",
            "Reason step by step from the clues in the video to the emotion of the person.",
        ),
    ),
}


def get_task(name: str) -> Task:
    """The task called ``name``.

    Raises:
        ValueError: naming the task and the known ones.
    """
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; tasks are {sorted(TASKS)}")
    return TASKS[name]


def parse_tasks(names: str | list[str] | tuple[str, ...]) -> list[Task]:
    """Tasks from a comma-separated string or a list, in order, each checked."""
    items = names.split(",") if isinstance(names, str) else list(names)
    tasks = [get_task(n.strip()) for n in items if n.strip()]
    if not tasks:
        raise ValueError(f"no task given in {names!r}; tasks are {sorted(TASKS)}")
    return tasks
