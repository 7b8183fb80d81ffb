"""Content hashes of media files: the half of a sample's cache key that changes when a clip is edited."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from featstore.checks import positive_int
from featstore.paths import resolve

# The first bytes of a media hash that marks a problem instead of hashing bytes
# (see problem_hash). A content sha256 starts with them with probability 2**-64.
PROBLEM_PREFIX = b"\xffPROBLEM"

# 1 MiB reads: large enough that the per-call overhead vanishes, small enough
# that hashing a multi-gigabyte clip holds almost no memory.
DEFAULT_CHUNK = 1 << 20


def hash_file(path: str | os.PathLike, chunk: int = DEFAULT_CHUNK) -> str:
    """Return the sha256 hex digest of a file's bytes, read in chunks.

    Args:
        path: The file to hash.
        chunk: Bytes per read.

    Returns:
        The 64-character lower-case hex digest.

    Raises:
        OSError: The file cannot be opened or read.
        ValueError: ``chunk`` is not a positive integer.
    """
    positive_int("chunk", chunk)
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def hash_media(root: str | os.PathLike, video: str | None, audio: str | None, *, chunk: int = DEFAULT_CHUNK) -> str:
    """Return the sha256 hex digest of a sample's media bytes, framed so that no two inputs collide.

    For each of ``("video", video)`` and ``("audio", audio)`` whose path is
    not None, in that order, the hash is fed the role name in ASCII, a NUL
    byte, the file's byte length as 8 bytes big-endian, then the bytes. So
    moving bytes from one file to the other, or dropping a file, changes the
    digest.

    Args:
        root: The dataset root folder.
        video: Path of the video relative to ``root``, or None.
        audio: Path of a separate audio file relative to ``root``, or None.
        chunk: Bytes per read.

    Returns:
        The 64-character lower-case hex digest.

    Raises:
        ValueError: Both ``video`` and ``audio`` are None, or ``chunk`` is not
            a positive integer.
        UnsafePathError: A path is absolute or escapes ``root``.
        OSError: A file cannot be read, or changed size while it was read.
    """
    positive_int("chunk", chunk)
    if video is None and audio is None:
        raise ValueError("hash_media needs a video or an audio path; both are None")
    digest = hashlib.sha256()
    for role, rel in (("video", video), ("audio", audio)):
        if rel is not None:
            _feed_framed(digest, role, resolve(root, rel), chunk)
    return digest.hexdigest()


def _feed_framed(digest: hashlib._Hash, role: str, path: Path, chunk: int) -> None:
    """Feed ``role``, the byte length and the bytes of ``path`` into ``digest``."""
    with open(path, "rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        digest.update(role.encode("ascii") + b"\x00" + size.to_bytes(8, "big"))
        seen = 0
        while block := handle.read(chunk):
            digest.update(block)
            seen += len(block)
    if seen != size:
        # The length went into the hash before the bytes; a file that grows or
        # shrinks under us would give a digest that matches no real content.
        raise OSError(f"{path} changed while it was hashed: {size} bytes at open, {seen} bytes read")


def problem_hash(markers: list[str]) -> str:
    """Return the media hash of a sample whose media cannot be used: it marks the problem, not bytes.

    The store keys features by media hash, so a sample whose file is missing,
    outside the root or unreadable still gets one, and gets a different one as
    soon as the file is put in place (the content hash) or the problem changes.

    Args:
        markers: One stable description per problem, e.g. ``"missing:video:clips/a.mp4"``
            (kind, role, the path as written; never an absolute path or a message
            that varies between runs).

    Returns:
        A 64-character hex digest: PROBLEM_PREFIX, then the first 24 bytes of the
        sha256 of the markers (so :func:`is_problem_hash` can tell it from content).

    Raises:
        ValueError: ``markers`` is empty.
    """
    if not markers:
        raise ValueError("problem_hash needs at least one problem marker")
    digest = hashlib.sha256("\n".join(markers).encode("utf-8")).digest()
    return (PROBLEM_PREFIX + digest[: 32 - len(PROBLEM_PREFIX)]).hex()


def is_problem_hash(media_hash: str) -> bool:
    """True if ``media_hash`` (hex) was made by :func:`problem_hash`, not from media bytes."""
    return media_hash.lower().startswith(PROBLEM_PREFIX.hex())


def manifest_hashes(manifest: Any, index: Any = None) -> list[str]:
    """The media hash each manifest sample gets in a store whose index is ``index``
    (a ``SampleIndex``; None: a new store).

    A sample whose media cannot be used (``Sample.error``: missing, outside the
    root, unreadable) gets the hash that marks its problem. A sample already in
    the store with a content hash keeps that hash when its media goes missing:
    the features computed from those bytes stay.
    """
    hashes = []
    for s in manifest.samples:
        digest = s.media_hash
        if digest is None and s.error is not None:  # a manifest saved before problems had hashes
            digest = problem_hash([f"error:{s.error}"])
        if s.error is not None and index is not None and s.sample_id in index:
            kept = index.media_hash(s.sample_id)
            digest = digest if is_problem_hash(kept) else kept
        hashes.append(digest)
    return hashes
