"""Planning an extraction: what a run will compute, per spec and per work unit, and why.

``plan_extraction`` is the one planning function: ``featstore plan`` prints its
result without touching the store, and the extraction job (``run.prepare``)
calls it before it adds the manifest and the spec groups, then executes exactly
the units it lists (``unit_works``) after checking the store agrees.

Reasons a sample must be computed for a spec (the first that applies):

- ``new spec id``: the store has no group for this spec id. When it has a group
  of the same name with another id, the plan says what differs (the encoder
  weights, a preprocessing parameter, ...), from the two specs' fields.
- ``new clip``: the manifest has a sample the store does not.
- ``edited clip``: the sample's media hash in the manifest differs from the
  store's, or its stored feature was computed from other media bytes.
- ``failed, --retry-failed``: recorded as failed and the run retries failures.
- ``not computed yet``: the store has the sample and the spec but no feature
  (an interrupted run, or samples added without an extraction).

Samples are classified by comparing media hashes (manifest vs store index vs
the hash each feature was computed from), so nothing is decoded or encoded.
A unit (``UnitWork``) is one row of the pipeline.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from featstore.errors import StoreError
from featstore.extract.spec_diff import spec_changes
from featstore.names import MANIFEST_STAGE
from featstore.spec import FeatureSpec
from featstore.store import FeatureStore
from featstore.store.index import hash_row
from featstore.store.layout import FAILED, OK, PENDING, default_unit_size
from featstore.store.store import manifest_hashes

if TYPE_CHECKING:  # the planner itself needs no media code (keeps `featstore plan` and resume light)
    from featstore.media.clip import ClipInputs

__all__ = [
    "REASONS",
    "Plan",
    "SpecPlan",
    "UnitWork",
    "check_plan_matches_store",
    "manifest_rows",
    "plan_extraction",
    "spec_changes",  # (from spec_diff)
    "unit_works",
]

NEW_SPEC, NEW_CLIP, EDITED, RETRY, NOT_YET, MEDIA_BACK = (
    "new spec id",
    "new clip",
    "edited clip",
    "failed, --retry-failed",
    "not computed yet",
    "media usable again",
)
REASONS = (NEW_SPEC, NEW_CLIP, EDITED, RETRY, NOT_YET, MEDIA_BACK)


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


@dataclass
class SpecPlan:
    """What a run does for one slot's spec."""

    slot: str
    spec: FeatureSpec
    exists: bool  # the store already has a group for this spec id
    unit_size: int
    samples: int  # rows once the manifest is added
    done: int  # committed with current media: nothing to do
    failed_kept: int  # failed and left alone (no --retry-failed)
    todo: dict[str, int]  # reason -> samples to compute
    units: list[int]  # work units to run
    media_back_units: list[int] = field(default_factory=list)  # units run only for MEDIA_BACK samples
    replaces: list[str] = field(default_factory=list)  # keys of same-name specs with another id
    changes: list[str] = field(default_factory=list)  # what differs from the (first) replaced spec

    @property
    def to_compute(self) -> int:
        return sum(self.todo.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "slot": self.slot,
            "name": self.spec.name,
            "id": self.spec.id,
            "key": self.spec.key,
            "exists": self.exists,
            "unit_size": self.unit_size,
            "samples": self.samples,
            "done": self.done,
            "failed_kept": self.failed_kept,
            "to_compute": self.to_compute,
            "todo": dict(self.todo),
            "units": list(self.units),
            "replaces": list(self.replaces),
            "changes": list(self.changes),
        }


@dataclass
class Plan:
    """The whole plan: per slot, and the store rows the manifest adds or edits."""

    store: str
    store_samples: int  # rows in the store now
    new_samples: int  # manifest samples the store lacks (appended in manifest order)
    edited_samples: int  # manifest samples whose media changed
    unusable: list[dict[str, str]]  # manifest samples whose media is unusable (recorded as failed), with why
    retry_failed: bool
    specs: dict[str, SpecPlan]
    unusable_rows: list[int] = field(default_factory=list)  # rows of the unusable samples (nothing is decoded)

    def units(self) -> dict[int, list[str]]:
        """Unit -> slots to compute in it, in slot order."""
        out: dict[int, list[str]] = {}
        for slot, sp in self.specs.items():
            for u in sp.units:
                out.setdefault(u, []).append(slot)
        return dict(sorted(out.items()))

    def to_dict(self) -> dict[str, Any]:
        return {
            "store": self.store,
            "store_samples": self.store_samples,
            "new_samples": self.new_samples,
            "edited_samples": self.edited_samples,
            "unusable": list(self.unusable),
            "unusable_rows": list(self.unusable_rows),
            "retry_failed": self.retry_failed,
            "specs": {slot: sp.to_dict() for slot, sp in self.specs.items()},
            "units": {str(u): s for u, s in self.units().items()},
        }

    def lines(self) -> list[str]:
        """The plan as a person reads it."""
        out = [
            f"store {self.store}: {self.store_samples} samples; the manifest adds {self.new_samples} "
            f"and edits {self.edited_samples}" + (f"; {len(self.unusable)} unusable" if self.unusable else "")
        ]
        for slot, sp in self.specs.items():
            why = ", ".join(f"{n} {r}" for r, n in sp.todo.items() if n) or "nothing"
            kept = f", {sp.failed_kept} failed kept (--retry-failed recomputes them)" if sp.failed_kept else ""
            out.append(
                f"  {slot:<9} {sp.spec.key:<28} done {sp.done:>6}  to compute {sp.to_compute:>6} "
                f"in {len(sp.units)} unit(s): {why}{kept}"
            )
            if sp.replaces:
                out.append(f"            new spec id; store has {', '.join(sp.replaces)}: {'; '.join(sp.changes)}")
        for p in self.unusable:
            out.append(f"  unusable media (recorded as failed): {p['sample_id']}: {p['reason']}")
        return out


def manifest_rows(manifest: Any, store: FeatureStore | None = None) -> tuple[list[str], list[str]]:
    """Ids and media hashes of the manifest's samples as ``FeatureStore.add_manifest``
    records them in ``store`` (every sample; unusable media get a problem hash)."""
    return [s.sample_id for s in manifest.samples], manifest_hashes(manifest, None if store is None else store.index)


def plan_extraction(
    store: FeatureStore | None,
    specs: Mapping[str, FeatureSpec],
    manifest: Any = None,
    retry_failed: bool = False,
    unit_size: int | None = None,
    store_url: str | None = None,
) -> Plan:
    """What an extraction run computes, per slot and per unit, and why. Reads only.

    Args:
        store: the store as it is now (None: it does not exist yet).
        specs: slot -> the spec the run's encoder has (``spec_of``, or
            ``featstore.extract.specs.planned_spec`` without running an encoder).
        manifest: the dataset manifest the run adds first (None: the store's samples only).
        retry_failed: whether failed samples are computed again.
        unit_size: unit size of specs the store does not have yet (default: from the shape).
        store_url: the store's location, for the report when ``store`` is None.

    Returns:
        The Plan; ``Plan.units()`` are the work units the run executes.
    """
    n0 = 0 if store is None else store.num_samples
    index_hashes = np.zeros((0, 32), np.uint8) if store is None else store.hash_rows()
    new_ids: list[str] = []
    edited_rows = np.zeros(n0, dtype=bool)
    usable_rows = np.zeros(n0, dtype=bool)  # stored samples whose manifest media is usable now
    unusable: list[dict[str, str]] = []
    unusable_rows: list[int] = []  # their rows once the manifest is added
    if manifest is not None:
        ids, hashes = manifest_rows(manifest, store)
        unusable = [{"sample_id": s.sample_id, "reason": str(s.error)} for s in manifest.problems]
        known_rows, known_hashes = [], []
        for sample, sid, h in zip(manifest.samples, ids, hashes):
            if store is not None and sid in store.index:
                row = store.index_of(sid)
                known_rows.append(row)
                known_hashes.append(hash_row(h, sid))
                usable_rows[row] = sample.error is None
            else:
                row = n0 + len(new_ids)  # new samples are appended in manifest order
                new_ids.append(sid)
            if sample.error is not None:
                unusable_rows.append(row)
        if known_rows:
            rows = np.asarray(known_rows)
            edited_rows[rows] = np.any(np.stack(known_hashes) != index_hashes[rows], axis=1)
    n = n0 + len(new_ids)
    plans = {}
    for slot, spec in specs.items():
        existing = [] if store is None else [f for f in store.features() if f.spec.name == spec.name]
        feat = next((f for f in existing if f.spec.id == spec.id), None)
        reason = np.full(n, -1, dtype=np.int8)  # index into REASONS, -1: nothing to do
        done = failed_kept = 0
        if feat is None:
            reason[:] = REASONS.index(NEW_SPEC)
            usize = unit_size if unit_size is not None else default_unit_size(spec.shape, spec.dtype)
        else:
            usize = feat.unit_size
            raw, stale = feat.raw_status(), feat.stale_rows()
            reason[n0:] = REASONS.index(NEW_CLIP)
            old = reason[:n0]
            edited = edited_rows | (stale & (raw != PENDING))
            old[edited] = REASONS.index(EDITED)
            free = ~edited
            if retry_failed:
                old[free & (raw == FAILED)] = REASONS.index(RETRY)
            else:
                back = media_back_rows(feat, free & (raw == FAILED), usable_rows)
                old[back] = REASONS.index(MEDIA_BACK)
                failed_kept = int((free & (raw == FAILED)).sum()) - len(back)
            old[free & (raw == PENDING)] = REASONS.index(NOT_YET)
            done = int((free & (raw == OK)).sum())
        todo_rows = np.flatnonzero(reason >= 0)
        counts = np.bincount(reason[todo_rows], minlength=len(REASONS))
        pending_units = set((np.flatnonzero((reason >= 0) & (reason != REASONS.index(MEDIA_BACK))) // usize).tolist())
        units = np.unique(todo_rows // usize).tolist()
        # Same-name specs with another id; extracted ones first, as the likelier predecessor.
        others = sorted(
            (f for f in existing if f.spec.id != spec.id), key=lambda f: bool(f.spec.preprocess.get("imported"))
        )
        plans[slot] = SpecPlan(
            slot=slot,
            spec=spec,
            exists=feat is not None,
            unit_size=usize,
            samples=n,
            done=done,
            failed_kept=failed_kept,
            todo={r: int(c) for r, c in zip(REASONS, counts) if c},
            units=units,
            media_back_units=[u for u in units if u not in pending_units],
            replaces=[f.spec.key for f in others],
            changes=spec_changes(others[0].spec, spec) if others else [],
        )
    return Plan(
        store=store.url if store is not None else str(store_url),
        store_samples=n0,
        new_samples=len(new_ids),
        edited_samples=int(edited_rows.sum()),
        unusable=unusable,
        retry_failed=retry_failed,
        specs=plans,
        unusable_rows=sorted(unusable_rows),
    )


def check_plan_matches_store(plan: Plan, store: FeatureStore, keys: Mapping[str, str]) -> None:
    """After the manifest and specs are in the store, the store's own pending units
    must be the plan's (a guard against the two drifting apart; nothing is written yet).

    Raises:
        StoreError: naming the slot and both unit lists when they differ.
    """
    for slot, key in keys.items():
        have = sorted(set(store.feature(key).pending_units(plan.retry_failed)) | set(plan.specs[slot].media_back_units))
        want = plan.specs[slot].units
        if have != want:
            raise StoreError(
                f"plan and store disagree for {slot} ({key}): plan units {want[:10]}, store pending {have[:10]} "
                f"({len(want)} vs {len(have)}); nothing was computed"
            )


def unit_works(store: FeatureStore, plan: Plan | Mapping[str, str], retry_failed: bool = False) -> list[UnitWork]:
    """The units to run and, for each, the slots to compute. Samples come from the
    store's own annotations (media paths included), so a unit is complete even
    when this run's manifest covers only part of the store.

    Args:
        store: the store, with the manifest and spec groups already added.
        plan: the Plan (its units are run), or slot -> spec key (the store's pending units are run).
        retry_failed: with a key mapping, whether failed samples are pending.

    Raises:
        ValueError: when the slots' specs have different unit sizes.
    """
    if isinstance(plan, Plan):
        todo = plan.units()
        sizes = {sp.unit_size for sp in plan.specs.values()}
    else:
        todo = {}
        for slot, key in plan.items():
            for unit in store.feature(key).pending_units(retry_failed):
                todo.setdefault(unit, []).append(slot)
        sizes = {store.feature(k).unit_size for k in plan.values()}
        if len(sizes) == 1:
            usable = np.array([a.get("error") is None for a in store.annotations()], dtype=bool)
            for slot, key in plan.items():
                feat = store.feature(key)
                for unit in np.unique(media_back_rows(feat, feat.raw_status() == FAILED, usable) // feat.unit_size):
                    todo[int(unit)] = [s for s in plan if s == slot or s in todo.get(int(unit), [])]  # slot order
    if len(sizes) > 1:
        raise ValueError(f"the specs of one run must share a unit size; they have {sorted(sizes)}")
    if not todo:
        return []
    (unit_size,) = sizes
    annotations = store.annotations()
    works = []
    for unit in sorted(todo):
        a, b = unit * unit_size, (unit + 1) * unit_size
        samples = [
            {"sample_id": sid, "video": None, **ann} for sid, ann in zip(store.sample_ids[a:b], annotations[a:b])
        ]
        works.append(UnitWork(unit, samples, todo[unit]))
    return works


def media_back_rows(feat: Any, failed: np.ndarray, usable: np.ndarray) -> np.ndarray:
    """The one "media usable again" rule: rows failed (``failed``, a mask) at stage
    ``manifest`` whose media is usable now (``usable``, a mask). Their media was
    unusable when their unit was last written, while their media hash stayed
    (features kept from before the media went missing), so nothing else makes them
    pending. Reads the failure stage of those rows only."""
    rows = np.flatnonzero(failed & usable)
    if rows.size == 0:
        return rows
    from featstore.store.layout import decode_text

    stages = feat.raw("fail_stage").oindex[rows]
    return rows[np.array([decode_text(r) == MANIFEST_STAGE for r in stages], dtype=bool)]
