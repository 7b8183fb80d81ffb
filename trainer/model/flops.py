"""FLOPs per training sample at Emotion-LLaMA's real sizes, counted on the meta device (no weights, seconds).

Every model is built from the real configuration's numbers (featstore's
``REAL_*`` presets, Llama-2-7b's config.json) on the meta device, fed meta
tensors of the real input shapes, and counted with
``torch.utils.flop_counter.FlopCounterMode`` (matmuls, convolutions and
attention; a multiply-add counts 2 FLOPs; elementwise work and norms are not
counted). ``benchmarks/flops.py`` prints these figures as a table;
``trainer.model.estimate`` turns them into epoch time and cost.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch
from torch.utils.flop_counter import FlopCounterMode

__all__ = ["cached_bytes", "count", "encoder_flops", "encoder_models", "llama_step_flops", "real_figures", "real_llama"]

EVA_IMAGE = 448  # Emotion-LLaMA runs the 224 px tower at 448 px (pos. embeddings interpolated): 1025 tokens
FACE_SIZE = 224  # face crops and VideoMAE frames
VIDEO_FRAMES = 16  # VideoMAE's clip
SAMPLE_RATE = 16_000
FEATURE_TOKENS = 260  # 256 patch groups + local, temporal, audio, CLS (trainer.model.projector)
REAL_SHAPES = {"global": (1025, 1408), "local": (1024,), "temporal": (1024,), "audio": (1024,)}
FP16_BYTES = 2


def count(fn, *args: Any, **kwargs: Any) -> int:
    """FLOPs of ``fn(*args, **kwargs)`` (and whatever backward it runs) under torch's FLOP counter."""
    with FlopCounterMode(display=False) as counter:
        fn(*args, **kwargs)
    return int(counter.get_total_flops())


def encoder_models(configs: Mapping[str, Mapping[str, Any]], device: str = "meta") -> dict[str, torch.nn.Module]:
    """The encoder towers of featstore's slots, from config dicts (slot -> dict), on ``device`` (meta: no memory)."""
    from transformers import (
        Blip2VisionConfig,
        Blip2VisionModel,
        HubertConfig,
        HubertModel,
        VideoMAEConfig,
        VideoMAEModel,
        ViTMAEConfig,
        ViTMAEModel,
    )

    build = {
        "global": lambda c: Blip2VisionModel(Blip2VisionConfig(**c)),
        "local": lambda c: ViTMAEModel(ViTMAEConfig(**c)),
        "temporal": lambda c: VideoMAEModel(VideoMAEConfig(**c)),
        "audio": lambda c: HubertModel(HubertConfig(**c)),
    }
    with torch.device(device):
        return {s: build[s](dict(configs[s])).eval() for s in configs}


def encoder_flops(
    configs: Mapping[str, Mapping[str, Any]], local_frames: int = 16, audio_seconds: float = 5.0
) -> dict[str, int]:
    """Forward FLOPs per clip of each encoder built from ``configs`` (slot -> config dict), on the meta device."""
    models = encoder_models(configs)
    m = "meta"
    inputs = {
        "global": dict(pixel_values=torch.empty(1, 3, EVA_IMAGE, EVA_IMAGE, device=m), interpolate_pos_encoding=True),
        "local": dict(pixel_values=torch.empty(local_frames, 3, FACE_SIZE, FACE_SIZE, device=m)),
        "temporal": dict(pixel_values=torch.empty(1, VIDEO_FRAMES, 3, FACE_SIZE, FACE_SIZE, device=m)),
        "audio": dict(input_values=torch.empty(1, int(audio_seconds * SAMPLE_RATE), device=m)),
    }
    out = {}
    with torch.no_grad():
        for slot, model in models.items():
            out[slot] = count(model, **inputs[slot])
    return out


def llama_step_flops(
    llama: Mapping[str, Any],
    feature_shapes: Mapping[str, Sequence[int]],
    seq_len: int,
    lora_r: int = 64,
    batch: int = 1,
) -> dict[str, int]:
    """FLOPs of one training step (forward + backward) of projectors + LoRA LLaMA, base frozen, on the meta device.

    Args:
        llama: LlamaConfig keyword arguments.
        feature_shapes: slot -> feature shape (sets the projectors).
        seq_len: tokens per example, the feature tokens included.
        lora_r: LoRA rank on q_proj and v_proj.
        batch: examples in the step.

    Returns:
        ``forward``, ``backward`` and ``step`` FLOPs for the whole batch.
    """
    from transformers import LlamaConfig, LlamaForCausalLM

    from trainer.model.emotion_llama import LoraSettings, wrap_lora
    from trainer.model.projector import FeatureProjector

    config = LlamaConfig(**llama)
    with torch.device("meta"):
        llm = wrap_lora(LlamaForCausalLM(config), LoraSettings(r=lora_r))
        projector = FeatureProjector(feature_shapes, config.hidden_size)
    text = seq_len - projector.num_tokens
    if text < 1:
        raise ValueError(f"seq_len {seq_len} leaves no text tokens beside {projector.num_tokens} feature tokens")
    feats = {s: torch.empty(batch, *feature_shapes[s], device="meta") for s in feature_shapes}
    ids = torch.zeros(batch, text, dtype=torch.long, device="meta")
    labels = torch.zeros(batch, seq_len, dtype=torch.long, device="meta")

    def forward():
        tokens = projector(feats)
        embeds = torch.cat([llm.get_input_embeddings()(ids), tokens], dim=1)
        return llm(inputs_embeds=embeds, labels=labels).loss

    with FlopCounterMode(display=False) as fwd:
        loss = forward()
    with FlopCounterMode(display=False) as bwd:
        loss.backward()
    f, b = int(fwd.get_total_flops()), int(bwd.get_total_flops())
    return {"forward": f, "backward": b, "step": f + b}


def cached_bytes(shapes: Mapping[str, Sequence[int]], itemsize: int = FP16_BYTES) -> int:
    """Bytes of one sample's features as the cache stores them (uncompressed)."""
    total = 0
    for shape in shapes.values():
        n = 1
        for d in shape:
            n *= int(d)
        total += n * itemsize
    return total


def real_llama() -> dict[str, Any]:
    """Llama-2-7b's config numbers (trainer.model.tiny.REAL_LLAMA)."""
    from trainer.model.tiny import REAL_LLAMA

    return dict(REAL_LLAMA)


def real_figures(seq_len: int = 400, local_frames: int = 16, audio_seconds: float = 5.0) -> dict[str, Any]:
    """Every figure at real size: encoders, the training step, the removed fraction, bytes."""
    from featstore.encoders.presets import REAL_EVA, REAL_HUBERT, REAL_MAE, REAL_VIDEOMAE

    enc = encoder_flops(
        {"global": REAL_EVA, "local": REAL_MAE, "temporal": REAL_VIDEOMAE, "audio": REAL_HUBERT},
        local_frames,
        audio_seconds,
    )
    step = llama_step_flops(real_llama(), REAL_SHAPES, seq_len)
    encoders = sum(enc.values())
    online = encoders + step["step"]
    return {
        "encoders": enc,
        "encoders_total": encoders,
        "train_step": step,
        "online_step": online,
        "online_over_cached": online / step["step"],
        "encoders_over_step": encoders / step["step"],
        "fraction_removed": encoders / online,
        "cached_bytes_per_sample": cached_bytes(REAL_SHAPES),
        "seq_len": seq_len,
        "feature_tokens": FEATURE_TOKENS,
        "local_frames": local_frames,
        "audio_seconds": audio_seconds,
    }
