"""Encoder presets: Emotion-LLaMA's four real checkpoints, and tiny stand-ins built from the same classes.

``emotion-llama`` loads the published checkpoints by hub name (or from local
folders given as overrides). ``tiny`` builds the same four transformers classes
with small configs and random weights from a fixed seed, saves them with
``save_pretrained`` and loads them back through ``from_pretrained``, so tests
and the demo run the real loading and encoding code on a CPU without a download.
The tiny global model is a full BLIP-2 checkpoint (tiny Q-Former and OPT too),
as the real one is, and keeps the real 224 px / patch 14 position grid, run at
448 px: the same interpolation path and the same 1025 tokens, only narrower.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

import torch
import transformers
from transformers import (
    Blip2Config,
    Blip2ForConditionalGeneration,
    Blip2VisionConfig,
    HubertConfig,
    HubertModel,
    PretrainedConfig,
    PreTrainedModel,
    VideoMAEConfig,
    VideoMAEForPreTraining,
    ViTMAEConfig,
    ViTMAEForPreTraining,
)

from featstore.encoders.audio_hubert import HubertAudioEncoder
from featstore.encoders.global_eva import EvaGlobalEncoder
from featstore.encoders.local_mae import MaeLocalEncoder
from featstore.encoders.original import original_options
from featstore.encoders.temporal_videomae import VideoMaeTemporalEncoder
from featstore.names import PRESETS, SLOTS
from featstore.spec import canonical_json

ENCODERS = MappingProxyType(
    {
        "global": EvaGlobalEncoder,
        "local": MaeLocalEncoder,
        "temporal": VideoMaeTemporalEncoder,
        "audio": HubertAudioEncoder,
    }
)
EMOTION_LLAMA_SOURCES = MappingProxyType(
    {
        "global": "Salesforce/blip2-opt-2.7b",
        "local": "facebook/vit-mae-large",
        "temporal": "MCG-NJU/videomae-large",
        "audio": "TencentGameMate/chinese-hubert-large",
    }
)
TINY_SEED = 0
_RECIPE_FILE = "featstore_tiny.json"

# Real configs' key numbers, from each checkpoint's config.json (no download needed):
# EVA ViT-g/14 as BLIP-2 keeps it (Blip2VisionConfig defaults: 39 blocks, 1408 wide).
REAL_EVA = dict(
    hidden_size=1408,
    intermediate_size=6144,
    num_hidden_layers=39,
    num_attention_heads=16,
    image_size=224,
    patch_size=14,
    layer_norm_eps=1e-6,
    qkv_bias=True,
)
# ViT-L/16 at 224 px, as both MAE and VideoMAE large checkpoints have it.
_VIT_LARGE = dict(
    hidden_size=1024,
    intermediate_size=4096,
    num_hidden_layers=24,
    num_attention_heads=16,
    image_size=224,
    patch_size=16,
    layer_norm_eps=1e-12,
    qkv_bias=True,
)
# facebook/vit-mae-large encoder (the decoder is not part of ViTMAEModel).
REAL_MAE = dict(_VIT_LARGE, mask_ratio=0.0)
# MCG-NJU/videomae-large (pre-training checkpoint: final layer norm, no mean pooling).
REAL_VIDEOMAE = dict(_VIT_LARGE, num_frames=16, tubelet_size=2, use_mean_pooling=False)
# TencentGameMate/chinese-hubert-large: layer-norm conv features, pre-norm ("stable") transformer.
REAL_HUBERT = dict(
    hidden_size=1024,
    intermediate_size=4096,
    num_hidden_layers=24,
    num_attention_heads=16,
    feat_extract_norm="layer",
    do_stable_layer_norm=True,
    conv_bias=False,
    conv_dim=(512,) * 7,
    conv_stride=(5, 2, 2, 2, 2, 2, 2),
    conv_kernel=(10, 3, 3, 3, 3, 2, 2),
    num_conv_pos_embeddings=128,
    num_conv_pos_embedding_groups=16,
)

# Tiny stand-ins: the real structure (patch grids, frame counts, conv strides,
# norm placement) at width 32 and depth 2; initializer_range 0.02 because
# Blip2VisionConfig's default (1e-10) would make a random tower all but constant.
_TINY_BLOCK = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4)
TINY_EVA = {**REAL_EVA, **_TINY_BLOCK, "initializer_range": 0.02}
TINY_MAE = {
    **REAL_MAE,
    **_TINY_BLOCK,
    "decoder_hidden_size": 32,
    "decoder_num_hidden_layers": 1,
    "decoder_num_attention_heads": 4,
    "decoder_intermediate_size": 64,
}
TINY_VIDEOMAE = {
    **REAL_VIDEOMAE,
    **_TINY_BLOCK,
    "decoder_hidden_size": 32,
    "decoder_num_hidden_layers": 1,
    "decoder_num_attention_heads": 4,
    "decoder_intermediate_size": 64,
}
TINY_HUBERT = {
    **REAL_HUBERT,
    **_TINY_BLOCK,
    "conv_dim": (32,) * 7,
    "num_conv_pos_embeddings": 16,
    "num_conv_pos_embedding_groups": 4,
}
_TINY_QFORMER = dict(
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=1,
    num_attention_heads=4,
    vocab_size=64,
    max_position_embeddings=32,
)
_TINY_OPT = dict(
    model_type="opt",
    hidden_size=32,
    ffn_dim=64,
    num_hidden_layers=1,
    num_attention_heads=4,
    vocab_size=64,
    word_embed_proj_dim=32,
    max_position_embeddings=32,
)


def real_config(slot: str) -> PretrainedConfig:
    """The real encoder's config for ``slot``, from the constants above (for meta-device checks and benchmarks)."""
    configs = {
        "global": lambda: Blip2VisionConfig(**REAL_EVA),
        "local": lambda: ViTMAEConfig(**REAL_MAE),
        "temporal": lambda: VideoMAEConfig(**REAL_VIDEOMAE),
        "audio": lambda: HubertConfig(**REAL_HUBERT),
    }
    return configs[check_slot(slot)]()


def check_slot(slot: str) -> str:
    """Return ``slot`` if it is one of ``SLOTS``.

    Raises:
        ValueError: naming the slot and the valid ones.
    """
    if slot not in SLOTS:
        raise ValueError(f"unknown encoder slot {slot!r}; slots are {SLOTS}")
    return slot


def _tiny_recipes() -> dict[str, Callable[[], PreTrainedModel]]:
    """How each tiny checkpoint is built, as the class its real counterpart is saved as."""

    def blip2() -> PreTrainedModel:
        config = Blip2Config(
            vision_config=TINY_EVA, qformer_config=_TINY_QFORMER, text_config=_TINY_OPT, num_query_tokens=4
        )
        return Blip2ForConditionalGeneration(config)

    return {
        "global": blip2,
        "local": lambda: ViTMAEForPreTraining(ViTMAEConfig(**TINY_MAE)),
        "temporal": lambda: VideoMAEForPreTraining(VideoMAEConfig(**TINY_VIDEOMAE)),
        "audio": lambda: HubertModel(HubertConfig(**TINY_HUBERT)),
    }


def _recipe_id(slot: str, seed: int) -> str:
    """A hash of everything that decides a tiny checkpoint's bytes, to tell a stale folder from a current one."""
    configs = {
        "global": [TINY_EVA, _TINY_QFORMER, _TINY_OPT],
        "local": TINY_MAE,
        "temporal": TINY_VIDEOMAE,
        "audio": TINY_HUBERT,
    }
    text = canonical_json(
        {
            "slot": slot,
            "seed": seed,
            "config": json.loads(json.dumps(configs[slot])),
            "transformers": transformers.__version__,
            "torch": torch.__version__,
        }
    )
    return hashlib.sha256(text.encode("ascii")).hexdigest()[:16]


def build_tiny_checkpoints(directory: str | os.PathLike, seed: int = TINY_SEED) -> dict[str, Path]:
    """Build (once) the four tiny checkpoints under ``directory``, one folder per slot.

    Idempotent: a slot folder whose recipe (configs, seed, library versions)
    matches is kept as it is; one that is missing or stale is rebuilt in a
    temporary folder and moved into place, so a concurrent reader never sees
    half a checkpoint. The same recipe gives the same bytes every time.

    Args:
        directory: Where to put the ``global``, ``local``, ``temporal`` and ``audio`` folders.
        seed: The torch seed the random weights come from.

    Returns:
        Slot name to checkpoint folder.
    """
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    out = {}
    for slot, build in _tiny_recipes().items():
        folder = root / slot
        recipe = _recipe_id(slot, seed)
        marker = folder / _RECIPE_FILE
        if not (marker.is_file() and json.loads(marker.read_text()).get("recipe") == recipe):
            _build_one(folder, build, seed, recipe)
        out[slot] = folder
    return out


def _build_one(folder: Path, build: Callable[[], PreTrainedModel], seed: int, recipe: str) -> None:
    """Build one tiny model from ``seed`` without touching the global RNG, save it, move it into place."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build()
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    model.save_pretrained(tmp)
    (tmp / _RECIPE_FILE).write_text(json.dumps({"recipe": recipe, "seed": seed}, sort_keys=True) + "\n")
    if folder.exists():
        shutil.rmtree(folder)
    os.replace(tmp, folder)


def preset_sources(
    preset: str, overrides: Mapping[str, str] | None = None, tiny_dir: str | os.PathLike | None = None
) -> dict[str, str]:
    """Slot to checkpoint source for a preset, with per-slot overrides applied.

    Raises:
        ValueError: unknown preset or override slot, or ``tiny`` without ``tiny_dir``.
    """
    overrides = dict(overrides or {})
    for slot in overrides:
        check_slot(slot)
    if preset == "emotion-llama":
        sources = dict(EMOTION_LLAMA_SOURCES)
    elif preset == "tiny":
        if tiny_dir is None:
            raise ValueError("preset 'tiny' needs tiny_dir, the folder to build its checkpoints in")
        sources = {k: str(v) for k, v in build_tiny_checkpoints(tiny_dir).items()}
    else:
        raise ValueError(f"unknown encoder preset {preset!r}; presets are {PRESETS}")
    sources.update({k: str(v) for k, v in overrides.items()})
    return sources


def load_encoders(
    preset: str,
    slots: tuple[str, ...] | list[str] = SLOTS,
    overrides: Mapping[str, str] | None = None,
    device: str | None = None,
    tiny_dir: str | os.PathLike | None = None,
    options: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """Load the encoders of ``slots`` from a preset.

    Args:
        preset: ``"emotion-llama"`` (the real checkpoints) or ``"tiny"``.
        slots: Which of ``SLOTS`` to load.
        overrides: Slot to source (a local folder or a hub name) replacing the preset's.
        device: Passed to every encoder (default: a GPU if there is one, else the CPU).
        tiny_dir: Folder for the tiny checkpoints (needed by ``tiny``).
        options: Slot to extra keyword arguments for that encoder (e.g. ``{"local": {"frames": 8}}``).

    Returns:
        Slot to encoder, in the order of ``slots``.

    Raises:
        ValueError: unknown preset or slot, or options for a slot not loaded.
        CheckpointNotFoundError: a checkpoint cannot be found; says which slot and source.
        CheckpointError: a checkpoint does not fit its encoder.
    """
    slots = [check_slot(s) for s in slots]
    options = dict(options or {})
    stray = sorted(set(options) - set(slots))
    if stray:
        raise ValueError(f"options given for slots {stray} that are not loaded ({slots})")
    sources = preset_sources(preset, overrides, tiny_dir)
    # Weights from the original's files get the original's preprocessing unless options say otherwise.
    return {
        s: ENCODERS[s](sources[s], device=device, **{**original_options(s, sources[s]), **dict(options.get(s, {}))})
        for s in slots
    }
