"""Joining a label list or a transcript CSV into a dataset's records by sample id; a value
given twice must agree, and an id given twice is named."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from featstore.errors import DuplicateSampleError, ManifestError
from featstore.manifest.formats import Record, read_label_list, read_transcripts

__all__ = ["check_unique", "join_labels", "join_transcripts"]


def check_unique(ids: Sequence[str], wheres: Sequence[str], source: str) -> None:
    """Raise DuplicateSampleError naming every id that occurs more than once, with where each occurs."""
    seen: dict[str, list[str]] = {}
    for sample_id, where in zip(ids, wheres):
        seen.setdefault(sample_id, []).append(where)
    repeated = {sample_id: at for sample_id, at in seen.items() if len(at) > 1}
    if repeated:
        detail = "; ".join(f"{sample_id!r} at {at}" for sample_id, at in repeated.items())
        raise DuplicateSampleError(f"{source}: duplicate sample ids {list(repeated)}: {detail}")


def join_labels(records: list[Record], path: Path) -> None:
    """Join a label list's label, n_frames and valence into MERR records by sample id."""
    rows = read_label_list(path)
    check_unique([r["sample_id"] for r in rows], [r["where"] for r in rows], str(path))
    by_id = {row["sample_id"]: row for row in rows}
    for record in records:
        row = by_id.get(record["sample_id"])
        if row is not None:
            _merge(record, "label", row["label"], row["where"])
            for key, value in row["extra"].items():
                _merge(record, key, value, row["where"], record["extra"])


def join_transcripts(records: list[Record], path: Path) -> None:
    """Join a transcript CSV's sentences into records by sample id."""
    sentences = read_transcripts(path)
    for record in records:
        sentence = sentences.get(record["sample_id"])
        if sentence:
            _merge(record, "transcript", sentence, str(path))


def _merge(record: Record, key: str, value: Any, source: str, target: dict | None = None) -> None:
    """Set ``target[key]`` (default: the record) to ``value`` unless it already holds a different value."""
    target = record if target is None else target
    current = target.get(key)
    if current is None:
        target[key] = value
    elif current != value:
        raise ManifestError(
            f"sample {record['sample_id']!r}: {key} {current!r} from {record['where']} "
            f"disagrees with {value!r} from {source}"
        )
