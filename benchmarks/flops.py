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
from typing import Any, Mapping

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere: the repo's packages

# The counting lives in the library (trainer.model.flops, used by `describe --estimate-epoch`);
# bench_epoch.py imports these names from here.
from trainer.model.flops import (  # noqa: E402, F401
    EVA_IMAGE,
    FACE_SIZE,
    FEATURE_TOKENS,
    FP16_BYTES,
    REAL_SHAPES,
    SAMPLE_RATE,
    VIDEO_FRAMES,
    cached_bytes,
    count,
    encoder_flops,
    encoder_models,
    llama_step_flops,
    real_figures,
    real_llama,
)


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
