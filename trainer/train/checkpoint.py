"""Checkpoints: a folder per save, written to a temporary name and moved into place, ``state.json`` last.

    step-00000010/
        adapter/            the LoRA adapter in peft's format (PeftModel.from_pretrained loads it)
        projector.pt        projector state dict
        optimizer.pt        AdamW state
        scheduler.pt        LambdaLR position
        rng-rank{R}.pt      torch (CPU, CUDA), Python and NumPy RNG states of each rank
        state.json          step, data position (epoch, batches and samples consumed), spec ids, config

Everything loads with ``torch.load(weights_only=True)``: tensors, numbers and lists, no pickled objects.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = [
    "STATE_FILE",
    "checkpoint_name",
    "latest_checkpoint",
    "load_rng",
    "load_weights",
    "prune_checkpoints",
    "read_state",
    "save_rng",
    "save_checkpoint",
    "load_training_state",
]

STATE_FILE = "state.json"
_PREFIX = "step-"


def checkpoint_name(step: int) -> str:
    return f"{_PREFIX}{step:08d}"


def rng_state() -> dict[str, Any]:
    """Every RNG the training loop draws from, as tensors and plain numbers."""
    py = random.getstate()
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "python": [py[0], list(py[1]), py[2]],
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what ``rng_state`` returned."""
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    random.setstate((state["python"][0], tuple(state["python"][1]), state["python"][2]))
    np_state = state["numpy"]
    np.random.set_state((np_state[0], np_state[1].numpy().astype(np.uint32), *np_state[2:]))


def save_rng(folder: str | Path, rank: int) -> None:
    """Write this rank's RNG states into ``folder``."""
    torch.save(rng_state(), Path(folder) / f"rng-rank{rank}.pt")


def load_rng(folder: str | Path, rank: int) -> None:
    """Restore this rank's RNG states from ``folder``.

    Raises:
        FileNotFoundError: naming the file when the checkpoint has no state for this rank.
    """
    path = Path(folder) / f"rng-rank{rank}.pt"
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {folder} has no RNG state for rank {rank} ({path.name})")
    set_rng_state(torch.load(path, weights_only=True))


def save_checkpoint(
    folder: str | Path, model, optimizer, scheduler, state: dict[str, Any], rank: int = 0, weights_only: bool = False
) -> Path:
    """Write a complete checkpoint at ``folder`` (rank 0's view: weights, optimizer, state; its RNG).

    Written under a temporary name and renamed, ``state.json`` last, so a folder
    that exists with its state file is complete. With ``weights_only`` (an
    imported checkpoint) only the adapter, the projectors and the state are
    written: such a folder starts runs (``--init-from``) and answers
    (evaluate, predict), but does not resume one.
    """
    folder = Path(folder)
    tmp = folder.parent / f".{folder.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    model.llm.save_pretrained(tmp / "adapter")
    torch.save(model.projector.state_dict(), tmp / "projector.pt")
    if not weights_only:
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
        save_rng(tmp, rank)
    (tmp / STATE_FILE).write_text(json.dumps(state, indent=2, sort_keys=True) + "\n")
    if folder.exists():
        shutil.rmtree(folder)
    os.replace(tmp, folder)
    return folder


def read_state(folder: str | Path) -> dict[str, Any]:
    """A checkpoint's ``state.json``.

    Raises:
        FileNotFoundError: naming the folder when it is not a complete checkpoint.
    """
    path = Path(folder) / STATE_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{folder} is not a complete checkpoint (no {STATE_FILE})")
    return json.loads(path.read_text())


def load_weights(folder: str | Path, model) -> None:
    """Load the projector and LoRA adapter weights of a checkpoint into ``model`` (an EmotionLlama)."""
    from peft import set_peft_model_state_dict
    from peft.utils import load_peft_weights

    folder = Path(folder)
    model.projector.load_state_dict(torch.load(folder / "projector.pt", weights_only=True))
    result = set_peft_model_state_dict(model.llm, load_peft_weights(str(folder / "adapter"), device="cpu"))
    unexpected = getattr(result, "unexpected_keys", [])
    if unexpected:
        raise ValueError(f"checkpoint {folder}: adapter weights {unexpected[:3]}... do not fit this model's LoRA")


def load_training_state(
    folder: str | Path, model, optimizer, scheduler, rank: int = 0, rng: bool = True
) -> dict[str, Any]:
    """Restore weights, optimizer, scheduler and (with ``rng``) this rank's RNG from a checkpoint; return its state."""
    folder = Path(folder)
    state = read_state(folder)
    if state.get("imported_from"):
        raise ValueError(
            f"checkpoint {folder} was imported from {state['imported_from'].get('path')} and holds weights only: "
            "start a run from it with --init-from (a fresh optimizer and schedule), not --resume"
        )
    load_weights(folder, model)
    optimizer.load_state_dict(torch.load(folder / "optimizer.pt", weights_only=True))
    scheduler.load_state_dict(torch.load(folder / "scheduler.pt", weights_only=True))
    if rng:
        load_rng(folder, rank)
    return state


def latest_checkpoint(root: str | Path) -> Path | None:
    """The complete checkpoint with the highest step under ``root`` (searched recursively), or None."""
    root = Path(root)
    if not root.is_dir():
        return None
    found = [
        (read_state(p.parent)["step"], str(p.parent))
        for p in root.rglob(STATE_FILE)
        if not p.parent.name.startswith(".")
    ]
    return Path(max(found)[1]) if found else None


def prune_checkpoints(root: str | Path, keep: int) -> None:
    """Remove all but the newest ``keep`` checkpoints directly under ``root`` (0: keep all)."""
    if keep <= 0:
        return
    done = sorted(p for p in Path(root).glob(f"{_PREFIX}*") if (p / STATE_FILE).is_file())
    for old in done[:-keep]:
        shutil.rmtree(old)
