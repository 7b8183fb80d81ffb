"""Prediction on one raw clip: decode it, run the four encoders live (set up as extraction set them up),
prompt the checkpoint's model with the training prompt, and return the label and the reasoning."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainer.evaluation.labels import LABEL_SETS, emotion_instruction, get_label_set, parse_label
from trainer.train.config import opt

__all__ = ["DEMO_CLIP", "PredictConfig", "SpecMismatch", "predict"]

DEMO_CLIP = "demo_out/data/clips/demo_0002.mp4"  # made by python jobs/extract.py
_REASON_TASKS = ("reason_v2", "reason")  # the reasoning task asked, the first one the checkpoint trained on


class SpecMismatch(ValueError):
    """The live encoders would make features other than those the checkpoint was trained on."""


@dataclass
class PredictConfig:
    """Options of ``jobs/predict.py``; the defaults answer on a demo clip with the demo checkpoint."""

    clip: str | None = opt(None, f"the video clip (default: the demo clip {DEMO_CLIP})", positional=True)
    checkpoint: str = opt("demo_out/train", "a checkpoint folder, or a run folder (its newest checkpoint)")
    transcript: str = opt("", "what the person in the clip says (the prompt's transcript)")
    json: bool = opt(False, "print one JSON object instead of text")
    store: str | None = opt(
        None,
        "store whose recorded extraction settings (preset, decode) to use "
        "(default: the store the checkpoint was trained from, if it is there)",
    )
    encoders: str | None = opt(
        None,
        "encoder preset, tiny or emotion-llama (default: the store's, else the checkpoint config's)",
        choices=(None, "tiny", "emotion-llama"),
    )
    labels: str = opt("merr", "label set the answer's last word is read against", choices=tuple(LABEL_SETS))
    max_new_tokens: int = opt(500, "greedy generation stops after this many new tokens")
    device: str = opt("auto", "auto (GPU if available), cpu or cuda", choices=("auto", "cpu", "cuda"))

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens {self.max_new_tokens!r} must be at least 1")
        for f in dataclasses.fields(self):
            choices = f.metadata.get("choices")
            if choices and getattr(self, f.name) not in choices:
                raise ValueError(f"{f.name} {getattr(self, f.name)!r} must be one of {list(choices)}")


def _settings(cfg: PredictConfig, trained: dict[str, Any]) -> tuple[str, dict[str, Any], str | None]:
    """(encoder preset, the store's extract config, the store used) for this prediction."""
    from trainer.data.live import saved_extract_config

    store = cfg.store or trained.get("store")
    if store and "://" not in store and not Path(store).exists():
        if cfg.store:
            raise FileNotFoundError(f"--store {store}: no store there")
        store = None  # the training store is not here: featstore's default decode settings
    saved = saved_extract_config(store)
    preset = cfg.encoders or saved.get("preset") or trained.get("encoders") or "tiny"
    return preset, saved, store


def predict(cfg: PredictConfig) -> dict[str, Any]:
    """Answer on ``cfg.clip``.

    Returns:
        ``clip``, ``label``, ``known`` (the last word was a label), ``answer``, ``reasoning``,
        ``checkpoint``, ``spec_ids``, ``encoders``.

    Raises:
        FileNotFoundError: no clip, or no checkpoint (saying how to train one).
        SpecMismatch: the encoders' spec ids differ from the checkpoint's, naming both.
        ValueError: a clip that cannot be decoded, naming it.
    """
    from trainer.data.cache import Example
    from trainer.data.live import LiveEncoders
    from trainer.data.tasks import get_task
    from trainer.evaluation.inference import load_answerer, resolve_checkpoint
    from trainer.train import checkpoint as ckpt

    clip = Path(cfg.clip or DEMO_CLIP)
    if not clip.is_file():
        hint = " Make the demo clips with: python jobs/extract.py" if cfg.clip is None else ""
        raise FileNotFoundError(f"no clip at {clip}.{hint}")
    folder = resolve_checkpoint(cfg.checkpoint)
    state = ckpt.read_state(folder)
    preset, saved, store = _settings(cfg, state.get("config", {}))
    live = LiveEncoders(preset, saved, None if cfg.device == "auto" else cfg.device)
    ids, trained = live.spec_ids(), dict(state["spec_ids"])
    bad = {s: (trained.get(s), ids.get(s)) for s in sorted(set(trained) | set(ids)) if trained.get(s) != ids.get(s)}
    if bad:
        raise SpecMismatch(
            f"checkpoint {folder} was trained on spec ids {trained}; the encoders loaded here "
            f"({preset}, decode settings of {store or 'featstore defaults'}) make {ids} "
            f"(differing: {bad})"
        )
    feats = live.features({"sample_id": clip.stem, "video": clip.name}, clip.parent)
    answerer = load_answerer(folder, live.shapes(), cfg.device)
    labels = get_label_set(cfg.labels)
    tasks = state.get("config", {}).get("tasks", "")
    reason = next((t for t in _REASON_TASKS if t in tasks.split(",")), _REASON_TASKS[0])
    asks = [
        Example(clip.stem, feats, cfg.transcript, "emotion", emotion_instruction(labels), None),
        Example(clip.stem, feats, cfg.transcript, reason, get_task(reason).instructions[0], None),
    ]
    answer, reasoning = answerer.answer(asks, cfg.max_new_tokens)
    label, known = parse_label(answer, labels, "neutral" if "neutral" in labels else "invalid")
    return {
        "clip": str(clip),
        "label": label,
        "known": known,
        "answer": answer,
        "reasoning": reasoning,
        "checkpoint": str(folder),
        "spec_ids": ids,
        "encoders": preset,
    }
