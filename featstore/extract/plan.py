"""Planning an extraction: the pending work units of a store, each with the slots
still to compute. A unit (``UnitWork``) is one row of the pipeline."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from featstore.media.clip import MANIFEST_STAGE, ClipInputs
from featstore.store import FeatureStore

__all__ = ["UnitWork", "unit_works"]


@dataclass
class UnitWork:
    """One work unit travelling through the pipeline."""

    unit: int
    samples: list[dict[str, Any]]  # manifest samples of the unit, in store order
    slots: list[str]  # slots still pending for this unit
    clips: list[ClipInputs] = field(default_factory=list)
    features: dict[str, np.ndarray] = field(default_factory=dict)  # slot -> [n, *shape]
    failures: dict[str, dict[str, tuple[str, str]]] = field(default_factory=dict)  # slot -> {id: (stage, reason)}
    seconds: dict[str, float] = field(default_factory=dict)  # stage -> seconds spent on this unit
    faces: tuple[int, int] = (0, 0)  # frames with a face found, frames searched
    devices: dict[str, dict[str, Any]] = field(default_factory=dict)  # slot -> the actor that encoded it

    @property
    def ids(self) -> list[str]:
        return [s["sample_id"] for s in self.samples]


def unit_works(store: FeatureStore, keys: dict[str, str], retry_failed: bool) -> list[UnitWork]:
    """The pending work units and, for each, the slots still to compute. Samples
    come from the store's own annotations (media paths included), so a unit is
    complete even when this run's manifest covers only part of the store."""
    samples_by_id = {
        sid: {"sample_id": sid, "video": None, **ann} for sid, ann in zip(store.sample_ids, store.annotations())
    }
    todo: dict[int, list[str]] = {}
    for slot, key in keys.items():
        for unit in store.feature(key).pending_units(retry_failed):
            todo.setdefault(unit, []).append(slot)
    unit_size = store.feature(next(iter(keys.values()))).unit_size
    for slot, unit in _media_back(store, keys, samples_by_id, unit_size):
        todo[unit] = [s for s in keys if s == slot or s in todo.get(unit, [])]  # keys order
    works = []
    for unit in sorted(todo):
        ids = store.sample_ids[unit * unit_size : (unit + 1) * unit_size]
        works.append(UnitWork(unit, [samples_by_id[i] for i in ids], todo[unit]))
    return works


def _media_back(store: FeatureStore, keys: dict[str, str], samples: dict, unit_size: int) -> list[tuple[str, int]]:
    """``(slot, unit)`` of failures at stage ``manifest`` whose sample's media is usable again.

    A new problem sample's media hash changes when its file appears, so it is
    pending anyway; this catches a sample that kept its content hash (features
    computed before its file went missing) and was failed by a rewrite of its
    unit, then got back the same bytes."""
    return [
        (slot, r["index"] // unit_size)
        for slot, key in keys.items()
        for r in store.feature(key).failures()
        if r["stage"] == MANIFEST_STAGE and samples[r["sample_id"]].get("error") is None
    ]
