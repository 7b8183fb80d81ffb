"""Exactly-once when a committed unit is rewritten: a writer SIGKILLed at every
point of a rewrite leaves each sample pending, failed with its reason, or
committed with the bytes of its current media hash; a resume then ends bitwise
equal to a rewrite that was never interrupted."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from featstore.store import FeatureStore
from tests.featstore.store import store_worker as w
from tests.featstore.store.test_exactly_once import tree

WORKER = str(Path(w.__file__))
N = 24  # three pooled units of 8
UNIT = 1  # the unit that is rewritten: samples 8-15
EDITED = "clip_0010"  # the sample whose clip changes or whose failure is retried
NEW_HASH = hashlib.sha256(b"edited media").hexdigest()
OLD_FAILURE = ("decode_video", "moov atom not found")
NEW_FAILURE = ("decode_video", "edited clip is truncated")
POINTS = ("withdraw", "data", "media_hash", "fail_stage", "fail_reason", "status")

# transition -> (failures of the first write, whether the clip is edited,
#                failures of the rewrite, retry_failed)
TRANSITIONS = {
    "ok_to_failed": ({}, True, {EDITED: NEW_FAILURE}, False),
    "ok_to_new_ok": ({}, True, {}, False),
    "failed_to_ok": ({EDITED: OLD_FAILURE}, False, {}, True),
}


def prepare(root: Path, transition: str) -> FeatureStore:
    """A store whose unit UNIT was committed once, then the edit that makes it stale."""
    first, edited, _, _ = TRANSITIONS[transition]
    store = w.make_store(root, N)
    w.write_units(store, "pooled", list(range(store.feature("pooled").num_units)), failing=first)
    if edited:
        ids = store.sample_ids
        store.add_samples(ids, [NEW_HASH if s == EDITED else w.media_hash(s) for s in ids])
    return store


def rewrite_args(transition: str) -> list[str]:
    _, _, again, retry = TRANSITIONS[transition]
    args = [f"pooled:{UNIT}"]
    args += [f"--fail={sid}={stage}:{reason}" for sid, (stage, reason) in again.items()]
    return args + (["--retry-failed"] if retry else [])


def assert_every_sample_consistent(root: Path) -> dict[str, int]:
    """Each sample of the unit is pending, failed with the reason recorded for its
    current media, or committed with the bytes computed from its current media."""
    store = FeatureStore.open(root)
    feat = store.feature("pooled")
    start, stop = feat.unit_bounds(UNIT)
    status = feat.status(start, stop)
    failures = {f["sample_id"]: (f["stage"], f["reason"]) for f in feat.failures()}
    seen = {"pending": 0, "failed": 0, "ok": 0}
    for sid, st in zip(store.sample_ids[start:stop], status):
        if st == 1:
            want = w.features(feat.spec, [sid], [store.media_hash(sid)])[0].astype(feat.spec.dtype)
            np.testing.assert_array_equal(feat.read_id(sid), want, err_msg=f"{sid} committed with wrong bytes")
            seen["ok"] += 1
        elif st == 2:
            assert failures[sid] in (OLD_FAILURE, NEW_FAILURE), f"{sid} failed without its reason: {failures[sid]}"
            if store.media_hash(sid) == NEW_HASH:
                assert failures[sid] == NEW_FAILURE, f"{sid}: the old clip's failure kept for the edited clip"
            seen["failed"] += 1
        else:
            seen["pending"] += 1
    return seen


@pytest.fixture(scope="module")
def references(tmp_path_factory) -> dict[str, dict[str, str]]:
    """Each transition's store after an uninterrupted rewrite."""
    out = {}
    for transition, (_, _, again, retry) in TRANSITIONS.items():
        root = tmp_path_factory.mktemp(transition) / "ref.zarr"
        store = prepare(root, transition)
        assert w.write_units(store, "pooled", [UNIT], failing=again, retry_failed=retry) == 1
        out[transition] = tree(root)
    return out


@pytest.mark.parametrize("point", POINTS)
@pytest.mark.parametrize("transition", sorted(TRANSITIONS))
def test_rewrite_killed_at_every_point(references, tmp_path, transition, point):
    root = tmp_path / "k.zarr"
    prepare(root, transition)
    res = subprocess.run(
        [sys.executable, WORKER, str(root), *rewrite_args(transition)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "FEATSTORE_FAULT": f"write_unit.after_{point}@{UNIT}"},
    )
    assert res.returncode == -signal.SIGKILL, res.stderr
    seen = assert_every_sample_consistent(root)
    if point == "status":  # killed after the commit: the rewrite is complete
        assert seen["pending"] == 0
    else:  # the old commit was withdrawn before anything else changed
        assert seen == {"pending": 8, "failed": 0, "ok": 0}
    store = FeatureStore.open(root, "r+")
    _, _, again, retry = TRANSITIONS[transition]
    w.write_units(
        store, "pooled", store.feature("pooled").pending_units(retry_failed=retry), failing=again, retry_failed=retry
    )
    store.cleanup_partials()
    assert_every_sample_consistent(root)
    assert tree(root) == references[transition]
