"""featstore gc: superseded specs and departed samples go, kept features keep their exact
bytes, and a gc killed at any step (fault point or SIGKILL from outside) is finished by
running it again, with the store verifying in between."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from featstore.cli import main as cli
from featstore.demo import roundtrip
from featstore.demo.dataset import make_demo_dataset
from featstore.manifest import load_manifest
from featstore.spec import FeatureSpec
from featstore.store import FeatureStore
from featstore.store.verify import verify_store
from tests.featstore.conftest import TOKENS, fill_tokens
from tests.featstore.store import store_worker as w

N = 10
OLD_TOKENS = FeatureSpec(name="tokens", encoder="TestEncoder", weights="w1", shape=(5, 8), dtype="float16")
LEFT = ("demo_0001", "demo_0004", "demo_0005")  # samples removed from the dataset
KEEP = "thumb," + TOKENS.key  # the old tokens spec goes


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A store with thumb (8-sample units), tokens (4, one failure) and a superseded
    tokens spec; a dataset copy whose manifest lost LEFT."""
    root = tmp_path_factory.mktemp("gc")
    data = make_demo_dataset(root / "data", n=N, seconds=1.0)
    manifest = load_manifest(data, format="csv")
    store = FeatureStore.create(root / "store.zarr")
    store.add_manifest(manifest)
    roundtrip.fill(store, manifest)
    fill_tokens(store)
    old = store.add_spec(OLD_TOKENS, unit_size=2)
    for unit in old.pending_units()[:3]:  # partly computed
        a, b = old.unit_bounds(unit)
        old.write_unit(unit, w.features(OLD_TOKENS, old.ids(a, b)))
    with open(data / "manifest.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    with open(data / "manifest.csv", "w", newline="", encoding="utf-8") as f:
        csv.writer(f, lineterminator="\n").writerows([r for r in rows if r[0] not in LEFT])
    return root / "store.zarr", data


def fingerprints(path: Path, keys=None) -> dict[tuple[str, str], str]:
    """sha256 per (spec key, sample): commit flag, input hash, failure record and data bytes."""
    store = FeatureStore.open(path)
    out = {}
    for feat in store.features():
        if keys is not None and feat.spec.key not in keys:
            continue
        status = feat.raw_status()
        hashes, stages, reasons = (feat.raw(n)[:] for n in ("media_hash", "fail_stage", "fail_reason"))
        data = feat.data_rows(0)
        for i, sid in enumerate(store.sample_ids):
            h = hashlib.sha256(bytes([status[i]]) + hashes[i].tobytes() + stages[i].tobytes() + reasons[i].tobytes())
            h.update(np.ascontiguousarray(data[i]).tobytes())
            out[(feat.spec.key, sid)] = h.hexdigest()
    return out


def tree(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def expected(base_store: Path) -> dict:
    kept = {"thumb-" + roundtrip.THUMB_SPEC.id, TOKENS.key}
    return {k: v for k, v in fingerprints(base_store, kept).items() if k[1] not in LEFT}


def gc_args(store: Path, data: Path, *extra: str) -> list[str]:
    return ["gc", str(store), "--keep", KEEP, "--dataset", str(data), "--format", "csv", *extra]


def check_after(store: Path, want: dict) -> None:
    s = FeatureStore.open(store)
    assert verify_store(s).ok
    assert sorted(f.spec.key for f in s.features()) == sorted({k for k, _ in want})
    assert s.sample_ids == [f"demo_{i:04d}" for i in range(N) if f"demo_{i:04d}" not in LEFT]
    assert fingerprints(store) == want
    assert not list(store.parent.glob(store.name + ".gc-*"))


def test_gc_removes_specs_and_departed_samples(base, tmp_path, capsys):
    src, data = base
    store = tmp_path / "store.zarr"
    shutil.copytree(src, store)
    want = expected(src)
    assert OLD_TOKENS.key in {f.spec.key for f in FeatureStore.open(store).features()}
    before = tree(store)

    capsys.readouterr()
    assert cli([*gc_args(store, data, "--dry-run"), "--json"]) == 0
    dry = json.loads(capsys.readouterr().out)
    assert tree(store) == before  # a dry run changes nothing
    assert dry["removed_specs"] == [OLD_TOKENS.key] and dry["removed_samples"] == len(LEFT)
    assert dry["bytes_freed"] > 0

    assert cli([*gc_args(store, data), "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["removed_specs"] == [OLD_TOKENS.key] and sorted(rep["removed_sample_ids"]) == sorted(LEFT)
    du = sum(len(b) for b in tree(store).values())
    assert rep["bytes_after"] == du and rep["bytes_freed"] == sum(len(b) for b in before.values()) - du > 0
    check_after(store, want)
    # Annotations moved with their samples.
    s = FeatureStore.open(store)
    assert [a["transcript"] for a in s.annotations()] == [
        a["transcript"]
        for sid, a in zip(FeatureStore.open(src).sample_ids, FeatureStore.open(src).annotations())
        if sid not in LEFT
    ]
    # Nothing left to do: a second gc removes nothing and changes no feature byte.
    assert cli([*gc_args(store, data), "--json"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["removed_specs"] == [] and again["removed_samples"] == 0
    check_after(store, want)


def test_gc_specs_only_keeps_rows_in_place(base, tmp_path):
    src, _ = base
    store = tmp_path / "store.zarr"
    shutil.copytree(src, store)
    kept = fingerprints(src, {TOKENS.key, "thumb-" + roundtrip.THUMB_SPEC.id})
    assert cli(["gc", str(store), "--keep", KEEP]) == 0
    assert fingerprints(store) == kept and verify_store(FeatureStore.open(store)).ok
    assert not (store / "specs" / OLD_TOKENS.key).exists()


def run_gc(args: list[str], fault: str | None = None, marker: Path | None = None) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FEATSTORE_FAULT")}
    if fault:
        env["FEATSTORE_FAULT"] = fault
    if marker:
        env["FEATSTORE_FAULT_MARKER"] = str(marker)
    return subprocess.Popen(
        [sys.executable, "-m", "featstore.cli", *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )


COMPACT_FAULTS = [
    "gc.after_index",
    "gc.after_copy_unit@0",
    "gc.after_copy_unit@1",
    "gc.after_complete",
    "gc.after_rename_old",
    "gc.after_switch",
    "gc.after_cleanup",
]


@pytest.mark.parametrize("fault", COMPACT_FAULTS)
def test_gc_killed_during_compaction_then_rerun(base, tmp_path, fault):
    src, data = base
    store = tmp_path / "store.zarr"
    shutil.copytree(src, store)
    want = expected(src)
    whole = fingerprints(src, {k for k, _ in want})
    proc = run_gc(gc_args(store, data), fault)
    assert proc.wait(timeout=300) == -signal.SIGKILL, proc.stderr.read().decode()[-2000:]
    if store.exists():
        # Killed: whatever state it left verifies, and every kept feature is still there,
        # either untouched (all samples) or already compacted.
        s = FeatureStore.open(store)
        assert verify_store(s).ok
        got = fingerprints(store, {k for k, _ in want})
        assert got in (whole, want)
    else:
        r = subprocess.run(
            [sys.executable, "-m", "featstore.cli", "verify", str(store)], capture_output=True, text=True
        )
        assert r.returncode == 2 and "run `featstore gc" in r.stderr
    proc = run_gc(gc_args(store, data))
    assert proc.wait(timeout=300) == 0, proc.stderr.read().decode()[-2000:]
    check_after(store, want)


@pytest.mark.parametrize("fault", ["gc.after_mark", "gc.after_delete_array", "gc.after_delete_spec"])
def test_gc_killed_while_removing_specs_then_rerun(base, tmp_path, fault):
    src, _ = base
    store = tmp_path / "store.zarr"
    shutil.copytree(src, store)
    kept = fingerprints(src, {TOKENS.key, "thumb-" + roundtrip.THUMB_SPEC.id})
    proc = run_gc(["gc", str(store), "--keep", KEEP], fault)
    assert proc.wait(timeout=300) == -signal.SIGKILL
    s = FeatureStore.open(store)
    assert verify_store(s).ok and sorted(f.spec.key for f in s.features()) == sorted({k for k, _ in kept})
    assert fingerprints(store) == kept
    proc = run_gc(["gc", str(store), "--keep", KEEP])
    assert proc.wait(timeout=300) == 0
    assert fingerprints(store) == kept and verify_store(FeatureStore.open(store)).ok
    assert not (store / "specs" / OLD_TOKENS.key).exists() and "gc_removing" not in FeatureStore.open(store).attrs


def test_gc_sigkilled_from_outside_mid_copy(base, tmp_path):
    src, data = base
    store = tmp_path / "store.zarr"
    shutil.copytree(src, store)
    want = expected(src)
    marker = tmp_path / "fired"
    proc = run_gc(gc_args(store, data), "gc.after_copy_unit@1:hang", marker)
    deadline = time.monotonic() + 300
    while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert marker.exists(), proc.stderr.read().decode()[-2000:]
    proc.kill()  # SIGKILL
    assert proc.wait(timeout=60) == -signal.SIGKILL
    assert (tmp_path / "store.zarr.gc-new").exists() and verify_store(FeatureStore.open(store)).ok
    proc = run_gc(gc_args(store, data))
    assert proc.wait(timeout=300) == 0, proc.stderr.read().decode()[-2000:]
    check_after(store, want)
