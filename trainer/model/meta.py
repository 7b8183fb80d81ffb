"""A preset's model on the meta device: shapes without memory or weights, for sizes and memory estimates."""

from __future__ import annotations

import torch

from trainer.model.emotion_llama import EmotionLlama, LoraSettings, wrap_lora
from trainer.model.projector import FeatureProjector

__all__ = ["PRESET_SHAPES", "llama_config", "meta_model"]

# Feature shapes of featstore's encoder presets (global: EVA CLS + 1024 patch tokens).
PRESET_SHAPES = {
    "emotion-llama": {"global": (1025, 1408), "local": (1024,), "temporal": (1024,), "audio": (1024,)},
    "tiny": {"global": (1025, 32), "local": (32,), "temporal": (32,), "audio": (32,)},
}


def llama_config(preset: str):
    """The preset's LlamaConfig: Llama-2-7b's for "emotion-llama", the tiny one for "tiny"."""
    from transformers import LlamaConfig

    from trainer.model.tiny import TINY_LLAMA, TINY_VOCAB, real_llama_config

    return real_llama_config() if preset == "emotion-llama" else LlamaConfig(vocab_size=TINY_VOCAB, **TINY_LLAMA)


def meta_model(preset: str, lora: LoraSettings = LoraSettings()) -> EmotionLlama:
    """The preset's EmotionLlama on the meta device (no memory, no weights).

    Raises:
        ValueError: naming an unknown preset.
    """
    if preset not in PRESET_SHAPES:
        raise ValueError(f"unknown preset {preset!r}; presets are {sorted(PRESET_SHAPES)}")
    from transformers import LlamaForCausalLM

    config = llama_config(preset)
    with torch.device("meta"):
        llm = wrap_lora(LlamaForCausalLM(config), lora)
        projector = FeatureProjector(PRESET_SHAPES[preset], config.hidden_size)
    return EmotionLlama(llm, projector)
