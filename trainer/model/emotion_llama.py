"""EmotionLlama: a frozen LLaMA causal LM with peft LoRA, fed projected features through the prompt.

Only the projectors and the LoRA matrices train. The LLM loads with
``from_pretrained`` from a folder or hub name (Llama-2-7b-chat for the real
preset; a tiny LlamaConfig checkpoint for tests and the demo, see ``trainer.model.tiny``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from trainer.model.layout import LAYOUTS, FeatureLayout
from trainer.model.projector import FeatureProjector
from trainer.model.prompt import embed_prompt

__all__ = ["EmotionLlama", "LoraSettings", "build_model", "count_parameters", "wrap_lora"]


@dataclass(frozen=True)
class LoraSettings:
    """LoRA as in Emotion-LLaMA: r=64, alpha=16, dropout 0.05 on q_proj and v_proj."""

    r: int = 64
    alpha: int = 16
    dropout: float = 0.05
    targets: tuple[str, ...] = ("q_proj", "v_proj")

    def peft_config(self):
        """The ``peft.LoraConfig`` these settings describe."""
        from peft import LoraConfig

        return LoraConfig(
            r=self.r,
            lora_alpha=self.alpha,
            lora_dropout=self.dropout,
            target_modules=list(self.targets),
            bias="none",
            task_type="CAUSAL_LM",
        )


def wrap_lora(llm: nn.Module, lora: LoraSettings) -> nn.Module:
    """Freeze every LLM weight and add LoRA adapters (the only trainable LLM parameters)."""
    import warnings

    from peft import get_peft_model

    llm.requires_grad_(False)
    with warnings.catch_warnings():  # peft asks transformers' deprecated is_gradient_checkpointing: not ours to fix
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        return get_peft_model(llm, lora.peft_config())


class EmotionLlama(nn.Module):
    """Projectors + LoRA LLaMA.

    Args:
        llm: a peft-wrapped causal LM (``wrap_lora``).
        projector: the feature projectors; its hidden size must equal the LLM's.
    """

    def __init__(self, llm: nn.Module, projector: FeatureProjector) -> None:
        super().__init__()
        hidden = llm.get_input_embeddings().embedding_dim
        if projector.hidden != hidden:
            raise ValueError(f"projector width {projector.hidden} != LLM hidden size {hidden}")
        self.llm = llm
        self.projector = projector

    @property
    def num_video_tokens(self) -> int:
        """Tokens at ``<VideoHere>`` (Emotion-LLaMA's layout: the patch tokens)."""
        return self.projector.num_video_tokens

    @property
    def num_feature_tokens(self) -> int:
        """Tokens at ``<FeatureHere>`` (Emotion-LLaMA's layout: local, temporal, audio, CLS)."""
        return self.projector.num_feature_tokens

    @property
    def slots(self) -> tuple[str, ...]:
        """The cached features the model reads."""
        return self.projector.layout.slots

    def gradient_checkpointing(self) -> None:
        """Recompute the LLM's layer activations in the backward pass (non-reentrant checkpoints,
        which replay the RNG: the same dropout masks, so the same losses)."""
        self.llm.get_base_model().gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})

    def embed(self, batch: Mapping[str, Any]) -> torch.Tensor:
        """Prompt embeddings of a batch from ``trainer.data.cache.collate`` (training or generation layout)."""
        tokens = self.projector(batch["features"])
        return embed_prompt(self.llm.get_input_embeddings(), batch["input_ids"], batch["feature_mask"], tokens)

    def forward(self, batch: Mapping[str, Any]):
        """Causal LM output with ``loss`` on the answer tokens and EOS."""
        return self.llm(inputs_embeds=self.embed(batch), attention_mask=batch["attention_mask"], labels=batch["labels"])

    @torch.no_grad()
    def generate(self, batch: Mapping[str, Any], max_new_tokens: int = 64, **kw: Any) -> torch.Tensor:
        """Greedy generation from left-padded prompts (``collate(..., generation=True)``): new token ids."""
        return self.llm.generate(
            inputs_embeds=self.embed(batch),
            attention_mask=batch["attention_mask"],
            max_new_tokens=max_new_tokens,
            do_sample=False,
            **kw,
        )


def build_model(
    llm_source: str,
    feature_shapes: Mapping[str, Sequence[int]],
    lora: LoraSettings = LoraSettings(),
    dtype: torch.dtype | None = None,
    layout: FeatureLayout = LAYOUTS["emotion-llama"],
) -> EmotionLlama:
    """Load the LLM with ``from_pretrained``, freeze it, add LoRA and the projectors.

    Args:
        llm_source: a local folder or a hub name of a causal LM.
        feature_shapes: slot -> feature shape, from the cache (sets the projector widths).
        lora: LoRA settings.
        dtype: the frozen LLM's dtype (projectors and LoRA stay float32); default float32.
        layout: which features become which tokens (``trainer.model.layout``).
    """
    from transformers import AutoModelForCausalLM

    llm = AutoModelForCausalLM.from_pretrained(llm_source, dtype=dtype or torch.float32)
    projector = FeatureProjector(feature_shapes, llm.get_input_embeddings().embedding_dim, layout)
    return EmotionLlama(wrap_lora(llm, lora), projector)


def count_parameters(model: EmotionLlama) -> dict[str, int]:
    """Parameter counts: trainable LoRA, projector, frozen LLM, and the total."""
    lora = sum(p.numel() for n, p in model.llm.named_parameters() if p.requires_grad)
    frozen = sum(p.numel() for p in model.llm.parameters() if not p.requires_grad)
    projector = sum(p.numel() for p in model.projector.parameters())
    return {
        "lora": lora,
        "projector": projector,
        "trainable": lora + projector,
        "frozen": frozen,
        "total": lora + projector + frozen,
    }
