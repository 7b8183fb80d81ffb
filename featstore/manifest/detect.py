"""Decide which annotation, label list and transcript files a dataset folder's manifest is loaded from."""

from __future__ import annotations

import fnmatch
import os
from dataclasses import dataclass
from pathlib import Path

from featstore.errors import ManifestError
from featstore.manifest.formats import LABEL_COLUMNS, NAME_COLUMNS, split_fields
from featstore.names import FORMATS, MERR_LABELS

# Generic manifests are found by these exact names; other CSV/JSONL files only through annotation=.
GENERIC_NAMES = {"manifest.csv": "csv", "manifest.jsonl": "jsonl"}
TRANSCRIPT_PATTERNS = ("transcription*.csv", "transcripts*.csv")
# Sniffing reads at most this much of a line: annotation lines are short, a stray binary file is not.
_SNIFF_LINE_CHARS = 1 << 16


@dataclass(frozen=True)
class Sources:
    """The files one manifest is read from.

    Attributes:
        format: One of FORMATS.
        annotation: The file that lists the samples, in order.
        labels: A MER2023-style label list joined into a MERR annotation, or None.
        transcripts: A ``name,sentence`` CSV joined by sample id, or None.
    """

    format: str
    annotation: Path
    labels: Path | None
    transcripts: Path | None


def plan_sources(
    root: Path,
    format: str,
    annotation: str | os.PathLike | None,
    labels: str | os.PathLike | None,
    transcripts: str | os.PathLike | None,
) -> Sources:
    """Pick the annotation file and its join partners, from the arguments or by looking in ``root``.

    Only the top level of ``root`` is searched. With ``format="auto"`` and no
    ``annotation``, the candidates are ``manifest.csv``, ``manifest.jsonl``,
    every ``*.json`` (MERR), and every ``*.txt``/``*.csv`` whose first lines
    read as a DFEW file or a MER2023 label list; exactly one must be found (a
    label list next to a MERR JSON is its join partner, not a rival). A
    label list (MERR only) and a transcript file (``transcription*.csv`` /
    ``transcripts*.csv``) are joined when exactly one is found.

    Args:
        root: The dataset root folder.
        format: "auto" or one of FORMATS.
        annotation: Annotation file, or None to look in ``root``.
        labels: Label list to join into a MERR annotation (for "mer2023" it
            may stand for ``annotation``), or None to look in ``root``.
        transcripts: Transcript CSV, or None to look in ``root``.

    Returns:
        The chosen Sources.

    Raises:
        ManifestError: An unknown format, a given file that does not exist,
            no candidate, or several candidates for one role (all named).
    """
    if format != "auto" and format not in FORMATS:
        raise ManifestError(f"unknown manifest format {format!r}; expected 'auto' or one of {FORMATS}")
    ann, lab, tra = (
        _locate(root, p, role)
        for p, role in ((annotation, "annotation"), (labels, "labels"), (transcripts, "transcripts"))
    )
    found = scan_root(root)
    if ann is None and lab is not None and (format == "mer2023" or (format == "auto" and not found["merr"])):
        ann, lab = lab, None  # a MER2023 label list is its own annotation
    if ann is None:
        format, ann = _pick_annotation(root, format, found)
    elif format == "auto":
        format = classify(ann) or _undetectable(ann)
    if lab is not None and format != "merr":
        raise ManifestError(
            f"labels={lab} joins a label list into a MERR annotation; format {format!r} "
            "takes its labels from its annotation file"
        )
    if format == "merr" and lab is None:
        lab = _at_most_one(root, found["mer2023"], "label lists to join into the MERR annotation", "labels=")
    if tra is None:
        tra = _at_most_one(root, found["transcripts"], "transcript files", "transcripts=")
    return Sources(format, ann, lab, tra)


def classify(path: Path) -> str | None:
    """Return the format an annotation file looks like, or None when it reads as none of them.

    ``.json`` is MERR, ``.jsonl`` generic JSONL; a ``.csv``/``.txt`` is read
    by its first two lines: a header with ``sample_id`` and ``video`` is a
    generic CSV; otherwise name + integer label is DFEW, and name + n_frames
    + MERR label (or a header with a word label) is a MER2023 label list.
    """
    suffix = path.suffix.lower()
    if suffix in (".json", ".jsonl"):
        return "merr" if suffix == ".json" else "jsonl"
    if suffix not in (".csv", ".txt"):
        return None
    rows = _first_rows(path)
    if not rows:
        return None
    head = [field.lower() for field in rows[0]]
    if "sample_id" in head and "video" in head:
        return "csv"
    if head[0] in NAME_COLUMNS:
        label_at = next((i for i, field in enumerate(head) if field in LABEL_COLUMNS), None)
        if label_at is None or len(rows) < 2 or len(rows[1]) <= label_at:
            return None
        return "dfew" if rows[1][label_at].isdigit() else "mer2023"
    if len(head) == 2 and head[1].isdigit():
        return "dfew"
    if len(head) in (3, 4) and head[1].isdigit() and head[2] in MERR_LABELS:
        return "mer2023"
    return None


def scan_root(root: Path) -> dict[str, list[Path]]:
    """Group the top-level files of ``root`` by the format they look like (plus "transcripts")."""
    found: dict[str, list[Path]] = {name: [] for name in (*FORMATS, "transcripts")}
    for path in sorted(root.iterdir()):
        name = path.name.lower()
        if name.startswith(".") or not path.is_file():
            continue
        if any(fnmatch.fnmatchcase(name, pattern) for pattern in TRANSCRIPT_PATTERNS):
            found["transcripts"].append(path)
        elif name in GENERIC_NAMES:
            found[GENERIC_NAMES[name]].append(path)
        else:
            kind = classify(path)
            if kind in ("merr", "mer2023", "dfew"):
                found[kind].append(path)
    return found


def _pick_annotation(root: Path, format: str, found: dict[str, list[Path]]) -> tuple[str, Path]:
    """Choose the one annotation file of ``format`` (or of any format for "auto") in ``root``."""
    if format != "auto":
        candidates = [(format, path) for path in found[format]]
    else:
        rivals = ("merr", "dfew", "csv", "jsonl") if found["merr"] else ("merr", "mer2023", "dfew", "csv", "jsonl")
        candidates = [(kind, path) for kind in rivals for path in found[kind]]
    if len(candidates) == 1:
        return candidates[0]
    what = "annotation files" if format == "auto" else f"{format!r} annotation files"
    if not candidates:
        raise ManifestError(
            f"{root}: no {what} found; looked for manifest.csv, manifest.jsonl, a MERR *.json, "
            "a MER2023 label list or a DFEW label file; pass format= and annotation="
        )
    names = [f"{path.name} ({kind})" for kind, path in candidates]
    raise ManifestError(f"{root}: several candidate {what}: {names}; pass format= or annotation= to choose one")


def _at_most_one(root: Path, paths: list[Path], what: str, argument: str) -> Path | None:
    """Return the single path, None for none, or raise naming them all."""
    if len(paths) > 1:
        raise ManifestError(f"{root}: several {what}: {[p.name for p in paths]}; pass {argument} to choose one")
    return paths[0] if paths else None


def _locate(root: Path, given: str | os.PathLike | None, role: str) -> Path | None:
    """Resolve a user-given annotation path: relative to ``root`` first, else as given."""
    if given is None:
        return None
    path = Path(given)
    for candidate in (path,) if path.is_absolute() else (root / path, path):
        if candidate.is_file():
            return candidate
    raise ManifestError(f"{role} file {os.fspath(given)!r} not found (looked in {root} and the working directory)")


def _first_rows(path: Path, count: int = 2) -> list[list[str]]:
    """Split the first ``count`` non-blank lines of a file; [] when it cannot be read as UTF-8 text."""
    rows: list[list[str]] = []
    try:
        with open(path, encoding="utf-8-sig") as handle:
            while len(rows) < count and (line := handle.readline(_SNIFF_LINE_CHARS)):
                if line.strip():
                    rows.append(split_fields(line))
    except (OSError, UnicodeDecodeError):
        return []  # unreadable or binary: not an annotation file we could use
    return rows


def _undetectable(path: Path) -> str:
    """Raise the error for an annotation file whose format cannot be told."""
    raise ManifestError(f"cannot tell the format of {path}; pass format= (one of {FORMATS})")
