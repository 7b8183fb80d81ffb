"""The frozen encoders as Ray Data ``map_batches`` callables, and their presets (``featstore.names.PRESET_TABLE``).

| slot | class | batch in | batch out |
|---|---|---|---|
| global | ``EvaGlobalEncoder`` | ``frame`` uint8 [B, H, W, 3] | ``global`` [B, 1025, 1408] |
| local | ``MaeLocalEncoder`` | ``faces`` uint8 [B, F, 224, 224, 3] | ``local`` [B, 1024] |
| temporal | ``VideoMaeTemporalEncoder`` | ``face_frames`` uint8 [B, 16, 224, 224, 3] | ``temporal`` [B, 1024] |
| audio | ``HubertAudioEncoder`` | ``audio`` float32 [B, L], ``audio_len`` int64 [B] | ``audio`` [B, 1024] |
| frames | ``ClipFramesEncoder`` | ``frames`` uint8 [B, 8, 224, 224, 3] | ``frames`` [B, 8, 1024] |
| whisper | ``WhisperAudioEncoder`` | ``audio``, ``audio_len`` as above | ``whisper`` [B, 1280] or [B, 1500, 1280] |

Emotion-LLaMA (presets ``emotion-llama``, ``tiny``) uses the first four; AffectGPT
(``affectgpt``, ``tiny-affectgpt``) frames and audio; Emotion-LLaMA-v2
(``emotion-llama-v2``, ``tiny-emotion-llama-v2``) global and whisper.

Each has a ``.spec`` (a ``FeatureSpec``) whose ``weights`` is a hash of the
loaded state dict and whose ``preprocess`` records every setting that changes
the bytes.

Determinism. Preprocessing runs on the CPU in PIL and numpy, so the pixels and
samples a model sees are bitwise the same on every machine with the same
library versions (recorded in the spec). Models run in eval mode (no dropout,
no layer drop, no SpecAugment), with fixed ViT-MAE token order, deterministic
kernels asked for (``base.ask_for_determinism``) and, by default, one clip per
forward pass (audio: always), so a clip's features do not depend on its batch
neighbours. Run to run on the same device type, GPU model and versions, the
bytes are the same. Across device types (recorded as ``device_type``) or GPU
models (not recorded) they differ in the last bits: kernels round differently.
"""

from featstore.encoders.audio_hubert import HubertAudioEncoder
from featstore.encoders.audio_whisper import WhisperAudioEncoder
from featstore.encoders.frames_clip import ClipFramesEncoder
from featstore.encoders.global_eva import EvaGlobalEncoder
from featstore.encoders.local_mae import MaeLocalEncoder
from featstore.encoders.presets import (
    EMOTION_LLAMA_SOURCES,
    SLOTS,
    build_tiny_checkpoints,
    load_encoders,
    preset_sources,
)
from featstore.encoders.temporal_videomae import VideoMaeTemporalEncoder

__all__ = [
    "EMOTION_LLAMA_SOURCES",
    "SLOTS",
    "ClipFramesEncoder",
    "EvaGlobalEncoder",
    "HubertAudioEncoder",
    "MaeLocalEncoder",
    "VideoMaeTemporalEncoder",
    "WhisperAudioEncoder",
    "build_tiny_checkpoints",
    "load_encoders",
    "preset_sources",
]
