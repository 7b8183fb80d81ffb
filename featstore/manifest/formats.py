"""Readers for the annotation formats a manifest loads: generic CSV/JSONL, MERR, MER2023 label lists, DFEW, transcripts.

Each reader turns one file into a list of records: plain dicts with
``sample_id``, ``where`` (file and line or entry, for error messages) and the
Sample fields the file provides. Joining, media lookup and hashing happen in
:mod:`featstore.manifest`.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from collections import Counter
from pathlib import Path
from typing import Any

from featstore.errors import DuplicateSampleError, ManifestError
from featstore.names import DFEW_LABELS, MERR_LABELS

VIDEO_EXTS = (".mp4", ".avi", ".mkv", ".mov", ".webm")

Record = dict[str, Any]

# Sample fields a generic manifest may set directly; every other column goes to `extra`.
GENERIC_FIELDS = ("video", "audio", "transcript", "label", "caption", "reasoning")
# Computed by the loader, never taken from an annotation file.
_COMPUTED_FIELDS = ("media_hash", "error")
# Header words that name the sample column of a label list or DFEW file.
NAME_COLUMNS = ("name", "video_name", "video", "sample_id", "order", "id")
LABEL_COLUMNS = ("label", "emotion", "discrete")
_FRAMES_COLUMNS = ("n_frames", "frames", "num_frames", "frame_count")
_VALENCE_COLUMNS = ("valence", "val")
# Label lists and DFEW files: fields split on commas and/or whitespace.
_FIELD_SPLIT = re.compile(r"[,\s]+")


def new_record(sample_id: str, where: str, **fields: Any) -> Record:
    """Return a record with every Sample field present (None / empty extra when not given)."""
    record: Record = {"sample_id": sample_id, "where": where, "extra": {}}
    record.update({name: None for name in GENERIC_FIELDS})
    record.update(fields)
    return record


def read_text(path: Path) -> str:
    """Read an annotation file as UTF-8 (a leading BOM is dropped).

    Raises:
        ManifestError: The file cannot be read or is not UTF-8 (names the line).
    """
    try:
        data = path.read_bytes()
    except OSError as err:
        raise ManifestError(f"cannot read annotation file {path}: {err}") from err
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise ManifestError(f"{path}: line {line}: not valid UTF-8 ({err.reason})") from err


def read_csv_table(path: Path) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """Return a CSV file's header (stripped) and its non-blank rows with their line numbers.

    Raises:
        ManifestError: Unreadable, malformed, empty, or a repeated header column.
    """
    reader = csv.reader(io.StringIO(read_text(path), newline=""))
    rows: list[tuple[int, list[str]]] = []
    try:
        for row in reader:
            if any(cell.strip() for cell in row):
                rows.append((reader.line_num, [cell.strip() for cell in row]))
    except csv.Error as err:
        raise ManifestError(f"{path}: line {reader.line_num}: malformed CSV: {err}") from err
    if not rows:
        raise ManifestError(f"{path}: the file is empty")
    (_, header), body = rows[0], rows[1:]
    repeated = sorted({name for name in header if header.count(name) > 1})
    if repeated:
        raise ManifestError(f"{path}: line 1: header repeats column(s) {repeated}")
    return header, body


def split_lines(path: Path) -> list[tuple[int, list[str]]]:
    """Return the non-blank lines of a label list or DFEW file, split on commas and whitespace."""
    rows = []
    for number, line in enumerate(read_text(path).split("\n"), start=1):
        if line.strip():
            rows.append((number, split_fields(line)))
    if not rows:
        raise ManifestError(f"{path}: the file is empty")
    return rows


def split_fields(line: str) -> list[str]:
    """Split one label-list / DFEW line on commas and whitespace, dropping surrounding double quotes."""
    return [field.strip('"') for field in _FIELD_SPLIT.split(line.strip())]


def read_generic_csv(path: Path) -> list[Record]:
    """Read ``sample_id,video[,audio,transcript,label,...]`` rows; other columns go to ``extra``.

    Raises:
        ManifestError: A required column is missing, a row has the wrong number of fields.
    """
    header, body = read_csv_table(path)
    missing = [name for name in ("sample_id", "video") if name not in header]
    if missing:
        raise ManifestError(
            f"{path}: line 1: header {header} lacks column(s) {missing}; "
            "expected sample_id,video[,audio,transcript,label,...]"
        )
    records = []
    for line, row in body:
        where = f"{path}: line {line}"
        if len(row) != len(header):
            raise ManifestError(f"{where}: expected {len(header)} fields as in the header, got {len(row)}")
        records.append(_generic_record(dict(zip(header, row)), where))
    return records


def read_generic_jsonl(path: Path) -> list[Record]:
    """Read one JSON object per line with the generic manifest's keys; other keys go to ``extra``.

    An ``extra`` key, when present, must be an object; its keys are merged into ``extra``.

    Raises:
        ManifestError: A line is not a JSON object, or is a saved Manifest header.
    """
    records = []
    # split("\n"), not splitlines(): U+2028 inside a JSON string is not a line break.
    for number, line in enumerate(read_text(path).split("\n"), start=1):
        if not line.strip():
            continue
        where = f"{path}: line {number}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            raise ManifestError(f"{where}: invalid JSON: {err.msg} (column {err.colno})") from err
        if not isinstance(obj, dict):
            raise ManifestError(f"{where}: expected a JSON object, got {type(obj).__name__}")
        if "featstore_manifest" in obj:
            raise ManifestError(f"{where}: this is a saved featstore Manifest; load it with Manifest.from_jsonl")
        nested = obj.pop("extra", {})
        if not isinstance(nested, dict):
            raise ManifestError(f"{where}: 'extra' must be a JSON object, got {nested!r}")
        clash = sorted(set(nested) & set(obj))
        if clash:
            raise ManifestError(f"{where}: key(s) {clash} appear both at the top level and in 'extra'")
        records.append(_generic_record({**obj, **nested}, where))
    return records


def _generic_record(values: dict[str, Any], where: str) -> Record:
    """Turn one generic CSV row / JSONL object into a record."""
    computed = [name for name in _COMPUTED_FIELDS if name in values]
    if computed:
        raise ManifestError(f"{where}: field(s) {computed} are computed by featstore and cannot be given")
    sample_id = _text(values.pop("sample_id", None), "sample_id", where)
    if sample_id is None:
        raise ManifestError(f"{where}: sample_id is missing or empty")
    fields = {name: _text(values.pop(name, None), name, where) for name in GENERIC_FIELDS}
    if fields["label"] is not None:
        fields["label"] = fields["label"].lower()
    return new_record(sample_id, where, extra=values, **fields)


def read_merr_json(path: Path) -> list[Record]:
    """Read a MERR annotation: a JSON object keyed by video name.

    ``caption`` becomes Sample.caption, ``smp_reason_caption`` Sample.reasoning,
    ``label`` (or else ``emotion``) the label; all other keys go to ``extra``.

    Raises:
        ManifestError: Invalid JSON (names the line), not an object of objects,
            a text field that is not a string, or a label outside MERR_LABELS.
        DuplicateSampleError: A key appears twice in one JSON object.
    """
    try:
        data = json.loads(read_text(path), object_pairs_hook=_unique_keys(path))
    except json.JSONDecodeError as err:
        raise ManifestError(f"{path}: line {err.lineno}: invalid JSON: {err.msg} (column {err.colno})") from err
    if not isinstance(data, dict):
        raise ManifestError(f"{path}: expected a JSON object keyed by video name, got {type(data).__name__}")
    records = []
    for sample_id, entry in data.items():
        where = f"{path}: entry {sample_id!r}"
        if not isinstance(entry, dict):
            raise ManifestError(f"{where}: expected a JSON object, got {type(entry).__name__}")
        if not sample_id.strip():
            raise ManifestError(f"{where}: the video name is empty")
        extra = dict(entry)
        caption = _text(extra.pop("caption", None), "caption", where)
        reasoning = _text(extra.pop("smp_reason_caption", None), "smp_reason_caption", where)
        label = extra.pop("label" if "label" in extra else "emotion", None)
        label = None if label is None else merr_label(label, where)
        records.append(new_record(sample_id, where, caption=caption, reasoning=reasoning, label=label, extra=extra))
    return records


def read_label_list(path: Path) -> list[Record]:
    """Read a MER2023-style label list: ``name n_frames label [valence]`` per line.

    Fields are split on commas and/or whitespace. An optional header line
    (first field a name column such as ``name``) maps columns by name, which
    also accepts MER2023's own ``name,discrete,valence``.

    Raises:
        ManifestError: Wrong field count, a non-integer n_frames, a non-finite
            valence, or a label outside MERR_LABELS (names line and value).
    """
    rows = split_lines(path)
    columns, width, body = _label_list_columns(path, rows)
    records = []
    for line, fields in body:
        where = f"{path}: line {line}"
        if (width is None and len(fields) not in (3, 4)) or (width is not None and len(fields) != width):
            expected = "3 or 4 fields (name n_frames label [valence])" if width is None else f"{width} fields"
            raise ManifestError(f"{where}: expected {expected}, got {len(fields)}: {fields}")
        extra: dict[str, Any] = {}
        if columns.get("n_frames") is not None:
            extra["n_frames"] = _frames(fields[columns["n_frames"]], where)
        valence_at = columns.get("valence")
        if valence_at is not None and valence_at < len(fields):
            extra["valence"] = _valence(fields[valence_at], where)
        label = merr_label(fields[columns["label"]], where)
        records.append(new_record(fields[columns["name"]], where, label=label, extra=extra))
    return records


def _label_list_columns(path: Path, rows: list) -> tuple[dict[str, int | None], int | None, list]:
    """Return column positions, the required width (None: 3 or 4) and the data rows."""
    head = [field.lower() for field in rows[0][1]]
    if head[0] not in NAME_COLUMNS:
        return {"name": 0, "n_frames": 1, "label": 2, "valence": 3}, None, rows
    columns = {
        "name": 0,
        "label": _first_index(head, LABEL_COLUMNS),
        "n_frames": _first_index(head, _FRAMES_COLUMNS),
        "valence": _first_index(head, _VALENCE_COLUMNS),
    }
    if columns["label"] is None:
        raise ManifestError(
            f"{path}: line {rows[0][0]}: header {rows[0][1]} has no label column (one of {LABEL_COLUMNS})"
        )
    return columns, len(head), rows[1:]


def read_dfew_csv(path: Path) -> list[Record]:
    """Read a DFEW label file: video name and label 1-7, with or without a header.

    A header's first column is the name (``video_name``, ``order``, ``name``...)
    and it must have a ``label`` column; other columns go to ``extra``.

    Raises:
        ManifestError: Wrong field count, or a label that is not an integer
            1-7 (names line and value).
    """
    rows = split_lines(path)
    head = [field.lower() for field in rows[0][1]]
    if head[0] in NAME_COLUMNS:
        if "label" not in head:
            raise ManifestError(f"{path}: line {rows[0][0]}: DFEW header {rows[0][1]} has no 'label' column")
        header, body = rows[0][1], rows[1:]
        label_at = head.index("label")
    else:
        header, body, label_at = ["name", "label"], rows, 1
    records = []
    for line, fields in body:
        where = f"{path}: line {line}"
        if len(fields) != len(header):
            raise ManifestError(f"{where}: expected {len(header)} fields, got {len(fields)}: {fields}")
        value = fields[label_at]
        if not re.fullmatch(r"[0-9]+", value) or int(value) not in DFEW_LABELS:
            raise ManifestError(f"{where}: DFEW label {value!r} is not an integer 1-7 (mapping {DFEW_LABELS})")
        extra = {name: field for i, (name, field) in enumerate(zip(header, fields)) if i not in (0, label_at)}
        records.append(new_record(fields[0], where, label=DFEW_LABELS[int(value)], extra=extra))
    return records


def read_transcripts(path: Path) -> dict[str, str]:
    """Read a ``name,sentence`` transcript CSV into a dict (other columns are ignored).

    Raises:
        ManifestError: The columns are missing or a row has the wrong number of fields.
        DuplicateSampleError: A name appears on more than one row.
    """
    header, body = read_csv_table(path)
    if "name" not in header or "sentence" not in header:
        raise ManifestError(f"{path}: line 1: transcript header {header} needs columns 'name' and 'sentence'")
    name_at, sentence_at = header.index("name"), header.index("sentence")
    sentences: dict[str, str] = {}
    lines: dict[str, list[int]] = {}
    for line, row in body:
        if len(row) != len(header):
            raise ManifestError(f"{path}: line {line}: expected {len(header)} fields, got {len(row)}")
        sentences[row[name_at]] = row[sentence_at]
        lines.setdefault(row[name_at], []).append(line)
    repeated = {name: at for name, at in lines.items() if len(at) > 1}
    if repeated:
        raise DuplicateSampleError(f"{path}: names repeated in the transcripts (name: lines): {repeated}")
    return sentences


def merr_label(value: Any, where: str) -> str:
    """Return ``value`` lower-cased if it is one of MERR_LABELS, else raise ManifestError naming it."""
    label = value.strip().lower() if isinstance(value, str) else None
    if label not in MERR_LABELS:
        raise ManifestError(f"{where}: label {value!r} is not one of {MERR_LABELS}")
    return label


def _text(value: Any, name: str, where: str) -> str | None:
    """Return a stripped string field, None when absent or empty; refuse non-strings."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise ManifestError(f"{where}: {name} must be a string, got {value!r}")
    return value.strip() or None


def _frames(value: str, where: str) -> int:
    """Parse a non-negative integer frame count."""
    if not re.fullmatch(r"[0-9]+", value):
        raise ManifestError(f"{where}: n_frames {value!r} is not a non-negative integer")
    return int(value)


def _valence(value: str, where: str) -> float:
    """Parse a finite float valence."""
    try:
        valence = float(value)
    except ValueError:
        valence = math.nan
    if not math.isfinite(valence):
        raise ManifestError(f"{where}: valence {value!r} is not a finite number")
    return valence


def _first_index(fields: list[str], names: tuple[str, ...]) -> int | None:
    """Index of the first field that is one of ``names``, or None."""
    return next((i for i, field in enumerate(fields) if field in names), None)


def _unique_keys(path: Path):
    """Return a json ``object_pairs_hook`` that refuses a key repeated in one object."""

    def hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        counts = Counter(key for key, _ in pairs)
        repeated = sorted(key for key, count in counts.items() if count > 1)
        if repeated:
            raise DuplicateSampleError(f"{path}: JSON keys repeated in one object: {repeated}")
        return dict(pairs)

    return hook
