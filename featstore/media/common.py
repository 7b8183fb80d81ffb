"""What video, audio and face decoding share: the per-clip time limit, file checks, PyAV opening, versions.

The time limit. A decode must never hang a worker, but decoding happens in C
(FFmpeg inside decord and PyAV), where neither ``signal.alarm`` (main thread
only, and it cannot interrupt a C call) nor a Python-level check can stop it.
So :func:`run_with_timeout` runs the decode in a fresh daemon thread and waits
for it with ``Thread.join(timeout)``; past the limit it raises
:class:`~featstore.errors.DecodeTimeout` and abandons the thread. This works
because decord (ctypes calls) and PyAV (``nogil`` around FFmpeg) release the
GIL while they decode, so the waiting thread wakes on time. The abandoned
thread is also told to stop (a ``threading.Event`` the decode loops check
between frames and packets), so a slow but progressing decode ends at the next
frame; only a call stuck inside FFmpeg keeps its thread, memory and CPU until
it returns or the process exits. A daemon thread, unlike a
``concurrent.futures`` pool thread, does not block interpreter exit. A
subprocess could kill a stuck decode outright, but it costs a process start
and the imports (~0.5 s) per clip, or a pool that must be rebuilt after every
timeout, and it pickles every frame back; the process-level kill belongs to
the scheduler (Ray's ``max_calls`` or ``ray.cancel(force=True)``) if timeouts
pile up in one worker.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import av

from featstore.checks import positive_number
from featstore.errors import DecodeTimeout, NoAudioStreamError, NoVideoStreamError, UnreadableMediaError
from featstore.paths import resolve

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "DecodeCancelled",
    "check_cancel",
    "check_file",
    "check_timeout",
    "media_paths",
    "open_av",
    "pyav_versions",
    "run_with_timeout",
]

# Generous: a few-second MERR clip decodes in well under a second on one core;
# a minute means a broken file or a stuck filesystem, not a slow clip.
DEFAULT_TIMEOUT_S = 60.0

T = TypeVar("T")


class DecodeCancelled(Exception):
    """Raised inside an abandoned decode thread when its caller has given up; never seen by callers."""


def check_timeout(timeout_s: float | None) -> float | None:
    """Validate a time limit.

    Args:
        timeout_s: seconds, positive and finite, or None for no limit.

    Returns:
        the limit as a float, or None.

    Raises:
        ValueError: a limit that is not a positive finite number (names it).
    """
    return positive_number("timeout_s", timeout_s, allow_none=True, unit="seconds")


def check_cancel(cancel: threading.Event) -> None:
    """Stop an abandoned decode between frames: raise DecodeCancelled once the caller has timed out."""
    if cancel.is_set():
        raise DecodeCancelled()


def run_with_timeout(
    fn: Callable[[threading.Event], T], timeout_s: float | None, *, stage: str, path: str | os.PathLike
) -> T:
    """Run ``fn(cancel)`` in a daemon thread and return its result, or give up after ``timeout_s``.

    Args:
        fn: the decode; it receives a ``threading.Event`` that is set when the
            caller gives up and should call :func:`check_cancel` between frames.
        timeout_s: the limit in seconds; None runs ``fn`` in the calling thread with no limit.
        stage: the MediaError stage named by the timeout error.
        path: the file being decoded, named by the timeout error.

    Returns:
        whatever ``fn`` returns.

    Raises:
        DecodeTimeout: ``fn`` did not finish within ``timeout_s`` (its thread is abandoned).
        Exception: whatever ``fn`` raised, re-raised in the calling thread.
    """
    limit = check_timeout(timeout_s)
    cancel = threading.Event()
    if limit is None:
        return fn(cancel)
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn(cancel)
        except BaseException as err:  # noqa: BLE001 - handed to the caller's thread and re-raised there
            box["error"] = err
        box["end"] = time.monotonic()

    start = time.monotonic()
    worker = threading.Thread(target=target, name=f"featstore-{stage}", daemon=True)
    worker.start()
    worker.join(limit)
    # Finished, but after the limit (this thread was descheduled past it on a busy
    # machine): the decode still took too long, whenever this thread noticed.
    if worker.is_alive() or box.get("end", start) - start > limit:
        cancel.set()
        raise DecodeTimeout(
            f"{stage} of {path} took longer than {limit:g} s; the decode was abandoned", stage=stage, path=str(path)
        )
    if "error" in box:
        raise box["error"]
    return box["value"]


def check_file(path: str | os.PathLike, *, stage: str) -> Path:
    """Check that a media path names a non-empty regular file, before any decoder sees it.

    Args:
        path: the media file.
        stage: the MediaError stage to raise with.

    Returns:
        the path as a Path.

    Raises:
        UnreadableMediaError: missing, not a regular file, or empty (names the path).
    """
    p = Path(path)
    try:
        st = p.stat()
    except OSError as err:
        raise UnreadableMediaError(
            f"cannot read media file {p}: {err.strerror or err}", stage=stage, path=str(p)
        ) from err
    if not p.is_file():
        raise UnreadableMediaError(f"media path {p} is not a regular file", stage=stage, path=str(p))
    if st.st_size == 0:
        raise UnreadableMediaError(f"media file {p} is empty (0 bytes)", stage=stage, path=str(p))
    return p


@contextmanager
def open_av(path: str | os.PathLike, *, stage: str, kind: str) -> Iterator[tuple[Any, Any]]:
    """Open a media file with PyAV and yield (container, its first stream of ``kind``).

    Args:
        path: the media file.
        stage: the MediaError stage to raise with.
        kind: "video" or "audio".

    Yields:
        (the open av container, its first video or audio stream).

    Raises:
        UnreadableMediaError: FFmpeg cannot open or parse the file.
        NoVideoStreamError / NoAudioStreamError: the file has no stream of ``kind``.
    """
    p = check_file(path, stage=stage)
    try:
        container = av.open(str(p))
    except (av.FFmpegError, OSError) as err:
        raise UnreadableMediaError(f"FFmpeg cannot open {p}: {err}", stage=stage, path=str(p)) from err
    with container:
        streams = container.streams.video if kind == "video" else container.streams.audio
        if not streams:
            missing = NoVideoStreamError if kind == "video" else NoAudioStreamError
            found = sorted({s.type for s in container.streams}) or ["no streams"]
            raise missing(f"{p} has no {kind} stream (it has: {', '.join(found)})", stage=stage, path=str(p))
        yield container, streams[0]


def pyav_versions() -> dict[str, str]:
    """PyAV's version and that of the FFmpeg libraries it bundles (they decide the decoded bytes)."""
    libs = av.library_versions
    return {
        "av": av.__version__,
        **{
            name: ".".join(map(str, libs[name]))
            for name in ("libavcodec", "libavformat", "libswscale", "libswresample")
        },
    }


def media_paths(sample: Any, root: str | os.PathLike) -> tuple[Path | None, Path | None]:
    """The files a manifest sample's video and audio decode from.

    Args:
        sample: a :class:`featstore.manifest.Sample` (``.video``, ``.audio``, ``.sample_id``).
        root: the dataset root the sample's paths are relative to.

    Returns:
        (video path or None, audio path or None); the audio path is the video's
        own when the sample names no separate audio file.

    Raises:
        UnsafePathError: a path escapes the dataset root.
    """
    video = None if sample.video is None else resolve(root, sample.video, sample_id=sample.sample_id)
    audio = video if sample.audio is None else resolve(root, sample.audio, sample_id=sample.sample_id)
    return video, audio
