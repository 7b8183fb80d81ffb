"""Decode one clip into the inputs of every encoder that needs it: one decode a clip,
face crops once a frame, failures recorded per modality."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from featstore.checks import positive_int
from featstore.errors import MediaError
from featstore.media.audio import AudioDecodeConfig, decode_audio
from featstore.media.common import DEFAULT_TIMEOUT_S
from featstore.media.faces import FaceCropConfig, crop_faces
from featstore.media.frames import resize_and_crop
from featstore.media.video import FramePolicy, decode_video_policies
from featstore.names import INPUT_KEY, MANIFEST_STAGE, VISUAL_SLOTS
from featstore.paths import resolve

AUDIO_KEY = "audio"
# The ``frames`` slot's frames are handed at the encoder's size: short side to
# ``frames_size`` with PIL bicubic, then a centre crop (CLIP's preprocessing).
FRAMES_RESAMPLE = "bicubic"


@dataclass(frozen=True)
class DecodeConfig:
    """How clips become encoder inputs. Every field changes the features, so each
    encoder's spec records the part it depends on (``upstream``).

    Args:
        global_frame: frame for the global encoder: ``peak`` (MERR's annotated
            peak, else the middle), ``middle`` or ``first``.
        local_frames: frames sampled uniformly for the MAE face crops.
        frames: frames sampled uniformly for the ``frames`` slot (AffectGPT's CLIP: 8).
        frames_size: the ``frames`` slot's frame size (short side, then centre crop).
        backend: video decoder, ``auto`` (decord, PyAV fallback), ``decord`` or ``pyav``.
        face: face crop settings (local and temporal slots).
        audio: audio decode settings.
        timeout_s: time limit per clip and modality.
    """

    global_frame: str = "peak"
    local_frames: int = 8
    frames: int = 8
    frames_size: int = 224
    backend: str = "auto"
    face: FaceCropConfig = field(default_factory=FaceCropConfig)
    audio: AudioDecodeConfig = field(default_factory=AudioDecodeConfig)
    timeout_s: float = DEFAULT_TIMEOUT_S

    def __post_init__(self) -> None:
        if self.global_frame not in ("peak", "middle", "first"):
            raise ValueError(f"global_frame {self.global_frame!r} must be 'peak', 'middle' or 'first'")
        positive_int("local_frames", self.local_frames)
        positive_int("frames", self.frames)
        positive_int("frames_size", self.frames_size)

    def policies(self) -> dict[str, FramePolicy]:
        """Frame policy of each visual slot."""
        return {
            "global": FramePolicy(self.global_frame),
            "local": FramePolicy("uniform", n_frames=self.local_frames),
            "temporal": FramePolicy("videomae"),
            "frames": FramePolicy("uniform", n_frames=self.frames),
        }

    def upstream(self, slot: str) -> dict[str, Any]:
        """The decode settings a slot's features depend on, for its spec."""
        if INPUT_KEY[slot] == AUDIO_KEY:
            return {"audio": self.audio.to_dict()}
        out: dict[str, Any] = {"video_backend": self.backend, "frames": self.policies()[slot].to_dict()}
        if slot == "frames":
            size, resample = self.frames_size, f"{FRAMES_RESAMPLE} (PIL)"
            out["resize"] = {"shortest_edge": size, "center_crop": size, "resample": resample}
        elif slot != "global":
            out["face"] = self.face.to_dict()
        return out


@dataclass
class ClipInputs:
    """One clip's decoded inputs (by batch key) and per-slot failures ``(stage, reason)``."""

    sample_id: str
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    failures: dict[str, tuple[str, str]] = field(default_factory=dict)
    faces_found: int = 0
    faces_total: int = 0


def _failure(err: MediaError) -> tuple[str, str]:
    return err.stage, f"{err.reason}: {err}"


def decode_clip(sample: Any, root: str | Path, slots: Sequence[str], cfg: DecodeConfig) -> ClipInputs:
    """Decode what ``slots`` need from one manifest sample; never raises MediaError.

    A sample with ``error`` (its media is missing, outside the dataset root or
    unreadable) opens no file: every slot fails at stage ``manifest`` with that reason.

    Args:
        sample: a manifest Sample (``sample_id``, ``video``, ``audio``, ``extra``, ``error``).
        root: the dataset root its paths are relative to.
        slots: encoder slots to prepare inputs for.
        cfg: the decode settings.
    """
    out = ClipInputs(sample.sample_id)
    error = getattr(sample, "error", None)
    if error is not None:  # missing, unsafe or unreadable media: record why, open nothing
        out.failures.update({slot: (MANIFEST_STAGE, error) for slot in slots})
        return out
    visual = [s for s in slots if s in VISUAL_SLOTS]
    if visual:
        _decode_visual(sample, Path(root), visual, cfg, out)
    hearing = [s for s in slots if INPUT_KEY[s] == AUDIO_KEY]  # HuBERT and Whisper share the waveform
    if hearing:
        rel = sample.audio or sample.video
        try:
            if rel is None:
                raise ValueError("no audio file and no video in the manifest")
            out.arrays[AUDIO_KEY] = decode_audio(resolve(root, rel), cfg.audio, timeout_s=cfg.timeout_s).waveform
        except MediaError as err:
            out.failures.update({s: _failure(err) for s in hearing})
        except ValueError as err:
            out.failures.update({s: ("decode_audio", str(err)) for s in hearing})
    return out


def _decode_visual(sample: Any, root: Path, slots: list[str], cfg: DecodeConfig, out: ClipInputs) -> None:
    if sample.video is None:
        out.failures.update({s: ("decode_video", "no video in the manifest") for s in slots})
        return
    policies = cfg.policies()
    try:
        decoded = decode_video_policies(
            resolve(root, sample.video),
            [policies[s] for s in slots],
            cfg.backend,
            peak_index=(sample.extra or {}).get("peak_index"),
            timeout_s=cfg.timeout_s,
        )
    except MediaError as err:
        out.failures.update({s: _failure(err) for s in slots})
        return
    by_slot = dict(zip(slots, decoded))
    if "global" in by_slot:
        out.arrays["frame"] = by_slot["global"].frames[0]
    if "frames" in by_slot:
        out.arrays["frames"] = resize_and_crop(
            by_slot["frames"].frames, cfg.frames_size, cfg.frames_size, FRAMES_RESAMPLE
        )
    face_slots = [s for s in slots if s not in ("global", "frames")]
    if not face_slots:
        return
    # Crop each distinct frame once, then hand each slot its frames.
    frames = {i: f for s in face_slots for i, f in zip(by_slot[s].selection.indices, by_slot[s].frames)}
    order = sorted(frames)
    crops = crop_faces(np.stack([frames[i] for i in order]), cfg.face)
    pos = {i: k for k, i in enumerate(order)}
    out.faces_found, out.faces_total = int(crops.found.sum()), len(order)
    for s in face_slots:
        out.arrays[INPUT_KEY[s]] = crops.crops[[pos[i] for i in by_slot[s].selection.indices]]


def collate(clips: Sequence[ClipInputs], slot: str) -> tuple[list[str], dict[str, np.ndarray]]:
    """Stack the inputs of the clips that did not fail ``slot`` into one encoder batch.

    Returns:
        the ids in the batch, and the batch (audio zero-padded, with ``audio_len``).
    """
    ok = [c for c in clips if slot not in c.failures]
    ids = [c.sample_id for c in ok]
    key = INPUT_KEY[slot]
    if not ok:
        return ids, {}
    if key != AUDIO_KEY:
        return ids, {key: np.stack([c.arrays[key] for c in ok])}
    lengths = np.array([len(c.arrays[key]) for c in ok], dtype=np.int64)
    audio = np.zeros((len(ok), int(lengths.max())), dtype=np.float32)
    for i, c in enumerate(ok):
        audio[i, : lengths[i]] = c.arrays[key]
    return ids, {key: audio, "audio_len": lengths}


def failures_of(clips: Sequence[ClipInputs], slot: str) -> Mapping[str, tuple[str, str]]:
    """``{sample_id: (stage, reason)}`` of the clips that failed ``slot``."""
    return {c.sample_id: c.failures[slot] for c in clips if slot in c.failures}
