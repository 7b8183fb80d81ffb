"""Exactly once, proven: serial, concurrent random-order and killed-then-resumed
writers all give a bitwise-identical store (real processes, real files)."""

from __future__ import annotations

import hashlib
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from featstore.store import FeatureStore, store_files
from tests.featstore.store import store_worker as w

WORKER = str(Path(w.__file__))
N = 50  # 7 pooled units (last one partial), 13 token units
KILLS = 6  # random kills before the resume; each must land after a commit and before the end


def tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in store_files(root)}


def run_worker(store: Path, *jobs: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, WORKER, str(store), *jobs],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=120,
    )


def all_units(store: FeatureStore, name: str) -> list[int]:
    return list(range(store.feature(name).num_units))


@pytest.fixture(scope="module")
def serial_tree(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("serial") / "store.zarr"
    store = w.make_store(root, N)
    for name in w.UNITS:
        w.write_units(store, name, all_units(store, name))
    for feat in store.features():
        assert feat.counts()["pending"] == 0
    return tree(root)


def test_serial_store_contents(serial_tree, tmp_path):
    root = tmp_path / "s.zarr"
    store = w.make_store(root, N)
    for name in w.UNITS:
        w.write_units(store, name, all_units(store, name))
    pooled = store.feature("pooled")
    assert pooled.counts() == {"committed": N - 1, "failed": 1, "pending": 0}
    assert pooled.failures()[0]["sample_id"] == "clip_0007"
    ids = store.sample_ids[:3]
    np.testing.assert_array_equal(
        np.stack([store.feature("tokens").read_id(s) for s in ids]), w.features(store.feature("tokens").spec, ids)
    )
    assert tree(root) == serial_tree


def test_concurrent_random_order_with_duplicates(serial_tree, tmp_path):
    root = tmp_path / "c.zarr"
    store = w.make_store(root, N)
    rng = random.Random(7)
    shuffled = {name: rng.sample(all_units(store, name), store.feature(name).num_units) for name in w.UNITS}
    jobs = []
    for k in range(3):
        args = []
        for name, units in shuffled.items():
            # Every unit in one worker, plus a third of them again in another (a "retry").
            mine = units[k::3] + rng.sample(units, len(units) // 3)
            rng.shuffle(mine)
            args.append(f"{name}:{','.join(map(str, mine))}")
        jobs.append(subprocess.Popen([sys.executable, WORKER, str(root), *args], stdout=subprocess.PIPE, text=True))
    for p in jobs:
        assert p.wait(timeout=120) == 0
    assert tree(root) == serial_tree


def test_sigkill_mid_unit_then_resume(serial_tree, tmp_path):
    root = tmp_path / "k.zarr"
    store = w.make_store(root, N)
    order = all_units(store, "tokens")
    res = run_worker(root, "tokens:" + ",".join(map(str, order)), env={"FEATSTORE_FAULT": "write_unit.after_data@5"})
    assert res.returncode == -signal.SIGKILL
    reopened = FeatureStore.open(root, "r+")
    tokens = reopened.feature("tokens")
    # Units 0-4 committed; unit 5 has its data chunk but no commit, so it is pending.
    assert tokens.pending_units() == list(range(5, tokens.num_units))
    assert (root / "specs" / tokens.spec.key / "data" / "c" / "5" / "0" / "0").exists()
    res = run_worker(root, "tokens:pending", "pooled:pending")
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == [
        "tokens",
        str(tokens.num_units - 5),
        "pooled",
        str(reopened.feature("pooled").num_units),
    ]
    reopened.cleanup_partials()
    assert tree(root) == serial_tree


def committed_units(root: Path) -> int:
    """Units of all specs with nothing left pending."""
    return sum(f.num_units - len(f.pending_units()) for f in FeatureStore.open(root).features())


def test_sigkill_at_random_times_then_resume(serial_tree, tmp_path):
    root = tmp_path / "r.zarr"
    store = w.make_store(root, N)
    total = sum(f.num_units for f in store.features())
    rng = random.Random(3)
    done = [0]
    for attempt in range(KILLS):
        p = subprocess.Popen(
            [sys.executable, WORKER, str(root), "tokens:pending", "pooled:pending", "--progress"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        # Evidence of progress first (imports take seconds), then a kill at a random
        # point of the next units' writes (a unit takes ~12 ms here): mid-unit or between.
        # ("NAME COUNT" lines end a spec; a spec already finished prints "NAME 0" first.)
        first = p.stdout.readline()
        while first and not first.startswith("committed"):
            first = p.stdout.readline()
        assert first.startswith("committed"), f"attempt {attempt}: the writer committed nothing"
        time.sleep(rng.uniform(0, 0.015))
        p.send_signal(signal.SIGKILL)
        p.wait()
        p.stdout.close()
        assert p.returncode == -signal.SIGKILL, f"attempt {attempt}: the writer finished before the kill"
        done.append(committed_units(root))
        assert done[-1] > done[-2], f"attempt {attempt}: no unit committed between kills: {done}"
    assert done[-1] < total, f"every unit was committed before the last kill: {done}"
    res = run_worker(root, "tokens:pending", "pooled:pending")
    assert res.returncode == 0, res.stderr
    FeatureStore.open(root, "r+").cleanup_partials()
    assert tree(root) == serial_tree
