"""Samples whose media is missing, outside the dataset root or unreadable are in the store:
failed at stage ``manifest`` with a reason naming the path, listed by ``featstore failures``,
counted by ``info``, excluded with the reason by ``export-wds``, skipped by the readers; once
the files are in place a re-run computes exactly those samples and leaves every other byte as it was.

The features here are roundtrip's thumbnails (real decoding, no encoder); tests/jobs/test_extract.py
runs the same dataset through the Ray job.
"""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from featstore import ShardDataset, ZarrDataset
from featstore.cli import main as cli_main
from featstore.demo import roundtrip
from featstore.demo.dataset import make_demo_dataset
from featstore.manifest import load_manifest
from featstore.manifest.hashing import hash_media, is_problem_hash
from featstore.store import FeatureStore
from featstore.store.array import UNIT_ARRAYS
from featstore.store.layout import FAILED, OK

GOOD = ("demo_0000", "demo_0001", "demo_0002", "demo_0003", "demo_0004")
PROBLEMS = ("missing", "escape", "unreadable")
# With 2-sample units: [demo_0000, missing] [demo_0001, escape] [demo_0002, unreadable]
# [demo_0003, demo_0004]: each problem shares its unit with a good clip; the last unit has none.
ORDER = ("demo_0000", "missing", "demo_0001", "escape", "demo_0002", "unreadable", "demo_0003", "demo_0004")
PROBLEM_UNITS = {0, 1, 2}
REASONS = {
    "missing": "missing video file clips/missing.mp4",
    "escape": "unsafe video path: media path '../outside/escape.mp4' escapes the dataset root through '..'",
    "unreadable": "video path clips/unreadable.mp4 is not a regular file",
}


def problem_dataset(base: Path) -> Path:
    """Demo clips plus three rows whose media cannot be used: a clip that is not there (its
    bytes wait in ``base/spare``), a path out of the root (a real clip lies there), and a
    folder where the clip should be. Returns the dataset root ``base/data``."""
    root = make_demo_dataset(base / "data", n=8, seconds=1.0)
    clips = root / "clips"
    (base / "spare").mkdir()
    (base / "outside").mkdir()
    shutil.move(clips / "demo_0005.mp4", base / "spare" / "missing.mp4")
    shutil.move(clips / "demo_0006.mp4", base / "outside" / "escape.mp4")
    shutil.move(clips / "demo_0007.mp4", base / "spare" / "unreadable.mp4")
    (clips / "unreadable.mp4").mkdir()
    with open(root / "manifest.csv", newline="", encoding="utf-8") as f:
        header, *rows = list(csv.reader(f))
    by_id = {r[0]: r for r in rows}
    by_id["missing"] = ["missing", "clips/missing.mp4", "", "words", "neutral"]
    by_id["escape"] = ["escape", "../outside/escape.mp4", "", "words", "sad"]
    by_id["unreadable"] = ["unreadable", "clips/unreadable.mp4", "", "words", "happy"]
    write_manifest(root, header, [by_id[sid] for sid in ORDER])
    return root


def fix_problems(root: Path) -> None:
    """Put every problem row's media in place: the missing clip appears, the folder becomes
    a clip, and the escaping row is corrected to a clip inside the root."""
    base = root.parent
    clips = root / "clips"
    shutil.copy(base / "spare" / "missing.mp4", clips / "missing.mp4")
    (clips / "unreadable.mp4").rmdir()
    shutil.copy(base / "spare" / "unreadable.mp4", clips / "unreadable.mp4")
    shutil.copy(base / "outside" / "escape.mp4", clips / "escape.mp4")
    with open(root / "manifest.csv", newline="", encoding="utf-8") as f:
        header, *rows = list(csv.reader(f))
    rows = [[r[0], "clips/escape.mp4", *r[2:]] if r[0] == "escape" else r for r in rows]
    write_manifest(root, header, rows)


def write_manifest(root: Path, header: list[str], rows: list[list[str]]) -> None:
    with open(root / "manifest.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(header)
        w.writerows(rows)


def unit_chunks(store_path: Path, unit: int) -> dict[str, str]:
    """sha256 of every chunk file of ``unit`` in every spec (``specs/KEY/ARRAY/c/UNIT[/0...]``)."""
    out = {}
    for spec in sorted(p for p in (store_path / "specs").iterdir() if p.is_dir()):
        for name in UNIT_ARRAYS:
            chunk = spec / name / "c" / str(unit)
            files = [chunk] if chunk.is_file() else sorted(p for p in chunk.rglob("*") if p.is_file())
            assert files, f"no chunk for unit {unit} in {spec.name}/{name}"
            out.update({str(p.relative_to(store_path)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files})
    return out


def run_roundtrip(root: Path, store_path: Path) -> tuple[FeatureStore, int]:
    """The store side of one run: manifest in, every pending thumbnail unit written."""
    store = FeatureStore.open_or_create(store_path)
    manifest = load_manifest(root, "csv")
    store.add_manifest(manifest)
    store.add_spec(roundtrip.THUMB_SPEC, unit_size=2)
    return store, roundtrip.fill(store, manifest)


@pytest.fixture()
def first_run(tmp_path):
    root = problem_dataset(tmp_path)
    store, written = run_roundtrip(root, tmp_path / "store.zarr")
    assert written == 4
    return root, tmp_path / "store.zarr"


def cli_json(capsys, *argv) -> object:
    assert cli_main(list(argv)) == 0
    return json.loads(capsys.readouterr().out)


def test_every_problem_row_is_a_failure_with_its_reason(first_run, capsys, tmp_path):
    root, store_path = first_run
    store = FeatureStore.open(store_path)
    assert store.sample_ids == list(ORDER)
    assert all(is_problem_hash(store.media_hash(sid)) for sid in PROBLEMS)
    assert not any(is_problem_hash(store.media_hash(sid)) for sid in GOOD)
    rows = cli_json(capsys, "failures", str(store_path), "--json")
    assert {r["sample_id"]: (r["spec"], r["stage"], r["reason"]) for r in rows} == {
        sid: ("thumb", "manifest", REASONS[sid]) for sid in PROBLEMS
    }
    info = cli_json(capsys, "info", str(store_path), "--json")
    assert info["samples"] == 8
    assert {k: info["specs"][0][k] for k in ("committed", "failed", "pending")} == {
        "committed": 5,
        "failed": 3,
        "pending": 0,
    }
    assert cli_main(["export-wds", str(store_path), str(tmp_path / "shards")]) == 0
    assert "left out escape: thumb: failed at manifest: unsafe video path" in capsys.readouterr().out
    index = json.loads((tmp_path / "shards" / "shards.json").read_text())
    assert {e["sample_id"]: e["reason"] for e in index["excluded"]} == {
        sid: f"thumb: failed at manifest: {REASONS[sid]}" for sid in PROBLEMS
    }
    # What the trainer reads: only the good clips, from the store and from the shards.
    zarr_ids = [ZarrDataset(str(store_path))[i]["sample_id"] for i in range(len(ZarrDataset(str(store_path))))]
    assert zarr_ids == list(GOOD)
    assert sorted(s["sample_id"] for s in ShardDataset(str(tmp_path / "shards"))) == list(GOOD)
    # A re-run with nothing changed writes nothing.
    assert run_roundtrip(root, store_path)[1] == 0


def test_files_in_place_rerun_computes_exactly_those_samples(first_run):
    root, store_path = first_run
    before = FeatureStore.open(store_path)
    kept_unit = unit_chunks(store_path, 3)
    good_rows = {sid: before.feature("thumb").read_id(sid).tobytes() for sid in GOOD}
    fix_problems(root)
    store, written = run_roundtrip(root, store_path)
    assert written == len(PROBLEM_UNITS)  # no --retry-failed: the media hashes changed
    feat = store.feature("thumb")
    assert feat.counts() == {"committed": 8, "failed": 0, "pending": 0} and feat.failures() == []
    for sid in PROBLEMS:
        assert store.media_hash(sid) == hash_media(root, f"clips/{sid}.mp4", None)
        want = roundtrip.thumbnail(root / "clips" / f"{sid}.mp4")
        assert feat.read_id(sid).tobytes() == want.tobytes(), sid
        assert "error" not in store.annotation(sid)
    assert {sid: feat.read_id(sid).tobytes() for sid in GOOD} == good_rows
    assert unit_chunks(store_path, 3) == kept_unit  # the unit without problems was not touched
    assert run_roundtrip(root, store_path)[1] == 0


def test_committed_sample_whose_media_goes_missing_keeps_its_features(first_run):
    """Features computed from a clip's bytes stay when the clip is later deleted (nothing to
    recompute them from); the sample is recomputed as usual once a file is back."""
    root, store_path = first_run
    store = FeatureStore.open(store_path)
    kept = store.feature("thumb").read_id("demo_0003").tobytes()
    chunks = unit_chunks(store_path, 3)
    clip = root / "clips" / "demo_0003.mp4"
    saved = clip.read_bytes()
    clip.unlink()
    store, written = run_roundtrip(root, store_path)
    assert written == 0 and unit_chunks(store_path, 3) == chunks
    assert store.feature("thumb").read_id("demo_0003").tobytes() == kept
    assert store.annotation("demo_0003")["error"] == "missing video file clips/demo_0003.mp4"
    clip.write_bytes(saved)
    store, written = run_roundtrip(root, store_path)
    assert written == 0 and "error" not in store.annotation("demo_0003")


def test_problem_sample_status_is_per_unit_and_exact(first_run):
    """The unit arrays of a mixed unit: the good clip ok with its data, the problem row failed with zeros."""
    _, store_path = first_run
    feat = FeatureStore.open(store_path).feature("thumb")
    data, status = feat.read_unit(0)
    assert status.tolist() == [OK, FAILED]
    assert np.any(data[0] != 0) and not np.any(data[1])


def test_kept_sample_failed_by_a_unit_rewrite_is_planned_again_when_its_clip_is_back(first_run):
    """demo_0003 keeps its features when its clip is deleted; then its neighbour's clip
    changes, so unit 3 is rewritten and demo_0003 fails at stage manifest under its old
    (content) media hash. When the same bytes come back nothing changes the hash, so the
    extraction job's planner must still run unit 3 again for that failure."""
    from featstore.extract.plan import MEDIA_BACK, check_plan_matches_store, plan_extraction, unit_works

    root, store_path = first_run
    clip = root / "clips" / "demo_0003.mp4"
    saved = clip.read_bytes()
    clip.unlink()
    shutil.copy(root / "clips" / "demo_0000.mp4", root / "clips" / "demo_0004.mp4")
    store, written = run_roundtrip(root, store_path)
    key = store.feature("thumb").spec.key
    assert written == 1 and [r["sample_id"] for r in store.feature("thumb").failures()] == [
        *PROBLEMS[:1],
        *PROBLEMS[1:],
        "demo_0003",
    ]
    assert [w.unit for w in unit_works(store, {"thumb": key}, retry_failed=False)] == []
    clip.write_bytes(saved)
    # The job's planner (before the manifest goes in) says the same, with the reason.
    manifest = load_manifest(root, "csv")
    plan = plan_extraction(FeatureStore.open(store_path), {"thumb": store.feature("thumb").spec}, manifest)
    sp = plan.specs["thumb"]
    assert (sp.units, sp.todo, sp.media_back_units) == ([3], {MEDIA_BACK: 1}, [3])
    store.add_manifest(manifest)
    check_plan_matches_store(plan, FeatureStore.open(store_path), {"thumb": key})
    works = unit_works(FeatureStore.open(store_path, "r+"), {"thumb": key}, retry_failed=False)
    assert [(w.unit, w.slots, w.ids) for w in works] == [(3, ["thumb"], ["demo_0003", "demo_0004"])]
    assert all("error" not in s for s in works[0].samples)


def test_saved_manifest_without_problem_hashes_still_goes_in(tmp_path):
    """A manifest saved before problem samples had media hashes: the error makes one."""
    from featstore.manifest import Manifest, Sample

    old = Manifest(tmp_path, "csv", (Sample("gone", "clips/gone.mp4", error="missing video file clips/gone.mp4"),))
    store = FeatureStore.create(tmp_path / "store.zarr")
    assert store.add_manifest(old) == {"added": 1, "changed": 0, "unchanged": 0}
    assert is_problem_hash(store.media_hash("gone")) and store.annotation("gone")["error"].startswith("missing")
