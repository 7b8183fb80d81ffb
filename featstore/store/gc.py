"""Garbage collection: drop superseded spec groups and the rows of samples that left the dataset.

Crash safety. ``gc`` can be killed at any point and run again; the store then
verifies and nothing kept is lost, because the live store is only ever changed
by steps that are atomic on their own or marked before they start:

- Removing spec groups only (no row leaves): the keys are first recorded in the
  root attribute ``gc_removing`` (one atomic ``zarr.json`` write; readers skip
  those groups from then on, so a half-deleted group is never opened), then the
  groups are deleted, then the attribute is cleared. A re-run finds the
  attribute and finishes the deletions.
- Compaction (rows leave, so samples move to other rows and units): the
  compacted store is written *beside* the live one, at ``STORE.gc-new``: the
  kept samples' index rows and annotations, and for every kept spec each new
  unit's chunks copied row by row from the old ones (data, input hashes and
  failure records as stored, commit flags last). Its root attribute
  ``gc_complete`` is written last. Then two renames switch it in:
  ``STORE -> STORE.gc-old`` and ``STORE.gc-new -> STORE``; then ``STORE.gc-old``
  is deleted and ``gc_complete`` cleared. Until the first rename the live store
  is untouched, so a killed build is simply discarded by the next run
  (``recover``); between the renames ``STORE`` is absent and ``recover`` does
  the second rename (``FeatureStore.open`` says to run gc again); after them only
  clean-up is left.

Compaction rewrites every kept spec, so it costs a copy of the kept bytes; it
needs a local store (the switch is a directory rename). Like ``verify --repair``,
run it while no extraction job writes the store. The bytes of a kept
feature for a sample that stays never change: rows are copied, not recomputed.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from featstore.errors import StoreError
from featstore.faults import maybe_fault
from featstore.store.array import UNIT_ARRAYS
from featstore.store.layout import FORMAT_KEY
from featstore.store.store import FeatureStore

__all__ = ["GC_COMPLETE", "GC_REMOVING", "GcReport", "gc_store", "recover"]

GC_REMOVING = "gc_removing"
GC_COMPLETE = "gc_complete"
NEW_SUFFIX, OLD_SUFFIX = ".gc-new", ".gc-old"
_RESERVED = (FORMAT_KEY, GC_REMOVING, GC_COMPLETE)


@dataclass
class GcReport:
    """What ``gc_store`` removed (or, with ``dry_run``, would remove)."""

    store: str
    dry_run: bool
    removed_specs: list[str] = field(default_factory=list)
    kept_specs: list[str] = field(default_factory=list)
    removed_samples: list[str] = field(default_factory=list)
    samples_before: int = 0
    samples_after: int = 0
    bytes_before: int = 0
    bytes_after: int = 0  # an estimate with dry_run
    recovered: list[str] = field(default_factory=list)  # what an interrupted gc left and this run finished

    @property
    def bytes_freed(self) -> int:
        return self.bytes_before - self.bytes_after

    def to_dict(self) -> dict[str, Any]:
        """Plain data: every field, ``removed_samples`` as a count beside ``removed_sample_ids``, and ``bytes_freed``."""
        out = asdict(self)
        out["removed_sample_ids"] = out["removed_samples"]
        out["removed_samples"] = len(self.removed_samples)
        return {**out, "bytes_freed": self.bytes_freed}


def _local(url: str | Path) -> Path:
    text = str(url)
    if "://" in text and not text.startswith("file://"):
        raise StoreError(f"gc needs a local store (it switches in the compacted copy by renaming a folder): {text}")
    return Path(text.removeprefix("file://"))


def _sibling(path: Path, suffix: str) -> Path:
    return path.with_name(path.name + suffix)


def _du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.exists() else 0


def recover(url: str | Path) -> list[str]:
    """Finish or undo what an interrupted gc left at ``url``; returns what it did. Idempotent."""
    path = _local(url)
    new, old = _sibling(path, NEW_SUFFIX), _sibling(path, OLD_SUFFIX)
    done = []
    if not path.exists() and new.exists() and old.exists():
        new.rename(path)  # killed between the two renames: the compacted store is complete
        done.append(f"switched in the compacted store {new.name}")
    if path.exists() and old.exists():
        shutil.rmtree(old)
        done.append(f"removed the old store {old.name}")
    if path.exists() and new.exists():
        shutil.rmtree(new)  # killed while building: the live store was never touched
        done.append(f"discarded the unfinished compacted store {new.name}")
    if path.exists():
        store = FeatureStore.open(path, "r+")
        attrs = store.attrs
        if attrs.get(GC_REMOVING):
            for key in attrs[GC_REMOVING]:
                _delete_group(store, key)
            store._group.attrs.pop(GC_REMOVING)  # atomic rewrite of zarr.json
            done.append(f"finished removing specs {attrs[GC_REMOVING]}")
        if GC_COMPLETE in attrs:
            store._group.attrs.pop(GC_COMPLETE)
            done.append("cleared the compaction marker")
    return done


def _delete_group(store: FeatureStore, key: str) -> None:
    """Delete one spec group, array by array, then the group (readers already skip it)."""
    specs = store._group["specs"]
    if key not in specs:
        return
    group = specs[key]
    for name in sorted(group.array_keys()):
        del group[name]
        maybe_fault("gc.after_delete_array")
    del specs[key]
    maybe_fault("gc.after_delete_spec")


def _resolve_keep(store: FeatureStore, keep: Sequence[str] | None) -> list[str]:
    if keep is None:
        return [f.spec.key for f in store.features()]
    return sorted({store.feature(q).spec.key for q in keep})


def gc_store(
    url: str | Path,
    keep: Sequence[str] | None = None,
    dataset_ids: Sequence[str] | None = None,
    dry_run: bool = False,
) -> GcReport:
    """Remove spec groups not in ``keep`` and rows of samples not in ``dataset_ids``.

    Args:
        url: a local store.
        keep: specs to keep (names, ids or ``name-id`` keys); None keeps every spec.
        dataset_ids: the dataset's sample ids; store samples not among them are
            removed (the index is compacted). None removes no sample.
        dry_run: report what would be removed, change nothing (not even an
            interrupted gc's leftovers).

    Returns:
        The GcReport (bytes measured on disk; estimated with ``dry_run``).

    Raises:
        StoreError: not a local store, or no store there.
        KeyError: naming a ``keep`` entry the store lacks or has several of.
    """
    path = _local(url)
    report = GcReport(str(url), dry_run)
    if not dry_run:
        report.recovered = recover(path)
    store = FeatureStore.open(path, "r" if dry_run else "r+")
    kept = _resolve_keep(store, keep)
    report.kept_specs = kept
    report.removed_specs = sorted(f.spec.key for f in store.features() if f.spec.key not in kept)
    ids = store.sample_ids
    stay = np.ones(len(ids), dtype=bool)
    if dataset_ids is not None:
        wanted = set(dataset_ids)
        stay = np.fromiter((sid in wanted for sid in ids), dtype=bool, count=len(ids))
    report.removed_samples = [ids[i] for i in np.flatnonzero(~stay)]
    report.samples_before, report.samples_after = len(ids), int(stay.sum())
    report.bytes_before = _du(path)
    if dry_run:
        removed = sum(_du(path / "specs" / k) for k in report.removed_specs)
        frac = report.samples_after / max(1, report.samples_before)
        kept_bytes = sum(_du(path / "specs" / k) for k in kept)
        report.bytes_after = report.bytes_before - removed - int(kept_bytes * (1 - frac))
        return report
    if stay.all():
        if report.removed_specs:
            store.set_attr(GC_REMOVING, report.removed_specs)
            maybe_fault("gc.after_mark")
            for key in report.removed_specs:
                _delete_group(store, key)
            store._group.attrs.pop(GC_REMOVING)
    else:
        _compact(store, path, kept, np.flatnonzero(stay))
    report.bytes_after = _du(path)
    return report


def _compact(store: FeatureStore, path: Path, kept: list[str], rows: np.ndarray) -> None:
    """Write the compacted store beside ``path`` and switch it in (see the module docstring)."""
    new_path, old_path = _sibling(path, NEW_SUFFIX), _sibling(path, OLD_SUFFIX)
    attrs = {k: v for k, v in store.attrs.items() if k not in _RESERVED}
    new = FeatureStore.create(new_path, attributes=attrs)
    ids = store.sample_ids
    annotations = store.annotations()
    hashes = store.hash_rows()
    new.add_samples([ids[i] for i in rows], [bytes(hashes[i]).hex() for i in rows], [annotations[i] for i in rows])
    maybe_fault("gc.after_index")
    for key in kept:
        old_feat = store.feature(key)
        feat = new.add_spec(
            old_feat.spec, unit_size=old_feat.unit_size, codec=old_feat.codec, chunk_size=old_feat.chunk_size
        )
        for k, v in old_feat.attrs.items():
            if k not in ("spec", "spec_id", "unit_size", "codec", "chunk_size"):
                feat.set_attr(k, v)
        for unit in range(feat.num_units):
            a, b = feat.unit_bounds(unit)
            src = rows[a:b]
            lo, hi = int(src[0]), int(src[-1]) + 1
            if not np.any(old_feat.raw("status")[lo:hi][src - lo]):
                continue  # all pending: leave the unit unwritten, as a fresh store has it
            for name in UNIT_ARRAYS:  # commit flags last, as a writer does
                feat.raw(name)[a:b] = old_feat.raw(name)[lo:hi][src - lo]
            maybe_fault("gc.after_copy_unit", unit)
    new.set_attr(GC_COMPLETE, {"from_samples": len(ids), "samples": len(rows), "specs": kept})
    maybe_fault("gc.after_complete")
    path.rename(old_path)
    maybe_fault("gc.after_rename_old")
    new_path.rename(path)
    maybe_fault("gc.after_switch")
    shutil.rmtree(old_path)
    maybe_fault("gc.after_cleanup")
    FeatureStore.open(path, "r+")._group.attrs.pop(GC_COMPLETE)
