"""A trained checkpoint ready to answer: find it, rebuild its model from its saved config, generate greedily.

Shared by evaluation and prediction, so both build prompts with the training code
(``trainer.data.cache.Collator`` -> ``trainer.model.prompt``) and decode answers the same way.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from trainer.data.cache import Collator, Example
from trainer.train import checkpoint as ckpt

__all__ = ["Answerer", "load_answerer", "resolve_checkpoint"]

_MODEL_KEYS = ("input_ids", "feature_mask", "attention_mask")


def resolve_checkpoint(path: str | Path, option: str = "--checkpoint") -> Path:
    """A checkpoint folder, or the newest complete checkpoint under a run folder.

    Raises:
        FileNotFoundError: naming ``path`` and how to get a checkpoint when there is none.
    """
    path = Path(path)
    if (path / ckpt.STATE_FILE).is_file():
        return path
    found = ckpt.latest_checkpoint(path)
    if found is None:
        hint = (
            "python jobs/train.py (no arguments: the demo checkpoint, after python jobs/extract.py)"
            if "demo_out" in str(path)
            else "python jobs/train.py --out-dir RUN_DIR (see --help)"
        )
        raise FileNotFoundError(
            f"{option} {path}: no trained checkpoint there (no folder with "
            f"{ckpt.STATE_FILE}); nothing is trained here. Train one with: {hint}"
        )
    return found


@dataclass
class Answerer:
    """A checkpoint's model and tokenizer in eval mode.

    Attributes:
        folder: the checkpoint.
        state: its ``state.json`` (``spec_ids``, ``config``, ``step``).
    """

    folder: Path
    state: dict[str, Any]
    model: Any
    tokenizer: Any
    device: torch.device

    @property
    def spec_ids(self) -> dict[str, str]:
        """The spec id of each slot the checkpoint was trained on."""
        return dict(self.state["spec_ids"])

    def answer(self, examples: Sequence[Example], max_new_tokens: int) -> list[str]:
        """Greedy answers to ``examples`` (one batch, left-padded), special tokens removed.

        Raises:
            ValueError: when ``max_new_tokens`` is below 1.
        """
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens {max_new_tokens!r} must be at least 1")
        collate = Collator(self.tokenizer, self.model.num_video_tokens, self.model.num_feature_tokens)
        batch = collate(list(examples), generation=True)
        inputs: dict[str, Any] = {k: batch[k].to(self.device) for k in _MODEL_KEYS}
        inputs["features"] = {k: v.to(self.device) for k, v in batch["features"].items()}
        tok = self.tokenizer
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        ids = self.model.generate(
            inputs, max_new_tokens=max_new_tokens, eos_token_id=tok.eos_token_id, pad_token_id=pad
        )
        return [t.strip() for t in tok.batch_decode(ids, skip_special_tokens=True)]


def load_answerer(checkpoint: str | Path, shapes: Mapping[str, Sequence[int]], device: str = "auto") -> Answerer:
    """Rebuild a checkpoint's model (its LLM, LoRA settings, projector widths) and load its weights.

    Args:
        checkpoint: a checkpoint folder or a run folder (its newest checkpoint).
        shapes: slot -> feature shape of the features it will be fed (from the cache or the encoders).
        device: "auto" (GPU if available), "cpu" or "cuda".
    """
    from transformers import AutoTokenizer

    from trainer.model.emotion_llama import LoraSettings, build_model
    from trainer.train.config import TrainConfig

    folder = resolve_checkpoint(checkpoint)
    state = ckpt.read_state(folder)
    cfg = TrainConfig.from_dict(state["config"], where=f"{folder}/{ckpt.STATE_FILE}")
    dev = torch.device(device if device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))
    if cfg.llm == "tiny":
        from trainer.model.tiny import build_tiny_llm

        llm = str(build_tiny_llm(cfg.tiny_dir))
    else:
        llm = cfg.llm
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}.get(
        cfg.llm_dtype, torch.bfloat16 if dev.type == "cuda" else torch.float32
    )
    lora = LoraSettings(cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout, cfg.lora_target_list())
    from trainer.model.layout import get_layout

    model = build_model(llm, shapes, lora, dtype, get_layout(cfg.layout))
    ckpt.load_weights(folder, model)
    model.to(dev).eval()
    return Answerer(folder, state, model, AutoTokenizer.from_pretrained(llm), dev)
