"""``featstore verify --repair``: truncated, deleted, garbage and wrong-shape chunks
and non-finite rows are found, their units withdrawn (nothing else touched), a
kill mid-repair is finished by a re-run, and the next run recomputes exactly
those units, ending bitwise equal to a clean run. Also on a ``memory://`` store."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import fsspec
import numpy as np
import pytest
from zarr.core.buffer import cpu
from zarr.core.sync import sync

from featstore.cli import main
from featstore.errors import CorruptChunkError
from featstore.store import FeatureStore
from featstore.store.chunks import chunk_path
from featstore.store.chunks import unit_chunks as chunks_of
from featstore.store.repair import repair_store
from featstore.store.verify import verify_store
from tests.featstore.store import store_worker as w
from tests.featstore.store.test_exactly_once import tree

N = 20  # pooled: units of 8 (unit 2 is short), tokens: units of 4
REPO = str(Path(__file__).resolve().parents[3])
OTHER = {"pooled": "tokens", "tokens": "pooled"}


def fill(url) -> FeatureStore:
    store = w.make_store(url, N)
    for name in w.UNITS:
        w.write_units(store, name, list(range(store.feature(name).num_units)))
    return store


def unit_chunks(store: FeatureStore, name: str, unit: int) -> set[str]:
    """Store keys of every chunk of one unit of one spec."""
    feat = store.feature(name)
    arrays = ("data", "media_hash", "fail_stage", "fail_reason", "status")
    return {chunk_path(feat.raw(a), c) for a in arrays for c in chunks_of(feat.raw(a), unit, feat.unit_size)}


def corrupt(store: FeatureStore, name: str, unit: int, array: str, kind: str) -> None:
    """Damage one chunk through the Zarr store API (so it works on any URL)."""
    feat = store.feature(name)
    arr = feat.raw(array)
    key = chunk_path(arr, chunks_of(arr, unit, feat.unit_size)[-1])  # the unit's last chunk
    raw = sync(arr.store.get(key, cpu.buffer_prototype)).to_bytes()
    if kind == "delete":
        sync(arr.store.delete(key))
        return
    if kind == "nonfinite":
        start, _ = store.feature(name).unit_bounds(unit)
        arr[start] = np.full(arr.shape[1:], np.nan, arr.dtype)  # a valid chunk holding NaN
        return
    if kind == "truncate":
        new = raw[: len(raw) // 2]
    elif kind == "garbage":
        new = b"not a zstd frame" * 8
    else:  # wrong shape: a valid chunk of the other spec's array of the same name
        other = store.feature(OTHER[name]).raw(array)
        new = sync(other.store.get(chunk_path(other, unit), cpu.buffer_prototype)).to_bytes()
        assert new != raw
    sync(arr.store.set(key, cpu.Buffer.from_bytes(new)))


@pytest.fixture(scope="module")
def clean(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("clean") / "s.zarr"
    fill(root)
    return tree(root)


def recompute(store: FeatureStore) -> dict[str, int]:
    """The "extraction": write every pending unit of each spec; how many were written."""
    return {name: w.write_units(store, name, store.feature(name).pending_units()) for name in w.UNITS}


CASES = [
    (a, k, "tokens", 2)
    for a in ("data", "status", "media_hash")
    for k in ("truncate", "delete", "garbage", "wrong_shape")
]
CASES += [
    ("data", "nonfinite", "tokens", 2),
    ("data", "garbage", "pooled", 2),
    ("status", "truncate", "pooled", 2),
    ("fail_reason", "garbage", "pooled", 0),
    ("fail_stage", "delete", "pooled", 0),
]


@pytest.mark.parametrize(("array", "kind", "name", "unit"), CASES, ids=["-".join(map(str, c)) for c in CASES])
def test_repair_withdraws_then_next_run_recomputes(clean, tmp_path, capsys, array, kind, name, unit):
    root = tmp_path / "s.zarr"
    store = fill(root)
    assert tree(root) == clean
    corrupt(store, name, unit, array, kind)
    broken = tree(root)
    key = store.feature(name).spec.key
    lost_commit = (array, kind) == ("status", "delete")  # a lost commit already reads as pending

    rc = main(["verify", str(root)])
    out = capsys.readouterr()
    assert tree(root) == broken, "verify without --repair changed the store"
    assert rc == (0 if lost_commit else 1), out
    if not lost_commit:
        assert f"spec {key} unit {unit}:" in out.err

    rc = main(["verify", str(root), "--repair"])
    out = capsys.readouterr()
    assert rc == 0, out
    withdrew = [line for line in out.out.splitlines() if line.startswith("withdrew")]
    if lost_commit:
        assert withdrew == []
    else:
        assert len(withdrew) == 1 and withdrew[0].startswith(f"withdrew spec {key} unit {unit} "), out.out
    repaired = tree(root)
    mine = {str(Path(k)) for k in unit_chunks(store, name, unit)}
    changed = {k for k in set(broken) | set(repaired) if broken.get(k) != repaired.get(k)}
    assert changed <= mine, f"repair touched chunks of other units: {sorted(changed - mine)}"
    assert verify_store(FeatureStore.open(root)).ok

    store = FeatureStore.open(root, "r+")
    assert store.feature(name).pending_units() == [unit]
    assert store.feature(OTHER[name]).pending_units() == []
    assert recompute(store) == {name: 1, OTHER[name]: 0}
    after = tree(root)
    assert {k: v for k, v in after.items() if k not in mine} == {k: v for k, v in broken.items() if k not in mine}
    assert after == clean


def run_repair(root: Path, fault: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": REPO}
    env.pop("FEATSTORE_FAULT", None)
    if fault:
        env["FEATSTORE_FAULT"] = fault
    return subprocess.run(
        [sys.executable, "-m", "featstore.cli", "verify", str(root), "--repair"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


@pytest.mark.parametrize("fault", ["withdraw_unit.after_status@3", "withdraw_unit.after_drop@1"])
def test_repair_killed_midway_then_rerun_finishes(clean, tmp_path, fault):
    root = tmp_path / "s.zarr"
    store = fill(root)
    tokens = store.feature("tokens").spec.key
    corrupt(store, "pooled", 1, "status", "garbage")
    corrupt(store, "tokens", 1, "data", "garbage")
    corrupt(store, "tokens", 3, "media_hash", "truncate")
    res = run_repair(root, fault)
    assert res.returncode == -signal.SIGKILL, res.stdout + res.stderr
    # Killed mid-repair (pooled first, then tokens 1, then tokens 3): what was withdrawn
    # reads as pending, what was not is still found, and verify itself still runs.
    half = FeatureStore.open(root)
    assert half.feature("pooled").pending_units() == [1]
    report = verify_store(half)
    assert {(b.spec, b.unit) for b in report.bad_units} == {(tokens, 3)}, report.problems
    with pytest.raises(
        CorruptChunkError, match=rf"spec {tokens} unit 3: media_hash chunk .*featstore verify {root} --repair"
    ):
        half.feature("tokens").status()
    res = run_repair(root)
    assert res.returncode == 0, res.stdout + res.stderr
    withdrew = [line.split(" (")[0] for line in res.stdout.splitlines() if line.startswith("withdrew")]
    assert withdrew == [f"withdrew spec {tokens} unit 3"], res.stdout
    store = FeatureStore.open(root, "r+")
    assert verify_store(store).ok
    assert {n: store.feature(n).pending_units() for n in w.UNITS} == {"pooled": [1], "tokens": [1, 3]}
    assert recompute(store) == {"pooled": 1, "tokens": 2}
    store.cleanup_partials()
    assert tree(root) == clean


def memory_tree(url: str) -> dict[str, bytes]:
    fs = fsspec.filesystem("memory")
    root = url.removeprefix("memory://")
    return {p: fs.cat_file(p) for p in sorted(fs.find(root))}


def test_repair_on_a_memory_url():
    url = f"memory://repair-{uuid.uuid4().hex}.zarr"
    clean_url = f"memory://clean-{uuid.uuid4().hex}.zarr"
    fill(clean_url)
    store = fill(url)
    corrupt(store, "tokens", 2, "data", "truncate")
    corrupt(store, "pooled", 1, "media_hash", "garbage")
    before = memory_tree(url)
    assert not verify_store(FeatureStore.open(url)).ok
    assert memory_tree(url) == before
    done = repair_store(FeatureStore.open(url, "r+"))
    assert sorted((d.bad.spec.split("-")[0], d.bad.unit, d.dropped) for d in done) == [
        ("pooled", 1, ("media_hash",)),
        ("tokens", 2, ("data",)),
    ]
    store = FeatureStore.open(url, "r+")
    assert verify_store(store).ok
    assert recompute(store) == {"pooled": 1, "tokens": 1}
    strip = len(url.removeprefix("memory://")), len(clean_url.removeprefix("memory://"))
    assert {k[strip[0] :]: v for k, v in memory_tree(url).items()} == {
        k[strip[1] :]: v for k, v in memory_tree(clean_url).items()
    }
