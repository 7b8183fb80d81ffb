"""The decode stage: a Ray Data ``map`` that decodes every clip of a unit once for
all its pending slots (CPU tasks; imports no encoder and no transformers)."""

from __future__ import annotations

import time
from typing import Any

from featstore.extract.plan import UnitWork
from featstore.faults import maybe_fault
from featstore.manifest import Sample
from featstore.media.clip import DecodeConfig, decode_clip

__all__ = ["decode_unit"]


def decode_unit(row: dict[str, Any], root: str, cfg: DecodeConfig) -> dict[str, Any]:
    """Ray Data ``map`` function: decode every clip of a unit for the unit's pending slots."""
    work: UnitWork = row["work"]
    t0 = time.perf_counter()
    work.clips = [decode_clip(Sample.from_dict(s), root, work.slots, cfg) for s in work.samples]
    for slot in work.slots:
        work.failures[slot] = {c.sample_id: c.failures[slot] for c in work.clips if slot in c.failures}
    work.faces = (sum(c.faces_found for c in work.clips), sum(c.faces_total for c in work.clips))
    work.seconds["decode"] = time.perf_counter() - t0
    maybe_fault("decode", work.unit)
    return {"work": work}
