"""Check that every committed work unit of a store reads back whole and sane."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from featstore.errors import CorruptChunkError
from featstore.store.array import UNIT_ARRAYS, FeatureArray
from featstore.store.chunks import chunk_exists, chunks_present
from featstore.store.layout import FAILED, OK, PENDING
from featstore.store.store import FeatureStore

__all__ = ["BadUnit", "VerifyReport", "chunk_exists", "verify_store"]


@dataclass(frozen=True)
class BadUnit:
    """A unit of one spec that ``verify_store`` found broken, with why."""

    spec: str  # the spec's group key, ``name-id``
    unit: int
    reasons: tuple[str, ...]


@dataclass
class VerifyReport:
    """What ``verify_store`` found: problems make a store unusable, notes do not."""

    checked_units: int = 0
    checked_samples: int = 0
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    bad_units: list[BadUnit] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _read_chunks(feat: FeatureArray, unit: int, present: list[str]) -> tuple[dict[str, np.ndarray], list[str]]:
    start, stop = feat.unit_bounds(unit)
    rows, reasons = {}, []
    for name in present:
        try:
            rows[name] = feat.raw(name)[start:stop]
        except Exception as e:  # a corrupt chunk raises whatever its codec (or the reshape) raises
            reasons.append(f"chunk does not decode ({name}): {type(e).__name__}: {e}")
    return rows, reasons


def _unit_reasons(feat: FeatureArray, unit: int, report: VerifyReport) -> list[str]:
    start, stop = feat.unit_bounds(unit)
    on_storage = {n: chunks_present(feat.raw(n), unit, feat.unit_size) for n in UNIT_ARRAYS}
    present = [n for n in UNIT_ARRAYS if any(on_storage[n])]
    if not present:
        return []  # never written
    rows, reasons = _read_chunks(feat, unit, present)
    status = rows.get("status")
    # A missing status chunk reads as pending (a first write killed before its
    # commit); an unreadable one may hide commits, so it counts as committed.
    committed = "status" in present and (status is None or bool(np.any(status != PENDING)))
    if not committed:
        return reasons  # pending: an unreadable chunk still breaks whole-array reads
    missing = [n for n in UNIT_ARRAYS if not all(on_storage[n])]
    if missing:
        reasons.append(f"committed but chunk(s) missing for {missing}")
    data, hashes = rows.get("data"), rows.get("media_hash")
    if status is None or data is None or hashes is None:
        return reasons
    ids = feat.ids(start, stop)
    if data.shape != (stop - start, *feat.spec.shape):
        return reasons + [f"data shape {data.shape}, expected {(stop - start, *feat.spec.shape)}"]
    if not np.isin(status, (PENDING, OK, FAILED)).all():
        reasons.append(f"status values {sorted(set(status.tolist()))} outside 0/1/2")
    ok = status == OK
    flat = data.reshape(len(ids), -1).astype(np.float32)
    reasons += [f"sample {ids[i]!r} has non-finite values" for i in np.flatnonzero(ok & ~np.isfinite(flat).all(axis=1))]
    reasons += [
        f"sample {ids[i]!r} is committed without an input hash" for i in np.flatnonzero(ok & ~hashes.any(axis=1))
    ]
    if not reasons:
        report.checked_units += 1
        report.checked_samples += int(ok.sum())
    return reasons


def verify_store(store: FeatureStore) -> VerifyReport:
    """Read back every unit that has any chunk on storage.

    A unit with any committed or failed sample must have each of its arrays'
    chunks, all decodable; data must have the spec's shape, committed samples
    must be finite and carry an input hash. In a pending unit (no commit) any
    chunk present must still decode, because whole-array reads cross it. Each
    broken unit is listed in ``bad_units`` for ``repair_store``.
    """
    report = VerifyReport()
    for feat in store.features():
        for unit in range(feat.num_units):
            reasons = _unit_reasons(feat, unit, report)
            if reasons:
                report.problems += [f"spec {feat.spec.key} unit {unit}: {r}" for r in reasons]
                report.bad_units.append(BadUnit(feat.spec.key, unit, tuple(reasons)))
        try:
            pending = feat.counts()["pending"]
        except CorruptChunkError:
            continue  # already a problem above
        if pending:
            report.notes.append(f"spec {feat.spec.key}: {pending} samples pending")
    partials = store.partial_files()
    if partials:
        report.notes.append(f"{len(partials)} temp files from interrupted writes (removed by the next extraction run)")
    return report
