"""Check that every committed work unit of a store reads back whole and sane."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from zarr.core.sync import sync

from featstore.store.array import UNIT_ARRAYS, FeatureArray
from featstore.store.layout import FAILED, OK, PENDING
from featstore.store.store import FeatureStore


@dataclass
class VerifyReport:
    """What ``verify_store`` found: problems make a store unusable, notes do not."""

    checked_units: int = 0
    checked_samples: int = 0
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def chunk_exists(arr, unit: int) -> bool:
    """Whether the chunk of work unit ``unit`` of a unit-chunked array is on storage."""
    key = arr.metadata.encode_chunk_key((unit,) + (0,) * (arr.ndim - 1))
    return bool(sync(arr.store.exists(f"{arr.path}/{key}")))


def _verify_unit(feat: FeatureArray, unit: int, report: VerifyReport) -> None:
    where = f"spec {feat.spec.key} unit {unit}"
    start, stop = feat.unit_bounds(unit)
    missing = [n for n in UNIT_ARRAYS if not chunk_exists(feat.raw(n), unit)]
    if missing:
        report.problems.append(f"{where}: committed but chunk(s) missing for {missing}")
        return
    try:
        status = feat.raw("status")[start:stop]
        data = feat.raw("data")[start:stop]
        hashes = feat.raw("media_hash")[start:stop]
    except Exception as e:  # a corrupt chunk raises whatever its codec raises
        report.problems.append(f"{where}: chunk does not decode: {type(e).__name__}: {e}")
        return
    ids = feat.ids(start, stop)
    if data.shape != (stop - start, *feat.spec.shape):
        report.problems.append(f"{where}: data shape {data.shape}, expected {(stop - start, *feat.spec.shape)}")
    if not np.isin(status, (PENDING, OK, FAILED)).all():
        report.problems.append(f"{where}: status values {sorted(set(status.tolist()))} outside 0/1/2")
    ok = status == OK
    flat = data.reshape(len(ids), -1).astype(np.float32)
    for i in np.flatnonzero(ok & ~np.isfinite(flat).all(axis=1)):
        report.problems.append(f"{where}: sample {ids[i]!r} has non-finite values")
    for i in np.flatnonzero(ok & ~hashes.any(axis=1)):
        report.problems.append(f"{where}: sample {ids[i]!r} is committed without an input hash")
    report.checked_units += 1
    report.checked_samples += int(ok.sum())


def verify_store(store: FeatureStore) -> VerifyReport:
    """Read back every unit that has any committed or failed sample.

    A unit is checked when its commit chunk exists: each of its arrays' chunks
    must exist and decode, data must have the spec's shape, committed samples
    must be finite and carry an input hash.
    """
    report = VerifyReport()
    for feat in store.features():
        status_arr = feat.raw("status")
        for unit in range(feat.num_units):
            if chunk_exists(status_arr, unit):
                _verify_unit(feat, unit, report)
        stale = feat.counts()
        if stale["pending"]:
            report.notes.append(f"spec {feat.spec.key}: {stale['pending']} samples pending")
    partials = store.partial_files()
    if partials:
        report.notes.append(f"{len(partials)} temp files from interrupted writes (removed by the next extraction run)")
    return report
