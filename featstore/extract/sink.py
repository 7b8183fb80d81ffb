"""The write stage: commits each finished unit into the store exactly once (one
chunk per spec, commit flags last), as a Ray Data map stage that writes each unit
as soon as it arrives (``StoreSink.commit_batch``)."""

from __future__ import annotations

import json
import logging
import os
import time
from typing import Any

import numpy as np

from featstore.extract.plan import UnitWork
from featstore.faults import maybe_fault
from featstore.store import FeatureStore

__all__ = ["StoreSink"]

log = logging.getLogger(__name__)


class StoreSink:
    """Writes each finished unit into the store: one chunk per spec, commit flags last.

    Units are owned by exactly one row, so retried or concurrent write tasks
    can only rewrite the same bytes; a committed unit is never rewritten.
    """

    def __init__(self, store_url: str, keys: dict[str, str], progress: Any = None) -> None:
        self.store_url, self.keys, self.progress = store_url, keys, progress
        self.stats: list[dict[str, Any]] = []

    def commit_batch(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Ray Data ``map_batches`` function: write and commit the batch's units now; one
        small row per unit back (``stats``: the unit's record as JSON), nothing else.

        A map stage rather than a Ray Data ``Datasink``: a Datasink's write tasks only start
        once the scheduler gives the write operator resources, which on a small node
        meant after every unit was encoded, so finished units waited in the object
        store and a killed job lost them all."""
        store = FeatureStore.open(self.store_url, "r+")
        stats = [json.dumps(self._write_unit(store, work)) for work in batch["work"]]
        return {"stats": np.array(stats, dtype=object)}

    def _write_unit(self, store: FeatureStore, work: UnitWork) -> dict[str, Any]:
        t0 = time.perf_counter()
        maybe_fault("sink.before", work.unit)
        written = {}
        for slot in work.slots:
            feat = store.feature(self.keys[slot])
            written[slot] = feat.write_unit(
                work.unit, work.features[slot], failures=work.failures[slot], retry_failed=True
            )
        maybe_fault("sink", work.unit)
        seconds = {**work.seconds, "write": time.perf_counter() - t0}
        failed = {slot: len(f) for slot, f in work.failures.items()}
        if self.progress is not None:  # fire and forget: the bar must not slow the writes
            self.progress.add.remote(len(work.samples))
        log.info("unit %d: %d clips, slots %s, failed %s", work.unit, len(work.samples), work.slots, failed)
        return {
            "unit": work.unit,
            "pid": os.getpid(),
            "clips": len(work.samples),
            "slots": work.slots,
            "written": written,
            "failures": {s: {i: list(v) for i, v in f.items()} for s, f in work.failures.items()},
            "seconds": seconds,
            "faces": list(work.faces),
            "devices": work.devices,
        }
