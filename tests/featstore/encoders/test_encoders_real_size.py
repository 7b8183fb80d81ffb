"""The real-size encoders, built on the meta device from the real configs' numbers: widths and parameter counts."""

from __future__ import annotations

import pytest
import torch
from transformers import Blip2VisionModel, CLIPVisionModel, HubertModel, VideoMAEModel, ViTMAEModel
from transformers.models.whisper.modeling_whisper import WhisperEncoder

from featstore.encoders.presets import real_config

# Parameter counts of the published encoders (EVA ViT-g/14 as BLIP-2 keeps it, 39
# blocks; MAE ViT-L encoder only; VideoMAE ViT-L; HuBERT-large; CLIP ViT-L/14's vision tower;
# Whisper-large-v3's encoder, 1500 frames of a 30 s window), in billions.
EXPECTED = {
    "global": (
        Blip2VisionModel,
        0.99,
        lambda: {"pixel_values": torch.empty(1, 3, 448, 448), "interpolate_pos_encoding": True},
        (1, 1025, 1408),
    ),
    "local": (
        ViTMAEModel,
        0.30,
        lambda: {"pixel_values": torch.empty(2, 3, 224, 224), "noise": torch.arange(196.0).expand(2, -1)},
        (2, 197, 1024),
    ),
    "temporal": (VideoMAEModel, 0.30, lambda: {"pixel_values": torch.empty(1, 16, 3, 224, 224)}, (1, 1568, 1024)),
    "audio": (HubertModel, 0.32, lambda: {"input_values": torch.empty(1, 16000)}, (1, 49, 1024)),
    "frames": (CLIPVisionModel, 0.30, lambda: {"pixel_values": torch.empty(8, 3, 224, 224)}, (8, 257, 1024)),
    "whisper": (WhisperEncoder, 0.635, lambda: {"input_features": torch.empty(1, 128, 3000)}, (1, 1500, 1280)),
}


@pytest.mark.parametrize("slot", list(EXPECTED))
def test_real_size_widths_and_parameter_counts(slot):
    cls, billions, inputs, out_shape = EXPECTED[slot]
    with torch.device("meta"):
        model = cls(real_config(slot)).eval()
        out = model(**inputs()).last_hidden_state
    count = sum(p.numel() for p in model.parameters()) / 1e9
    assert abs(count - billions) / billions < 0.03, f"{slot}: {count:.4f}B parameters, expected about {billions}B"
    assert tuple(out.shape) == out_shape
