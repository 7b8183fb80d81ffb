"""Encoder presets: the table in ``featstore.names.PRESET_TABLE`` made into loaded encoders.

A preset names, for each of its slots, the encoder class, the checkpoint source
and that encoder's options (see the table). Real presets (``emotion-llama``,
``emotion-llama-v2``, ``affectgpt``) load the published checkpoints by hub name,
or from local folders given as per-slot overrides; ``tiny`` and the ``tiny-*``
presets build the same classes with small configs and random weights
(``featstore.encoders.tiny``), so tests and the demo run the real loading and
encoding code on a CPU without a download. The code below has no branch per
preset: a new preset is a new row of the table.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any

from featstore.encoders.audio_hubert import HubertAudioEncoder
from featstore.encoders.audio_whisper import WhisperAudioEncoder
from featstore.encoders.configs import REAL_CLIP, REAL_EVA, REAL_HUBERT, REAL_MAE, REAL_VIDEOMAE, REAL_WHISPER
from featstore.encoders.configs import real_config as _real_config
from featstore.encoders.frames_clip import ClipFramesEncoder
from featstore.encoders.global_eva import EvaGlobalEncoder
from featstore.encoders.local_mae import MaeLocalEncoder
from featstore.encoders.original import original_options
from featstore.encoders.temporal_videomae import VideoMaeTemporalEncoder
from featstore.encoders.tiny import TINY_SLOTS, build_tiny_checkpoints
from featstore.names import PRESET_TABLE, SLOTS, TINY_SOURCE, preset_slots

__all__ = [
    "ALL_SLOTS",
    "CLASSES",
    "EMOTION_LLAMA_SOURCES",
    "ENCODERS",
    "REAL_CLIP",
    "REAL_EVA",
    "REAL_HUBERT",
    "REAL_MAE",
    "REAL_VIDEOMAE",
    "REAL_WHISPER",
    "SLOTS",
    "build_tiny_checkpoints",
    "check_slot",
    "load_encoders",
    "preset_sources",
    "real_config",
]

# The encoder classes the table names.
CLASSES = MappingProxyType(
    {
        cls.__name__: cls
        for cls in (
            EvaGlobalEncoder,
            MaeLocalEncoder,
            VideoMaeTemporalEncoder,
            HubertAudioEncoder,
            ClipFramesEncoder,
            WhisperAudioEncoder,
        )
    }
)
# Every slot of every preset, in first-seen order; each slot has one encoder class in every preset.
ALL_SLOTS = tuple(dict.fromkeys(s for row in PRESET_TABLE.values() for s in row))
ENCODERS = MappingProxyType({s: CLASSES[row[s][0]] for s in ALL_SLOTS for row in PRESET_TABLE.values() if s in row})
EMOTION_LLAMA_SOURCES = MappingProxyType({s: src for s, (_, src, _) in PRESET_TABLE["emotion-llama"].items()})


def real_config(slot: str) -> Any:
    """The real encoder's config for ``slot`` (for meta-device checks and benchmarks).

    Raises:
        ValueError: naming an unknown slot.
    """
    return _real_config(check_slot(slot))


def check_slot(slot: str, preset: str | None = None) -> str:
    """Return ``slot`` if it is a slot of ``preset`` (of any preset when None).

    Raises:
        ValueError: naming the slot and the valid ones.
    """
    valid = ALL_SLOTS if preset is None else preset_slots(preset)
    if slot not in valid:
        where = f"preset {preset!r}" if preset else "the presets"
        raise ValueError(f"unknown encoder slot {slot!r} for {where}; slots are {valid}")
    return slot


def preset_sources(
    preset: str,
    overrides: Mapping[str, str] | None = None,
    tiny_dir: str | os.PathLike | None = None,
    slots: Sequence[str] | None = None,
) -> dict[str, str]:
    """Slot to checkpoint source for ``slots`` of a preset (default all), with per-slot overrides applied.

    The tiny checkpoints those slots need (unless overridden) are built under ``tiny_dir``.

    Raises:
        ValueError: unknown preset or slot, or a tiny source without ``tiny_dir``.
    """
    slots = list(preset_slots(preset) if slots is None else slots)
    sources = {s: PRESET_TABLE[preset][check_slot(s, preset)][1] for s in slots}
    sources.update({check_slot(s, preset): str(v) for s, v in (overrides or {}).items()})
    tiny = {s: src.removeprefix(TINY_SOURCE) for s, src in sources.items() if src.startswith(TINY_SOURCE)}
    if tiny:
        if tiny_dir is None:
            raise ValueError(f"preset {preset!r} needs tiny_dir, the folder to build its tiny checkpoints in")
        built = build_tiny_checkpoints(tiny_dir, slots=[t for t in TINY_SLOTS if t in tiny.values()])
        sources.update({s: str(built[name]) for s, name in tiny.items()})
    return sources


def load_encoders(
    preset: str,
    slots: Sequence[str] | None = None,
    overrides: Mapping[str, str] | None = None,
    device: str | None = None,
    tiny_dir: str | os.PathLike | None = None,
    options: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """Load the encoders of ``slots`` from a preset.

    Args:
        preset: A row of ``PRESET_TABLE``: ``"emotion-llama"``, ``"emotion-llama-v2"``,
            ``"affectgpt"`` (the real checkpoints) or their tiny stand-ins (``"tiny"``, ``"tiny-*"``).
        slots: Which of the preset's slots to load (default all of them).
        overrides: Slot to source (a local folder or a hub name) replacing the preset's.
        device: Passed to every encoder (default: a GPU if there is one, else the CPU).
        tiny_dir: Folder for the tiny checkpoints (needed by the tiny presets).
        options: Slot to extra keyword arguments for that encoder (e.g. ``{"local": {"frames": 8}}``),
            over the table's options for it.

    Returns:
        Slot to encoder, in the order of ``slots``.

    Raises:
        ValueError: unknown preset or slot, or options for a slot not loaded.
        CheckpointNotFoundError: a checkpoint cannot be found; says which slot and source.
        CheckpointError: a checkpoint does not fit its encoder.
    """
    slots = [check_slot(s, preset) for s in (preset_slots(preset) if slots is None else slots)]
    options = dict(options or {})
    stray = sorted(set(options) - set(slots))
    if stray:
        raise ValueError(f"options given for slots {stray} that are not loaded ({slots})")
    overrides = {check_slot(s, preset): v for s, v in (overrides or {}).items()}
    sources = preset_sources(preset, {s: v for s, v in overrides.items() if s in slots}, tiny_dir, slots)
    out = {}
    for s in slots:
        cls_name, _, table_options = PRESET_TABLE[preset][s]
        # Weights from the original's files get the original's preprocessing unless options say otherwise.
        kwargs = {**table_options, **original_options(s, sources[s]), **dict(options.get(s, {}))}
        out[s] = CLASSES[cls_name](sources[s], device=device, **kwargs)
    return out
