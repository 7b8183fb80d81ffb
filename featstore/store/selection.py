"""Which samples a reader or an export takes: committed in every requested spec, in a split."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from featstore.errors import SpecMismatchError
from featstore.store.array import FeatureArray
from featstore.store.layout import FAILED, OK, STATUS_NAMES
from featstore.store.store import FeatureStore

SPLITS = ("train", "val", "test")
# Without a "split" annotation a sample goes to a split by a hash of its id, so
# the assignment is stable across runs, machines and dataset growth.
DEFAULT_SPLIT_RATIOS = (0.9, 0.05, 0.05)


def split_of(sample_id: str, annotation: Mapping[str, Any], ratios: Sequence[float] = DEFAULT_SPLIT_RATIOS) -> str:
    """The split of a sample: its annotation's ``split`` (top level or in ``extra``),
    else ``train``/``val``/``test`` by a hash of its id with the given ratios.

    Raises:
        ValueError: naming the sample when its annotated split is not one of SPLITS.
    """
    given = annotation.get("split", (annotation.get("extra") or {}).get("split"))
    if given is not None:
        if given not in SPLITS:
            raise ValueError(f"sample {sample_id!r}: split {given!r} is not one of {SPLITS}")
        return given
    u = int.from_bytes(hashlib.sha256(sample_id.encode("utf-8")).digest()[:8], "big") / 2**64
    edge = 0.0
    for name, ratio in zip(SPLITS, ratios):
        edge += ratio
        if u < edge:
            return name
    return SPLITS[-1]


def resolve_specs(
    store: FeatureStore, names: Sequence[str] | None = None, expect: Mapping[str, str] | None = None
) -> list[FeatureArray]:
    """The feature arrays to read, by name (or id), default all, checked against ``expect``.

    Args:
        store: the store.
        names: spec names or ids; None for every spec in the store.
        expect: ``{name: spec_id}`` the caller's config expects.

    Raises:
        KeyError: naming a spec the store does not have (or has several of).
        SpecMismatchError: naming both ids when a spec's id is not the expected one.
    """
    if names is None:
        names = list(expect) if expect else [f.spec.key for f in store.features()]
    feats = [_pick(store, n, (expect or {}).get(n)) for n in names]
    check_expected({f.spec.name: f.spec.id for f in feats}, expect, store.url)
    return feats


def _pick(store: FeatureStore, name: str, want: str | None) -> FeatureArray:
    """The spec ``name`` (or id/key); when ``want`` names an id, the spec of that name and id,
    so that a store holding two specs of one name (an extracted and an imported ``local``,
    say) serves the one the caller's config names."""
    if want is not None:
        hits = [f for f in store.features() if name in (f.spec.name, f.spec.key) and f.spec.id == want]
        if len(hits) == 1:
            return hits[0]
    return store.feature(name)


def check_expected(have: Mapping[str, str], expect: Mapping[str, str] | None, where: str) -> None:
    """Refuse features whose spec ids differ from what the caller expects.

    Raises:
        SpecMismatchError: naming the spec, the expected id and the id found.
    """
    for name, want in (expect or {}).items():
        got = have.get(name)
        if got is None:
            raise SpecMismatchError(
                f"{where} has no features named {name!r} (expected spec id {want}); it has {dict(have)}"
            )
        if got != want:
            raise SpecMismatchError(
                f"{where}: spec {name!r} has id {got} but {want} was expected: the cache was made with "
                f"another encoder, weights or preprocessing; re-extract or update the config"
            )


@dataclass(frozen=True)
class Selection:
    """Samples chosen for reading, in store order, and the ones left out with why."""

    indices: list[int]
    excluded: list[dict[str, str]]


def select(
    store: FeatureStore,
    feats: Sequence[FeatureArray],
    split: str | None = None,
    ratios: Sequence[float] = DEFAULT_SPLIT_RATIOS,
) -> Selection:
    """Samples committed for every spec in ``feats`` (and in ``split``, if given).

    Samples outside the split are simply not chosen; samples in it but not
    committed everywhere are listed in ``excluded`` with the spec and status.
    """
    if split is not None and split not in SPLITS:
        raise ValueError(f"split {split!r} is not one of {SPLITS}")
    statuses = [(f, f.status()) for f in feats]
    failures = {}
    for f, st in statuses:
        if np.any(st == FAILED):
            failures.update({(f.spec.name, r["sample_id"]): r for r in f.failures()})
    annotations = store.annotations() if split is not None else None
    chosen, excluded = [], []
    for i, sid in enumerate(store.sample_ids):
        if split is not None and split_of(sid, annotations[i], ratios) != split:
            continue
        why = [_why(f.spec.name, int(st[i]), failures.get((f.spec.name, sid))) for f, st in statuses if st[i] != OK]
        if why:
            excluded.append({"sample_id": sid, "reason": "; ".join(why)})
        else:
            chosen.append(i)
    return Selection(chosen, excluded)


def _why(spec_name: str, status: int, failure: dict | None) -> str:
    if failure is not None:
        return f"{spec_name}: failed at {failure['stage']}: {failure['reason']}"
    return f"{spec_name}: {STATUS_NAMES[status]}"
