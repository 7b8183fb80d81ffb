"""Dataset-relative media paths: normalised to POSIX form, refused when they leave the root.

This is a security boundary: annotation files come from outside, and a media
path in one must never make featstore read a file outside the dataset root.
"""

from __future__ import annotations

import os
import posixpath
import re
from pathlib import Path

from featstore.errors import UnsafePathError

# "C:", "c:" at the start: a Windows drive, absolute ("C:\x") or drive-relative ("C:x").
_WINDOWS_DRIVE = re.compile(r"^[A-Za-z]:")


def safe_relpath(root: str | os.PathLike, rel: str | os.PathLike, sample_id: str | None) -> str:
    """Normalise a media path relative to ``root`` and check that it stays inside.

    Backslashes are read as separators (annotation files made on Windows use
    them), ``.`` and inner ``..`` segments are collapsed, and the result is
    resolved through symlinks to check that it still lies under ``root``.
    The file itself need not exist.

    Args:
        root: The dataset root folder.
        rel: The media path as written in the annotation.
        sample_id: The sample the path belongs to, named in the error; None
            when there is no sample to name.

    Returns:
        The normalised POSIX path relative to ``root``, e.g. ``"clips/a.mp4"``.

    Raises:
        UnsafePathError: ``rel`` is empty, not a string, absolute (POSIX,
            Windows drive or UNC), contains a NUL byte, escapes ``root``
            through ``..``, names the root itself, or resolves through a
            symlink to a place outside ``root``.
    """
    text = os.fspath(rel) if isinstance(rel, os.PathLike) else rel
    if not isinstance(text, str):
        raise _refuse(sample_id, rel, f"is a {type(rel).__name__}, expected a string")
    if not text.strip():
        raise _refuse(sample_id, rel, "is empty")
    if "\x00" in text:
        raise _refuse(sample_id, rel, "contains a NUL byte")
    if text.startswith(("/", "\\")) or _WINDOWS_DRIVE.match(text):
        raise _refuse(sample_id, rel, "is absolute; media paths must be relative to the dataset root")
    norm = posixpath.normpath(text.replace("\\", "/"))
    if norm == ".." or norm.startswith("../"):
        raise _refuse(sample_id, rel, "escapes the dataset root through '..'")
    if norm == ".":
        raise _refuse(sample_id, rel, "names the dataset root itself, not a file")
    _check_inside(Path(root), norm, sample_id, rel)
    return norm


def resolve(root: str | os.PathLike, rel: str | os.PathLike, *, sample_id: str | None = None) -> Path:
    """Return the filesystem path of a dataset-relative media path, after checking it.

    Args:
        root: The dataset root folder.
        rel: The media path relative to ``root``.
        sample_id: The sample the path belongs to, named in the error.

    Returns:
        ``root / safe_relpath(root, rel, sample_id)`` (symlinks inside the
        root are kept as they are, not resolved).

    Raises:
        UnsafePathError: As :func:`safe_relpath`.
    """
    return Path(root) / safe_relpath(root, rel, sample_id)


def _check_inside(root: Path, norm: str, sample_id: str | None, rel: object) -> None:
    """Raise UnsafePathError when ``root / norm`` resolves to a place outside ``root``."""
    try:
        real_root = root.resolve()
        target = (root / norm).resolve()
    except (OSError, RuntimeError) as err:  # RuntimeError: a symlink loop on Python 3.11
        raise _refuse(sample_id, rel, f"cannot be resolved: {err}") from err
    if not target.is_relative_to(real_root):
        raise _refuse(sample_id, rel, f"resolves through a symlink to {target}, outside the dataset root {real_root}")


def _refuse(sample_id: str | None, rel: object, why: str) -> UnsafePathError:
    """Build the error for a refused path, naming the sample when there is one."""
    who = f"sample {sample_id!r}: " if sample_id is not None else ""
    return UnsafePathError(f"{who}media path {rel!r} {why}")
