"""Tiny encoder checkpoints: the real classes with small configs and random weights
from a fixed seed, saved with ``save_pretrained`` and loaded back through
``from_pretrained``, so tests and the demo run the real loading and encoding code
on a CPU without a download. The tiny global model is a full BLIP-2 checkpoint
(tiny Q-Former and OPT too), the tiny frames model a full CLIP (tiny text tower)
and the tiny whisper model a full Whisper (tiny decoder), as the real ones are.
The tiny global model keeps the real 224 px / patch 14 position grid, run at
448 px: the same interpolation path and the same 1025 tokens, only narrower.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
import transformers
from transformers import PreTrainedModel

from featstore.encoders.configs import TINY_CONFIGS, tiny_recipes
from featstore.names import SLOTS
from featstore.spec import canonical_json

__all__ = ["TINY_SEED", "TINY_SLOTS", "build_tiny_checkpoints"]

TINY_SEED = 0
TINY_SLOTS = tuple(TINY_CONFIGS)
_RECIPE_FILE = "featstore_tiny.json"


def _recipe_id(slot: str, seed: int) -> str:
    """A hash of everything that decides a tiny checkpoint's bytes, to tell a stale folder from a current one."""
    text = canonical_json(
        {
            "slot": slot,
            "seed": seed,
            "config": json.loads(json.dumps(TINY_CONFIGS[slot])),
            "transformers": transformers.__version__,
            "torch": torch.__version__,
        }
    )
    return hashlib.sha256(text.encode("ascii")).hexdigest()[:16]


def build_tiny_checkpoints(
    directory: str | os.PathLike, seed: int = TINY_SEED, slots: Sequence[str] = SLOTS
) -> dict[str, Path]:
    """Build (once) the tiny checkpoints of ``slots`` under ``directory``, one folder per slot.

    Idempotent: a slot folder whose recipe (configs, seed, library versions)
    matches is kept as it is; one that is missing or stale is rebuilt in a
    temporary folder and moved into place, so a concurrent reader never sees
    half a checkpoint. The same recipe gives the same bytes every time.

    Args:
        directory: Where to put the slot folders (``global``, ``local``...).
        seed: The torch seed the random weights come from.
        slots: Which of ``TINY_SLOTS`` to build (default Emotion-LLaMA's four).

    Returns:
        Slot name to checkpoint folder, in the order of ``slots``.

    Raises:
        ValueError: a slot has no tiny recipe.
    """
    bad = [s for s in slots if s not in TINY_SLOTS]
    if bad:
        raise ValueError(f"no tiny checkpoint for slots {bad}; tiny slots are {TINY_SLOTS}")
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    recipes = tiny_recipes()
    out = {}
    for slot in slots:
        folder = root / slot
        recipe = _recipe_id(slot, seed)
        marker = folder / _RECIPE_FILE
        if not (marker.is_file() and json.loads(marker.read_text()).get("recipe") == recipe):
            _build_one(folder, recipes[slot], seed, recipe)
        out[slot] = folder
    return out


def _build_one(folder: Path, build: Callable[[], PreTrainedModel], seed: int, recipe: str) -> None:
    """Build one tiny model from ``seed`` without touching the global RNG, save it, move it into place."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build()
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    model.save_pretrained(tmp)
    (tmp / _RECIPE_FILE).write_text(json.dumps({"recipe": recipe, "seed": seed}, sort_keys=True) + "\n")
    if folder.exists():
        shutil.rmtree(folder)
    os.replace(tmp, folder)
