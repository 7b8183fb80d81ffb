"""Audio decoding: any file's first audio track (a wav, or a clip's own AAC) as mono float32 at 16 kHz.

PyAV decodes (it bundles FFmpeg, so no system FFmpeg is needed; torchaudio
2.11's ``load`` would need torchcodec and a system FFmpeg), channels are
averaged, and ``torchaudio.functional.resample`` changes the rate when the
file's differs from the target. Output is clipped to [-1, 1], since AAC
decoding and sinc resampling can overshoot full scale by a little.

Lengths: an AAC decoder emits whole 1024-sample frames, so the last frame's
padding comes out as extra samples (32768 decoded for a 32000-sample demo
clip); the waveform is trimmed to the stream's declared duration, after which
the mp4 track and the wav it was made from have the same length and line up
at lag 0 (correlation 0.99997 measured on the demo clips).

Threads: the resampling runs on torch's intra-op threads. Ray gives a one-CPU
task OMP_NUM_THREADS=1; elsewhere, on a busy machine, set
``torch.set_num_threads(1)`` in decode workers (two threads on a loaded 2-core
machine made a 44.1 kHz clip's resampling four times slower, not faster).
"""

from __future__ import annotations

import math
import numbers
import os
import threading
from dataclasses import dataclass
from typing import Any

import av
import numpy as np
import torch
import torchaudio
import torchaudio.functional

from featstore.checks import positive_number
from featstore.errors import MediaTooShortError, UnreadableMediaError
from featstore.media.common import DEFAULT_TIMEOUT_S, check_cancel, open_av, pyav_versions, run_with_timeout

__all__ = ["AudioDecodeConfig", "DecodedAudio", "decode_audio"]

STAGE = "decode_audio"
DEFAULT_RATE = 16_000  # what chinese-hubert-large expects
# chinese-hubert-large's convolutional feature encoder needs 400 samples (25 ms
# at 16 kHz) to produce its first frame; less cannot be encoded at all.
MIN_SECONDS = 0.025
# torchaudio.functional.resample's defaults, written out because they decide the bytes.
RESAMPLER = {
    "function": "torchaudio.functional.resample",
    "lowpass_filter_width": 6,
    "rolloff": 0.99,
    "resampling_method": "sinc_interp_hann",
}
# With max_seconds, decoding stops this far past the crop, so the resampling
# filter (6 zero crossings, well under 1 ms) sees real signal beyond the cut.
_CROP_MARGIN_S = 1.0
# Integer sample formats -> (offset, scale) onto [-1, 1).
_INT_SCALE = {"u8": (128.0, 128.0), "s16": (0.0, 32768.0), "s32": (0.0, 2147483648.0)}


@dataclass(frozen=True)
class AudioDecodeConfig:
    """How to decode a clip's audio.

    Attributes:
        sample_rate: output rate in Hz (default 16000).
        max_seconds: keep only the first this many seconds; None keeps all.
        min_seconds: fewer seconds than this raises MediaTooShortError (default
            0.025 s, the 400 samples HuBERT needs for one frame).
    """

    sample_rate: int = DEFAULT_RATE
    max_seconds: float | None = None
    min_seconds: float = MIN_SECONDS

    def __post_init__(self) -> None:
        """Raises ValueError for a bad rate, max_seconds or min_seconds (names the value)."""
        rate = self.sample_rate
        if isinstance(rate, bool) or not isinstance(rate, numbers.Integral) or not 1000 <= rate <= 384_000:
            raise ValueError(f"sample_rate must be an integer in 1000..384000 Hz, got {rate!r}")
        positive_number("max_seconds", self.max_seconds, allow_none=True)
        if not (_is_number(self.min_seconds) and self.min_seconds >= 0):
            raise ValueError(f"min_seconds must be a non-negative finite number, got {self.min_seconds!r}")
        if self.max_seconds is not None and self.min_seconds > self.max_seconds:
            raise ValueError(f"min_seconds {self.min_seconds!r} exceeds max_seconds {self.max_seconds!r}")

    def to_dict(self) -> dict[str, Any]:
        """Every parameter that decides the decoded bytes, as a stable JSON-able dict."""
        versions = {
            **pyav_versions(),
            "torch": torch.__version__.split("+")[0],
            "torchaudio": torchaudio.__version__.split("+")[0],
        }
        return {
            "decoder": "audio",
            "backend": "pyav",
            "versions": versions,
            "sample_rate": self.sample_rate,
            "channels": 1,
            "downmix": "mean",
            "dtype": "float32",
            "clip": [-1.0, 1.0],
            "trim": "stream duration",
            "resampler": dict(RESAMPLER),
            "max_seconds": self.max_seconds,
            "min_seconds": self.min_seconds,
        }


@dataclass(frozen=True)
class DecodedAudio:
    """A clip's decoded audio.

    Attributes:
        waveform: mono float32 ``[N]`` in [-1, 1].
        sample_rate: its rate in Hz (the config's).
        source_rate: the file's own rate in Hz.
        source_channels: the file's channel count before the downmix.
    """

    waveform: np.ndarray
    sample_rate: int
    source_rate: int
    source_channels: int

    @property
    def seconds(self) -> float:
        """Duration in seconds."""
        return self.waveform.shape[0] / self.sample_rate


def decode_audio(
    path: str | os.PathLike, config: AudioDecodeConfig | None = None, *, timeout_s: float | None = DEFAULT_TIMEOUT_S
) -> DecodedAudio:
    """Decode the first audio stream of a file (wav, m4a, or a video clip's own track).

    Args:
        path: the audio or video file.
        config: rate and crop; default 16 kHz, whole file.
        timeout_s: time limit in seconds (None: no limit); see :mod:`featstore.media`.

    Returns:
        the mono waveform at ``config.sample_rate`` with the source's rate and channel count.

    Raises:
        UnreadableMediaError: missing, empty, not a media container, corrupt, or an unknown sample format.
        NoAudioStreamError: the file has no audio stream (a silent clip).
        MediaTooShortError: shorter than ``config.min_seconds`` (or no samples at all).
        DecodeTimeout: the decode took longer than ``timeout_s``.
    """
    cfg = AudioDecodeConfig() if config is None else config
    return run_with_timeout(lambda cancel: _decode(path, cfg, cancel), timeout_s, stage=STAGE, path=path)


def _decode(path: str | os.PathLike, cfg: AudioDecodeConfig, cancel: threading.Event) -> DecodedAudio:
    """Decode, downmix, trim, resample, crop and check the length."""
    source, rate, channels = _read_stream(path, cfg, cancel)
    mono = source.mean(axis=0, dtype=np.float32) if channels > 1 else source[0]
    if rate != cfg.sample_rate and mono.size:
        mono = torchaudio.functional.resample(
            torch.from_numpy(np.ascontiguousarray(mono))[None], rate, cfg.sample_rate
        )[0].numpy()
    if cfg.max_seconds is not None:
        mono = mono[: round(cfg.max_seconds * cfg.sample_rate)]
    needed = max(1, math.ceil(cfg.min_seconds * cfg.sample_rate))
    if mono.size < needed:
        raise MediaTooShortError(
            f"{path} holds {mono.size} samples at {cfg.sample_rate} Hz; at least {needed} "
            f"({cfg.min_seconds:g} s) are needed",
            stage=STAGE,
            path=str(path),
        )
    waveform = np.clip(mono, -1.0, 1.0).astype(np.float32, copy=False)
    return DecodedAudio(np.ascontiguousarray(waveform), cfg.sample_rate, rate, channels)


def _read_stream(
    path: str | os.PathLike, cfg: AudioDecodeConfig, cancel: threading.Event
) -> tuple[np.ndarray, int, int]:
    """Decode the first audio stream to float32 ``[channels, samples]``; return it, its rate and channel count."""
    with open_av(path, stage=STAGE, kind="audio") as (container, stream):
        rate = int(stream.codec_context.sample_rate or 0)
        if rate <= 0:
            raise UnreadableMediaError(f"{path}: audio stream has no sample rate", stage=STAGE, path=str(path))
        limit = None if cfg.max_seconds is None else math.ceil((cfg.max_seconds + _CROP_MARGIN_S) * rate)
        chunks, total = [], 0
        try:
            for frame in container.decode(stream):
                check_cancel(cancel)
                chunks.append(_frame_to_float(frame, rate, path))
                total += chunks[-1].shape[1]
                if limit is not None and total >= limit:
                    break
        except av.FFmpegError as err:
            raise UnreadableMediaError(
                f"FFmpeg failed decoding audio of {path} after {total} samples: {err}", stage=STAGE, path=str(path)
            ) from err
        declared = _declared_samples(stream, rate)
    channel_counts = {c.shape[0] for c in chunks}
    if len(channel_counts) > 1:
        raise UnreadableMediaError(
            f"{path}: channel count changes mid-stream ({sorted(channel_counts)})", stage=STAGE, path=str(path)
        )
    if not chunks:
        raise MediaTooShortError(f"{path}: the audio stream decodes to no samples", stage=STAGE, path=str(path))
    source = np.concatenate(chunks, axis=1)
    if declared is not None and declared < source.shape[1]:
        source = source[:, :declared]  # drop the codec's padding of its last frame
    return source, rate, source.shape[0]


def _frame_to_float(frame: av.AudioFrame, rate: int, path: str | os.PathLike) -> np.ndarray:
    """One decoded frame as float32 ``[channels, samples]``, from planar or packed, integer or float samples."""
    if frame.sample_rate != rate:
        raise UnreadableMediaError(
            f"{path}: sample rate changes mid-stream ({rate} -> {frame.sample_rate} Hz)", stage=STAGE, path=str(path)
        )
    data = frame.to_ndarray()
    channels = len(frame.layout.channels)
    if not frame.format.is_planar:  # packed: one row of interleaved samples
        data = data.reshape(-1, channels).T
    name = frame.format.name.rstrip("p")
    if name in ("flt", "dbl"):
        return data.astype(np.float32, copy=False)
    if name not in _INT_SCALE:
        raise UnreadableMediaError(
            f"{path}: unsupported audio sample format {frame.format.name!r}", stage=STAGE, path=str(path)
        )
    offset, scale = _INT_SCALE[name]
    return ((data.astype(np.float32) - np.float32(offset)) / np.float32(scale)).astype(np.float32, copy=False)


def _declared_samples(stream: Any, rate: int) -> int | None:
    """The stream's duration in samples, as its container declares it, or None when it does not."""
    if not stream.duration or stream.time_base is None:
        return None
    return int(round(stream.duration * stream.time_base * rate))


def _is_number(value: Any) -> bool:
    """Whether value is a finite real number (not a bool)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
