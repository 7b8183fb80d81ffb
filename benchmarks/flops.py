"""FLOPs per training sample at Emotion-LLaMA's real sizes, counted on the meta device (no weights, seconds).

Run: python benchmarks/flops.py [--seq-len 400] [--local-frames 16] [--audio-seconds 5] [--out benchmarks/results/flops.json]

Every model is built from the real configuration's numbers (featstore's
``REAL_*`` presets, Llama-2-7b's config.json) on the meta device, fed meta
tensors of the real input shapes, and counted with
``torch.utils.flop_counter.FlopCounterMode`` (matmuls, convolutions and
attention; a multiply-add counts 2 FLOPs; elementwise work and norms are not
counted). Rows:

- the four frozen encoders' forward per clip: EVA ViT-g/14 (Blip2VisionModel)
  on one frame at 448 px, 1025 tokens; MAE ViT-L on ``--local-frames`` face
  crops at 224 px; VideoMAE ViT-L on 16 frames (1568 tokens); HuBERT-L on
  ``--audio-seconds`` of 16 kHz audio;
- one training step of the model that caching leaves: the five projectors and
  LoRA (r=64 on q_proj, v_proj) Llama-2-7B at ``--seq-len`` tokens, 260 of
  them feature tokens, forward and backward, base weights frozen (the backward
  computes activation gradients through every layer and weight gradients only
  for LoRA and the projectors);
- the fraction of an online step's FLOPs that caching removes, and the bytes a
  cached sample costs to read (fp16 1025x1408 + 3x1024).

The functions here are reused by ``bench_epoch.py`` to size its scaled models.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere: the repo's packages

from featstore.encoders.presets import REAL_EVA, REAL_HUBERT, REAL_MAE, REAL_VIDEOMAE  # noqa: E402

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
    """Every figure of this benchmark at real size: encoders, the training step, the removed fraction, bytes."""
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


def machine() -> str:
    """CPU model and core count (the count is on the meta device, so the machine only says where it ran)."""
    with open("/proc/cpuinfo", encoding="utf-8") as f:
        model = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), "unknown CPU")
    return f"{model}, {os.cpu_count()} cores, {platform.system()} {platform.machine()}"


def print_table(fig: Mapping[str, Any]) -> None:
    """Print the figures as a table (TFLOPs per sample)."""
    t = 1e12
    rows = [
        (f"global: EVA ViT-g/14, 1 frame at {EVA_IMAGE} px (1025 tokens)", fig["encoders"]["global"]),
        (f"local: MAE ViT-L, {fig['local_frames']} face crops at {FACE_SIZE} px", fig["encoders"]["local"]),
        (f"temporal: VideoMAE ViT-L, {VIDEO_FRAMES} frames (1568 tokens)", fig["encoders"]["temporal"]),
        (f"audio: HuBERT-L, {fig['audio_seconds']:g} s at 16 kHz", fig["encoders"]["audio"]),
        ("four frozen encoders, forward", fig["encoders_total"]),
        (f"LoRA LLaMA-2-7B + projectors, forward ({fig['seq_len']} tokens)", fig["train_step"]["forward"]),
        ("LoRA LLaMA-2-7B + projectors, backward (base frozen)", fig["train_step"]["backward"]),
        ("training step from the cache (forward + backward)", fig["train_step"]["step"]),
        ("training step online (encoders + step)", fig["online_step"]),
    ]
    for name, flops in rows:
        print(f"{name:<66} {flops / t:8.3f} TFLOPs")
    print(f"{'online / cached':<66} {fig['online_over_cached']:8.3f}")
    print(f"{'fraction of the online FLOPs that caching removes':<66} {fig['fraction_removed']:8.3f}")
    mb = fig["cached_bytes_per_sample"] / 1e6
    print(f"{'bytes read from the cache per sample (fp16, uncompressed)':<66} {mb:8.3f} MB")


def main(argv: list[str] | None = None) -> None:
    """Count, print the table and merge the "flops" group into --out."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seq-len", type=int, default=400, help="tokens per training example, 260 feature tokens included")
    p.add_argument("--local-frames", type=int, default=16, help="face crops per clip for MAE (default 16)")
    p.add_argument("--audio-seconds", type=float, default=5.0, help="seconds of 16 kHz audio for HuBERT (default 5)")
    p.add_argument("--out", default="benchmarks/results/flops.json", help="JSON file to merge the figures into")
    args = p.parse_args(argv)
    fig = real_figures(args.seq_len, args.local_frames, args.audio_seconds)
    print_table(fig)
    from bench_decode import merge_sections

    group = {
        "machine": machine(),
        "device": "meta (shapes only, no weights)",
        "date": datetime.date.today().isoformat(),
        "command": f"python benchmarks/flops.py --seq-len {args.seq_len} --local-frames {args.local_frames} "
        f"--audio-seconds {args.audio_seconds:g}",
        "torch": torch.__version__,
        "counted": "FlopCounterMode: matmul/conv/attention, multiply-add = 2",
        **fig,
    }
    merge_sections(args.out, {"flops": group})
    print(f"\nwrote the 'flops' section of {args.out}")


if __name__ == "__main__":
    main()
