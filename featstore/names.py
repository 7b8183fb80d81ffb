"""The fixed vocabularies every part shares, defined once: encoder slots and the
batch key of each slot's input, encoder presets, manifest formats and the
emotion label sets. Plain Python, no imports: the extraction config, the
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
    "SLOTS",
    "VISUAL_SLOTS",
]

# Emotion-LLaMA's four frozen encoders, in the order their tokens enter the LLM
# after the global patch tokens (DESIGN.md).
SLOTS = ("global", "local", "temporal", "audio")
VISUAL_SLOTS = ("global", "local", "temporal")
# Slot -> the key of its decoded input in a batch (see featstore.encoders).
INPUT_KEY = MappingProxyType({"global": "frame", "local": "faces", "temporal": "face_frames", "audio": "audio"})

# Failure stage of a sample whose media the manifest found missing, unsafe or unreadable.
MANIFEST_STAGE = "manifest"

# "emotion-llama": the published checkpoints; "tiny": the same classes, small and random (CPU, tests, demo).
PRESETS = ("tiny", "emotion-llama")

# Manifest formats load_manifest reads ("auto" detects one of these).
FORMATS = ("merr", "mer2023", "dfew", "csv", "jsonl")

# MERR's nine labels (Emotion-LLaMA's instruction lists them in another order:
# see trainer.data.tasks); MER2023's six; DFEW's seven, by the integer its CSVs use.
MERR_LABELS = ("neutral", "angry", "happy", "sad", "worried", "surprise", "fear", "contempt", "doubt")
MER2023_LABELS = ("neutral", "angry", "happy", "sad", "worried", "surprise")
DFEW_LABELS = MappingProxyType({1: "happy", 2: "sad", 3: "neutral", 4: "angry", 5: "surprise", 6: "disgust", 7: "fear"})
