"""The fixed vocabularies every part shares, defined once: encoder slots and the
batch key of each slot's input, encoder presets (as one table), manifest formats
and the emotion label sets. Plain Python, no imports: the extraction config, the
decode stage, the encoders and the trainer all read these."""

from __future__ import annotations

from types import MappingProxyType

__all__ = [
    "DFEW_LABELS",
    "FORMATS",
    "INPUT_KEY",
    "MANIFEST_STAGE",
    "MER2023_LABELS",
    "MERR_LABELS",
    "PRESETS",
    "PRESET_TABLE",
    "SLOTS",
    "TINY_SOURCE",
    "VISUAL_SLOTS",
    "preset_slots",
]

# Emotion-LLaMA's four frozen encoders, in the order their tokens enter the LLM
# after the global patch tokens (DESIGN.md).
SLOTS = ("global", "local", "temporal", "audio")
VISUAL_SLOTS = ("global", "local", "temporal", "frames")
# Slot -> the key of its decoded input in a batch (see featstore.encoders). ``frames``:
# uint8 [B, N, H, W, 3], N uniform frames at the encoder's size; ``whisper`` reads the
# same 16 kHz mono waveform (``audio`` with ``audio_len``) as HuBERT's ``audio`` slot.
INPUT_KEY = MappingProxyType(
    {
        "global": "frame",
        "local": "faces",
        "temporal": "face_frames",
        "audio": "audio",
        "frames": "frames",
        "whisper": "audio",
    }
)

# Failure stage of a sample whose media the manifest found missing, unsafe or unreadable.
MANIFEST_STAGE = "manifest"

# A preset's source "tiny:SLOT" is the tiny checkpoint of that slot: the real class,
# small and random from a fixed seed, built on the node (featstore.encoders.tiny).
TINY_SOURCE = "tiny:"
# Encoder presets, as data: preset -> slot -> (encoder class in featstore.encoders,
# checkpoint source: a hub name, overridable per slot by a local folder, options for
# that encoder). Slots are in the order a model reads them. A slot with the same
# class, source and options in two presets gives one spec id: a store holding both
# presets shares that feature. "tiny-*" are the CPU stand-ins of the real presets
# (same classes and slot names). Emotion-LLaMA-v2 keeps Emotion-LLaMA's EVA global
# feature and hears with Whisper-large-v3's encoder; AffectGPT sees 8 frames through
# CLIP ViT-L/14 and hears with Emotion-LLaMA's HuBERT.
_EVA = "EvaGlobalEncoder"
_HUBERT = "HubertAudioEncoder"
_CLIP = "ClipFramesEncoder"
_WHISPER = "WhisperAudioEncoder"
_REAL_PRESETS = {
    "emotion-llama": {
        "global": (_EVA, "Salesforce/blip2-opt-2.7b", {}),
        "local": ("MaeLocalEncoder", "facebook/vit-mae-large", {}),
        "temporal": ("VideoMaeTemporalEncoder", "MCG-NJU/videomae-large", {}),
        "audio": (_HUBERT, "TencentGameMate/chinese-hubert-large", {}),
    },
    "affectgpt": {
        "frames": (_CLIP, "openai/clip-vit-large-patch14", {}),
        "audio": (_HUBERT, "TencentGameMate/chinese-hubert-large", {}),
    },
    "emotion-llama-v2": {
        "global": (_EVA, "Salesforce/blip2-opt-2.7b", {}),
        "whisper": (_WHISPER, "openai/whisper-large-v3", {}),
    },
}
# Each real preset's tiny stand-in: the same rows with the tiny checkpoints as sources.
_TINY_NAMES = {"emotion-llama": "tiny", "affectgpt": "tiny-affectgpt", "emotion-llama-v2": "tiny-emotion-llama-v2"}
PRESET_TABLE = MappingProxyType(
    {
        name: rows
        for real, real_rows in _REAL_PRESETS.items()
        for name, rows in (
            (_TINY_NAMES[real], {s: (cls, TINY_SOURCE + s, dict(opts)) for s, (cls, _, opts) in real_rows.items()}),
            (real, real_rows),
        )
    }
)
PRESETS = tuple(PRESET_TABLE)


def preset_slots(preset: str) -> tuple[str, ...]:
    """The slots of ``preset``, in its table order.

    Raises:
        ValueError: naming the unknown preset and the known ones.
    """
    if preset not in PRESET_TABLE:
        raise ValueError(f"unknown encoder preset {preset!r}; presets are {PRESETS}")
    return tuple(PRESET_TABLE[preset])


# Manifest formats load_manifest reads ("auto" detects one of these).
FORMATS = ("merr", "mer2023", "dfew", "csv", "jsonl")

# MERR's nine labels (Emotion-LLaMA's instruction lists them in another order:
# see trainer.data.tasks); MER2023's six; DFEW's seven, by the integer its CSVs use.
MERR_LABELS = ("neutral", "angry", "happy", "sad", "worried", "surprise", "fear", "contempt", "doubt")
MER2023_LABELS = ("neutral", "angry", "happy", "sad", "worried", "surprise")
DFEW_LABELS = MappingProxyType({1: "happy", 2: "sad", 3: "neutral", 4: "angry", 5: "surprise", 6: "disgust", 7: "fear"})
