"""Video decoding: a typed frame-selection policy and RGB uint8 frames from decord, or PyAV as the fallback.

Frames come back as one array ``[T, H, W, 3]`` of RGB uint8 at the clip's own
size (resizing is the encoder's preprocessing, not the decoder's). Frame ``k``
is the k-th frame in presentation order. decord and PyAV both convert YUV to
RGB with libswscale's defaults and give the same bytes: equal bit for bit on
the demo clips (H.264 4:2:0) and on H.264 4:4:4, full-range, BT.709-tagged,
odd-sized and MPEG-4 Part 2 AVI clips tried when this was written. decord
seeks to the frames it needs; PyAV decodes from frame 0 up to the last
needed one (exact, no seek-accuracy questions, but a late frame of a long
clip costs the whole prefix).
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import av
import decord
import numpy as np

from featstore.checks import non_negative_int, positive_int
from featstore.errors import MediaTooShortError, NoVideoStreamError, UnreadableMediaError
from featstore.media.common import DEFAULT_TIMEOUT_S, check_cancel, check_file, open_av, pyav_versions, run_with_timeout

__all__ = [
    "BACKENDS",
    "POLICIES",
    "DecodedVideo",
    "FramePolicy",
    "FrameSelection",
    "VideoDecodeConfig",
    "decode_video",
    "frame_indices",
]

STAGE = "decode_video"
POLICIES = ("first", "middle", "peak", "uniform", "videomae")
BACKENDS = ("auto", "decord", "pyav")
# The VideoMAE recipe Emotion-LLaMA's temporal slot uses: 16 frames, every 4th, from frame 0.
VIDEOMAE_FRAMES, VIDEOMAE_STRIDE = 16, 4
_SINGLE = ("first", "middle", "peak")
# decord decodes this many frames per call, so a timed-out decode stops at the next batch.
_DECORD_BATCH = 32


@dataclass(frozen=True)
class FramePolicy:
    """Which frames of a clip to decode.

    Policies and the frames they need (fewer raises MediaTooShortError):

    - ``first``: frame 0. Needs 1 frame.
    - ``middle``: frame ``L // 2`` of a clip of L frames (the later middle for even L). Needs 1.
    - ``peak``: the annotated ``peak_index`` (MERR); without one, the middle frame, and
      the selection records the fallback. Needs ``peak_index + 1`` frames.
    - ``uniform``: ``n_frames`` frames at the centres of L equal segments,
      ``floor((i + 0.5) * L / n)``; a clip shorter than n repeats each frame
      evenly (nearest-neighbour in time). Needs 1 frame.
    - ``videomae``: ``0, stride, 2*stride, ...`` (n_frames of them, default 16 every 4th);
      a short clip is padded by repeating its last selected frame. Needs 1 frame.

    Attributes:
        kind: one of POLICIES.
        n_frames: frames to return: 1 for the single-frame policies, required for
            ``uniform``, default 16 for ``videomae``.
        stride: frame step for ``videomae`` (default 4); None for the others.
    """

    kind: str = "middle"
    n_frames: int | None = None
    stride: int | None = None

    def __post_init__(self) -> None:
        """Fill the policy's defaults and check them.

        Raises:
            ValueError: an unknown kind, a missing or non-positive n_frames, or a
                stride given to a policy without one (names the value).
        """
        if self.kind not in POLICIES:
            raise ValueError(f"frame policy kind must be one of {POLICIES}, got {self.kind!r}")
        default_n = {"uniform": None, "videomae": VIDEOMAE_FRAMES}.get(self.kind, 1)
        n = default_n if self.n_frames is None else positive_int("n_frames", self.n_frames)
        if n is None:
            raise ValueError("frame policy 'uniform' needs n_frames, got None")
        if self.kind in _SINGLE and n != 1:
            raise ValueError(f"frame policy {self.kind!r} selects one frame; n_frames must be 1, got {n!r}")
        if self.kind != "videomae" and self.stride is not None:
            raise ValueError(f"frame policy {self.kind!r} takes no stride, got {self.stride!r}")
        stride = self.stride
        if self.kind == "videomae":
            stride = VIDEOMAE_STRIDE if stride is None else positive_int("stride", stride)
        object.__setattr__(self, "n_frames", n)
        object.__setattr__(self, "stride", stride)

    def to_dict(self) -> dict[str, Any]:
        """The policy as a JSON-able dict: kind, n_frames, stride and how short clips are padded."""
        pad = {"uniform": "repeat_evenly", "videomae": "repeat_last"}.get(self.kind)
        return {**asdict(self), "pad": pad}


@dataclass(frozen=True)
class FrameSelection:
    """The frames a policy chose for one clip.

    Attributes:
        indices: frame indices in output order (repeats where the clip was padded).
        policy: the policy kind actually applied ("middle" when "peak" fell back).
        fallback: why the requested policy was not applied, or None.
    """

    indices: tuple[int, ...]
    policy: str
    fallback: str | None = None


def frame_indices(policy: FramePolicy, num_frames: int, peak_index: int | None = None) -> FrameSelection:
    """Choose the frames ``policy`` takes from a clip of ``num_frames`` frames (pure: no I/O).

    Args:
        policy: the frame policy.
        num_frames: the clip's length in frames (>= 0).
        peak_index: the annotated peak frame (used by ``peak`` only), or None.

    Returns:
        the selection: indices in output order, the policy applied, any fallback.

    Raises:
        MediaTooShortError: the clip has no frames, or fewer than peak_index + 1.
        ValueError: a negative or non-integer num_frames or peak_index (names it).
    """
    n = non_negative_int("num_frames", num_frames)
    if n == 0:
        raise MediaTooShortError(f"the clip has 0 frames; policy {policy.kind!r} needs at least 1", stage=STAGE)
    kind, count = policy.kind, policy.n_frames
    if kind == "peak":
        if peak_index is None:
            return FrameSelection((n // 2,), "middle", "no peak_index annotated: used the middle frame")
        peak = non_negative_int("peak_index", peak_index)
        if peak >= n:
            raise MediaTooShortError(f"peak_index {peak} needs {peak + 1} frames, the clip has {n}", stage=STAGE)
        return FrameSelection((peak,), "peak")
    if kind == "first":
        return FrameSelection((0,), kind)
    if kind == "middle":
        return FrameSelection((n // 2,), kind)
    if kind == "uniform":
        # integer arithmetic: floor((i + 0.5) * n / count) with no float rounding
        return FrameSelection(tuple((2 * i + 1) * n // (2 * count) for i in range(count)), kind)
    taken = list(range(0, min(n, count * policy.stride), policy.stride))
    return FrameSelection(tuple(taken + [taken[-1]] * (count - len(taken))), kind)


@dataclass(frozen=True)
class VideoDecodeConfig:
    """How to decode a clip's frames.

    Attributes:
        policy: which frames to decode.
        backend: "decord", "pyav", or "auto" (decord, then PyAV for files decord
            cannot open or decode; both give the same bytes).
    """

    policy: FramePolicy = field(default_factory=FramePolicy)
    backend: str = "auto"

    def __post_init__(self) -> None:
        """Raises ValueError for a policy that is not a FramePolicy or an unknown backend (names it)."""
        if not isinstance(self.policy, FramePolicy):
            raise ValueError(f"policy must be a FramePolicy, got {self.policy!r}")
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {self.backend!r}")

    def to_dict(self) -> dict[str, Any]:
        """Every parameter that decides the decoded bytes, as a stable JSON-able dict."""
        versions = {"decord": decord.__version__, **pyav_versions()}
        return {
            "decoder": "video",
            "backend": self.backend,
            "versions": versions,
            "policy": self.policy.to_dict(),
            "color": "rgb24 (libswscale defaults)",
            "dtype": "uint8",
            "layout": "THWC",
        }


@dataclass(frozen=True)
class DecodedVideo:
    """A clip's decoded frames.

    Attributes:
        frames: RGB uint8 ``[T, H, W, 3]``, T = the policy's n_frames.
        selection: which frames these are, and any fallback.
        num_frames: the clip's length in frames.
        fps: the clip's average frame rate (0.0 when the container does not say).
        backend: the backend that decoded it ("decord" or "pyav").
    """

    frames: np.ndarray
    selection: FrameSelection
    num_frames: int
    fps: float
    backend: str


def decode_video(
    path: str | os.PathLike,
    config: VideoDecodeConfig | None = None,
    *,
    peak_index: int | None = None,
    timeout_s: float | None = DEFAULT_TIMEOUT_S,
) -> DecodedVideo:
    """Decode the frames ``config.policy`` selects from a clip.

    Args:
        path: the video file.
        config: policy and backend; default: the middle frame, backend "auto".
        peak_index: the annotated peak frame for the ``peak`` policy (e.g. ``sample.extra.get("peak_index")``);
            the other policies ignore it.
        timeout_s: time limit in seconds (None: no limit); see :mod:`featstore.media`.

    Returns:
        the frames, with the selection, clip length, frame rate and backend used.

    Raises:
        UnreadableMediaError: missing, empty, not a video container, truncated or corrupt.
        NoVideoStreamError: the file has no video stream (e.g. a wav or m4a).
        MediaTooShortError: fewer frames than the policy needs.
        DecodeTimeout: the decode took longer than ``timeout_s``.
    """
    cfg = VideoDecodeConfig() if config is None else config
    return decode_video_policies(path, (cfg.policy,), cfg.backend, peak_index=peak_index, timeout_s=timeout_s)[0]


def decode_video_policies(
    path: str | os.PathLike,
    policies: Sequence[FramePolicy],
    backend: str = "auto",
    *,
    peak_index: int | None = None,
    timeout_s: float | None = DEFAULT_TIMEOUT_S,
) -> list[DecodedVideo]:
    """Decode the frames of several policies with one open and one pass: each frame
    any policy needs is decoded once. Same errors as ``decode_video``.

    Returns:
        one DecodedVideo per policy, in order.
    """
    VideoDecodeConfig(policies[0], backend)  # validates the backend name

    def work(cancel: threading.Event) -> list[DecodedVideo]:
        check_file(path, stage=STAGE)  # inside the time limit: even a stat can hang on a network filesystem
        if backend == "pyav":
            return _decode_pyav(path, policies, peak_index, cancel)
        try:
            return _decode_decord(path, policies, peak_index, cancel)
        except (UnreadableMediaError, NoVideoStreamError):
            if backend == "decord":
                raise
            # auto: PyAV opens some files decord cannot and names the failure more precisely.
            return _decode_pyav(path, policies, peak_index, cancel)

    return run_with_timeout(work, timeout_s, stage=STAGE, path=path)


def _decode_decord(
    path: str | os.PathLike, policies: Sequence[FramePolicy], peak_index: int | None, cancel: threading.Event
) -> list[DecodedVideo]:
    """Decode the selected frames with decord (one thread, batched get_batch)."""
    try:
        reader = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=1)
    except (RuntimeError, decord.DECORDError) as err:
        # decord says only this much about a file without video; everything else is unreadable
        missing = "cannot find video stream" in str(err)
        error = NoVideoStreamError if missing else UnreadableMediaError
        raise error(f"decord cannot open {path}: {_first_line(err)}", stage=STAGE, path=str(path)) from err
    selections = [_select(p, len(reader), peak_index, path) for p in policies]
    wanted = sorted({i for sel in selections for i in sel.indices})
    decoded = []
    try:
        for start in range(0, len(wanted), _DECORD_BATCH):
            check_cancel(cancel)
            decoded.append(reader.get_batch(wanted[start : start + _DECORD_BATCH]).asnumpy())
    except (RuntimeError, decord.DECORDError) as err:
        raise UnreadableMediaError(
            f"decord cannot decode frames of {path}: {_first_line(err)}", stage=STAGE, path=str(path)
        ) from err
    unique, fps = np.concatenate(decoded), float(reader.get_avg_fps())
    return [DecodedVideo(_gather(unique, wanted, sel.indices), sel, len(reader), fps, "decord") for sel in selections]


def _decode_pyav(
    path: str | os.PathLike, policies: Sequence[FramePolicy], peak_index: int | None, cancel: threading.Event
) -> list[DecodedVideo]:
    """Decode the selected frames with PyAV, reading from the start and stopping after the last one needed."""
    with open_av(path, stage=STAGE, kind="video") as (container, stream):
        stream.codec_context.thread_count = 1  # like decord's num_threads=1: one core per decode task
        num = stream.frames or _count_packets(path, cancel)  # some containers (mkv, webm) do not say
        fps = float(stream.average_rate or 0.0)
        selections = [_select(p, num, peak_index, path) for p in policies]
        wanted = sorted({i for sel in selections for i in sel.indices})
        keep, got, k = set(wanted), [], -1
        try:
            for k, frame in enumerate(container.decode(stream)):
                check_cancel(cancel)
                if k in keep:
                    got.append(frame.to_ndarray(format="rgb24"))
                if k >= wanted[-1]:
                    break
        except av.FFmpegError as err:
            raise UnreadableMediaError(
                f"FFmpeg failed decoding {path} after {k + 1} frames: {err}", stage=STAGE, path=str(path)
            ) from err
    if len(got) < len(wanted):
        raise UnreadableMediaError(
            f"{path} claims {num} frames but decoding stopped after {k + 1}; frame {wanted[-1]} was needed",
            stage=STAGE,
            path=str(path),
        )
    unique = np.stack(got)
    return [DecodedVideo(_gather(unique, wanted, sel.indices), sel, num, fps, "pyav") for sel in selections]


def _count_packets(path: str | os.PathLike, cancel: threading.Event) -> int:
    """Count the video packets of a file whose header gives no frame count (demuxing only, no decoding)."""
    with open_av(path, stage=STAGE, kind="video") as (container, stream):
        count = 0
        try:
            for packet in container.demux(stream):
                check_cancel(cancel)
                count += packet.size > 0  # the demuxer ends with an empty flush packet
        except av.FFmpegError as err:
            raise UnreadableMediaError(f"FFmpeg failed reading {path}: {err}", stage=STAGE, path=str(path)) from err
    return count


def _select(policy: FramePolicy, num_frames: int, peak_index: int | None, path: str | os.PathLike) -> FrameSelection:
    """frame_indices, with the clip's path named when the clip is too short."""
    try:
        return frame_indices(policy, num_frames, peak_index)
    except MediaTooShortError as err:
        raise MediaTooShortError(f"{path}: {err}", stage=STAGE, path=str(path)) from None


def _gather(unique: np.ndarray, wanted: list[int], indices: tuple[int, ...]) -> np.ndarray:
    """Arrange frames decoded once each (in ``wanted`` order) into the selection's order, repeats included."""
    position = {index: i for i, index in enumerate(wanted)}
    return np.ascontiguousarray(unique[[position[i] for i in indices]])


def _first_line(err: BaseException) -> str:
    """The first line of an error message, without decord's "[12:00:00] file.cc:151: " prefix and stack trace."""
    text = str(err).strip()
    return re.sub(r"^\[[\d:]+\] \S+: ", "", text.splitlines()[0]) if text else type(err).__name__
