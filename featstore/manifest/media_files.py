"""The media side of a manifest: find clips by name, check that media files exist, hash them."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from featstore.errors import ManifestError, UnsafePathError
from featstore.manifest import hashing
from featstore.manifest.formats import VIDEO_EXTS, Record
from featstore.paths import safe_relpath

# Hashing is I/O-bound and hashlib releases the GIL on large updates, so a few
# threads keep a network filesystem busy; more gain little on one disk.
HASH_THREADS = 8


class VideoIndex:
    """Every video file under a dataset root, indexed by file stem (walked once, in sorted order).

    Symlinked folders are not entered (they could loop); they are named in the
    error of a sample whose clip is not found, as are folders that could not be
    listed.
    """

    def __init__(self, root: Path) -> None:
        """Walk ``root`` and index the files whose extension is in VIDEO_EXTS (any case).

        Args:
            root: The dataset root folder.
        """
        self._by_stem: dict[str, list[str]] = {}
        self._not_searched: list[str] = []
        for folder, subfolders, files in os.walk(root, onerror=self._note_unreadable):
            subfolders.sort()
            rel_folder = Path(folder).relative_to(root)
            self._not_searched += [(rel_folder / d).as_posix() for d in subfolders if os.path.islink(Path(folder, d))]
            for name in sorted(files):
                stem, ext = os.path.splitext(name)
                if ext.lower() in VIDEO_EXTS:
                    self._by_stem.setdefault(stem, []).append((rel_folder / name).as_posix())
        self._by_number: dict[int, list[str]] | None = None

    def _note_unreadable(self, err: OSError) -> None:
        """os.walk error hook: remember a folder that could not be listed instead of skipping it silently."""
        self._not_searched.append(f"{err.filename} ({err.strerror})")

    def _numbered(self) -> dict[int, list[str]]:
        """All-digit stems by their number, built on first use."""
        if self._by_number is None:
            self._by_number = {}
            for stem, rels in self._by_stem.items():
                if stem.isascii() and stem.isdigit():
                    self._by_number.setdefault(int(stem), []).extend(rels)
        return self._by_number

    def find(self, sample_id: str, fuzzy_digits: bool = False) -> tuple[str | None, str | None]:
        """Return ``(relative path, None)`` for the one clip named ``sample_id``, or ``(None, reason)``.

        Args:
            sample_id: The clip's file stem.
            fuzzy_digits: Also match an all-digit id to an all-digit stem of the
                same number ("1" finds "00001.mp4"), as DFEW's lists and clip
                names differ in zero padding.

        Raises:
            ManifestError: Two or more files share the stem (all are named).
        """
        found = self._by_stem.get(sample_id, [])
        if not found and fuzzy_digits and sample_id.isascii() and sample_id.isdigit():
            found = self._numbered().get(int(sample_id), [])
        if len(found) > 1:
            raise ManifestError(
                f"sample {sample_id!r}: several video files share its name: {found}; "
                "keep one or pass a generic manifest with explicit paths"
            )
        if found:
            return found[0], None
        reason = (
            f"missing video file {sample_id}.* (no file named {sample_id} with extension "
            f"{'/'.join(VIDEO_EXTS)} under the dataset root)"
        )
        if self._not_searched:
            reason += f" (not searched: {self._not_searched})"
        return None, reason


def locate_videos(root: Path, records: list[Record], fuzzy_digits: bool = False) -> None:
    """Fill each record's ``video`` with the clip named by its sample id, or its ``error`` when none is found.

    Args:
        root: The dataset root folder.
        records: Records whose ``video`` is None; updated in place.
        fuzzy_digits: As :meth:`VideoIndex.find`.

    Raises:
        ManifestError: A sample's name matches two or more files.
    """
    index = VideoIndex(root)
    for record in records:
        record["video"], record["error"] = index.find(record["sample_id"], fuzzy_digits)


@dataclass(frozen=True)
class Problem:
    """Why a sample's media cannot be used.

    Attributes:
        reason: For people, naming the path: "missing video file clips/a.mp4".
        marker: Stable across runs (kind, role, the path as written; no absolute
            paths, no OS message), fed to :func:`featstore.manifest.hashing.problem_hash`:
            "missing:video:clips/a.mp4", "unsafe:audio:../x.wav",
            "unreadable:video:clips/a.mp4: PermissionError".
    """

    reason: str
    marker: str


def check_media(root: Path, record: Record) -> tuple[str | None, str | None, list[Problem]]:
    """Check a record's media paths: safe, present, regular files. Never opens a file.

    A path that is absolute or leaves ``root`` is a problem of the sample (kind
    ``unsafe``), and the sample's path for that role becomes None, so nothing
    downstream can ever open it.

    Args:
        root: The dataset root folder.
        record: The record; its ``video``/``audio`` are paths relative to ``root`` or None.

    Returns:
        ``(video, audio, problems)``: the normalised safe paths, and why the
        sample cannot be processed (empty when it can).
    """
    sample_id = record["sample_id"]
    problems = []
    if record.get("error"):  # set by locate_videos: no clip of that name under the root
        problems.append(Problem(record["error"], f"missing:video:{sample_id}.*"))
    paths: dict[str, str | None] = {"video": None, "audio": None}
    for role in paths:
        raw = record[role]
        if raw is None:
            continue
        try:
            rel = safe_relpath(root, raw, None)
        except UnsafePathError as err:
            problems.append(Problem(f"unsafe {role} path: {err}", f"unsafe:{role}:{raw}"))
            continue
        paths[role] = rel
        problem = _file_problem(root / rel, role, rel)
        problems += [problem] if problem else []
    if not problems and paths["video"] is None and paths["audio"] is None:
        problems.append(Problem("no media: video and audio are both empty", "no-media"))
    return paths["video"], paths["audio"], problems


def _file_problem(path: Path, role: str, rel: str) -> Problem | None:
    """Return why ``path`` is not a usable media file, or None."""
    try:
        if not path.exists():
            return Problem(f"missing {role} file {rel}", f"missing:{role}:{rel}")
        if not path.is_file():
            return Problem(f"{role} path {rel} is not a regular file", f"unreadable:{role}:{rel}: not a regular file")
    except OSError as err:
        return Problem(f"cannot check {role} file {rel}: {err}", f"unreadable:{role}:{rel}: {type(err).__name__}")
    return None


def hash_all(
    root: Path, media: list[tuple[str | None, str | None]], threads: int = HASH_THREADS
) -> list[tuple[str | None, Problem | None]]:
    """Hash each ``(video, audio)`` pair's bytes, in parallel, keeping input order.

    Args:
        root: The dataset root folder.
        media: Checked, existing ``(video, audio)`` relative paths per sample.
        threads: Worker threads.

    Returns:
        One ``(digest, None)`` or ``(None, problem)`` per pair; a file that
        cannot be read is a per-sample problem, not an exception.
    """

    def one(pair: tuple[str | None, str | None]) -> tuple[str | None, Problem | None]:
        try:
            return hashing.hash_media(root, *pair), None
        except OSError as err:
            return None, _read_problem(root, pair, err)

    if len(media) <= 1:
        return [one(pair) for pair in media]
    with ThreadPoolExecutor(max_workers=max(1, min(threads, len(media)))) as pool:
        return list(pool.map(one, media))


def _read_problem(root: Path, pair: tuple[str | None, str | None], err: OSError) -> Problem:
    """The problem of a pair whose hashing raised ``err``, naming the file that could not be read."""
    failed = os.fspath(err.filename) if err.filename is not None else None
    named = [(role, rel) for role, rel in zip(("video", "audio"), pair) if rel is not None]
    hits = [(role, rel) for role, rel in named if failed == os.fspath(root / rel)]
    role, rel = hits[0] if hits else ("media", ", ".join(rel for _, rel in named))
    what = err.strerror or str(err)
    return Problem(
        f"cannot read {role} file {rel}: {type(err).__name__}: {what}", f"unreadable:{role}:{rel}: {type(err).__name__}"
    )
