"""Peak GPU memory of a training worker at real size, estimated without a GPU or any weights.

    python -m trainer.model.describe --memory --batch-size 1 --dtype bf16 [--tokens 400] [--grad-checkpointing]

What is counted, per worker:

- **weights**: every parameter at its dtype (the frozen LLaMA in ``--dtype``,
  LoRA and projectors in float32 as the trainer keeps them);
- **optimizer**: float32 gradients and AdamW's two moments of the trainable
  parameters (12 bytes each);
- **activations**: the bytes autograd saves for the backward pass, *measured*
  by running one forward pass of the model at real width on the CPU
  (uninitialised weights, batch 1, 1 and 2 LLaMA layers: about 1 GB and 20 s)
  with a ``saved_tensors_hooks`` that adds up every distinct storage saved,
  parameters excluded; the per-layer figure is extrapolated to the depth and
  the whole scaled by the batch. With gradient
  checkpointing a layer keeps only its input (``B x T x H``) and one layer's
  activations exist at a time, during its recomputation;
- **logits**: ``B x T x vocab`` in float32 for the loss, and their gradient.

Not counted: the CUDA context and allocator slack (about 0.5-1 GB on a
recent card), NCCL buffers under DDP (about the size of the trainable
gradients), and fragmentation. The bf16 run is measured with every tensor in
bf16 (autocast keeps a few ops, such as the norms' statistics, in float32,
which the hook sees where the model casts explicitly).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import torch

__all__ = ["CARDS_GB", "estimate_memory", "saved_bytes"]

CARDS_GB = (24, 40, 80)
GB = 1024**3


def saved_bytes(fn, params: Any) -> int:
    """Bytes of the distinct storages autograd saves while ``fn()`` runs, those of ``params`` excluded."""
    skip = {p.untyped_storage()._cdata for p in params}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        s = t.untyped_storage()
        if s._cdata not in skip:
            seen[s._cdata] = s.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(seen.values())


def _measure(preset: str, layers: int, batch: int, tokens: int, dtype: torch.dtype, lora, device: str = "meta") -> int:
    """Saved bytes of one forward + loss of the preset's model with ``layers`` LLaMA layers (random
    weights; on ``meta`` nothing is allocated)."""
    from trainer.model.emotion_llama import EmotionLlama, wrap_lora
    from trainer.model.meta import PRESET_SHAPES, llama_config
    from trainer.model.projector import FeatureProjector

    config = llama_config(preset)
    config.num_hidden_layers = layers
    config._attn_implementation = "sdpa"
    from transformers import LlamaForCausalLM

    with torch.device("meta"):  # built without initialising: the bytes saved do not depend on the values
        llm = wrap_lora(LlamaForCausalLM(config), lora)
        model = EmotionLlama(llm, FeatureProjector(PRESET_SHAPES[preset], config.hidden_size)).to(dtype)
    if device != "meta":
        model = model.to_empty(device=device)
    with torch.device(device):
        feats = {s: torch.zeros(batch, *shape, dtype=torch.float16) for s, shape in PRESET_SHAPES[preset].items()}
        n_feat = model.projector.num_tokens
        ids = torch.zeros(batch, tokens, dtype=torch.long)
        mask = torch.zeros(batch, tokens, dtype=torch.bool)
        mask[:, 1 : 1 + n_feat] = True
        labels = torch.zeros(batch, tokens, dtype=torch.long)
    model.train()

    # embed_prompt checks the slot count with a data-dependent comparison, which meta tensors cannot
    # answer: project and splice here the way it does, by shapes.
    def forward() -> None:
        tokens_ = model.projector(feats)
        embeds = model.llm.get_input_embeddings()(ids)
        embeds = embeds.masked_scatter(mask.unsqueeze(-1), tokens_.to(embeds.dtype))
        # no padding: attention_mask None is the all-ones mask (its check would read a meta tensor)
        model.llm(inputs_embeds=embeds, attention_mask=None, labels=labels)

    return saved_bytes(forward, model.parameters())


@functools.lru_cache(maxsize=32)
def _measured(preset: str, tokens: int, dtype: torch.dtype, lora) -> tuple[int, int]:
    """Saved bytes at 1 and 2 LLaMA layers, batch 1, real tensors on the CPU (uninitialised weights).

    Not on the meta device: there SDPA takes its math path, which keeps the T x T attention
    probabilities that the flash kernels of a GPU (and of the CPU) do not keep."""
    return tuple(_measure(preset, n, 1, tokens, dtype, lora, "cpu") for n in (1, 2))


def estimate_memory(
    preset: str = "emotion-llama",
    batch_size: int = 1,
    tokens: int = 400,
    dtype: str = "bf16",
    grad_checkpointing: bool = False,
    lora=None,
) -> dict[str, Any]:
    """Peak memory estimate of one training worker, in bytes and GiB, with the parts named.

    Args:
        preset: the model preset (``trainer.model.meta.PRESET_SHAPES``).
        batch_size: examples a micro-batch.
        tokens: sequence length (260 feature tokens + the prompt + the answer: about 330 for the
            emotion task, up to 260 + 60 + max_txt_len for reasoning).
        dtype: the frozen LLaMA's dtype, ``bf16`` or ``fp32``.
        grad_checkpointing: the trainer's ``--grad-checkpointing``.
    """
    from trainer.model.emotion_llama import LoraSettings
    from trainer.model.meta import llama_config, meta_model

    if dtype not in ("bf16", "fp32"):
        raise ValueError(f"dtype {dtype!r} must be 'bf16' or 'fp32'")
    if batch_size < 1 or tokens < 1:
        raise ValueError(f"batch_size {batch_size!r} and tokens {tokens!r} must be at least 1")
    lora = lora or LoraSettings()
    tdtype = torch.bfloat16 if dtype == "bf16" else torch.float32
    width = 2 if dtype == "bf16" else 4
    model = meta_model(preset, lora)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    config = llama_config(preset)
    one, two = _measured(preset, tokens, tdtype, lora)
    per_layer = (two - one) * batch_size  # every saved tensor is per example: linear in the batch
    outside = (one - (two - one)) * batch_size  # projector, embeddings, final norm, head and loss
    depth = config.num_hidden_layers
    layer_input = batch_size * tokens * config.hidden_size * width
    if grad_checkpointing:
        activations = outside + depth * layer_input + per_layer
    else:
        activations = outside + depth * per_layer
    logits = 2 * batch_size * tokens * config.vocab_size * 4
    parts = {
        "weights": frozen * width + trainable * 4,
        "optimizer": trainable * 12,
        "activations": activations,
        "logits": logits,
    }
    total = sum(parts.values())
    return {
        "preset": preset,
        "batch_size": batch_size,
        "tokens": tokens,
        "dtype": dtype,
        "grad_checkpointing": grad_checkpointing,
        "bytes": {**parts, "total": total},
        "gib": {k: v / GB for k, v in {**parts, "total": total}.items()},
        "activation_bytes_per_layer": per_layer,
        "layers": depth,
        "fits": {f"{gb} GB": total / GB <= gb * 0.93 for gb in CARDS_GB},  # ~7% for context and slack
    }


def largest_batch(tokens: int, card_gb: int, grad_checkpointing: bool, preset: str = "emotion-llama", lora=None) -> int:
    """The largest power-of-two micro-batch (up to 64) whose bf16 estimate fits ``card_gb`` (0: not even one)."""
    fit = 0
    for b in (1, 2, 4, 8, 16, 32, 64):
        if estimate_memory(preset, b, tokens, "bf16", grad_checkpointing, lora)["fits"][f"{card_gb} GB"]:
            fit = b
        else:
            break
    return fit


def memory_text(d: Mapping[str, Any]) -> str:
    g = d["gib"]
    ck = "with" if d["grad_checkpointing"] else "without"
    lines = [
        f"peak memory per worker, {d['preset']}, batch {d['batch_size']} x {d['tokens']} tokens, {d['dtype']}, "
        f"{ck} gradient checkpointing (estimate; CUDA context not counted)",
        f"  weights       {g['weights']:7.2f} GiB",
        f"  optimizer     {g['optimizer']:7.2f} GiB  (fp32 grads + AdamW moments of the trainable parameters)",
        f"  activations   {g['activations']:7.2f} GiB  ({d['activation_bytes_per_layer'] / 2**20:.1f} MiB a layer "
        f"x {d['layers']} layers, measured on the CPU)",
        f"  logits        {g['logits']:7.2f} GiB",
        f"  total         {g['total']:7.2f} GiB  fits: "
        + ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in d["fits"].items()),
    ]
    return "\n".join(lines)
