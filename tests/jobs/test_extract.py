"""jobs/extract.py on a real local Ray: bad clips recorded, stored features equal to the
encoders called directly, re-runs resume, crashed actors, decode workers, sinks and
drivers never lose or duplicate a sample, and the batch size changes no byte."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from featstore.errors import StoreError
from featstore.store import FeatureStore
from featstore.store.array import UNIT_ARRAYS
from tests.featstore.store.test_exactly_once import tree
from tests.jobs.conftest import ARGS, BAD, GOOD, JOB, run_job

pytestmark = pytest.mark.slow
N = GOOD + 3
UNITS = 4  # 7 samples, 2 a unit


def test_bad_clips_recorded_per_modality(reference):
    store_path, summary, _ = reference
    assert summary["samples"] == N and summary["units_run"] == UNITS
    assert summary["specs"]["local"]["committed"] == GOOD + 1  # the silent clip still has faces
    assert summary["specs"]["audio"]["committed"] == GOOD
    store = FeatureStore.open(store_path)
    fails = {(f.spec.name, r["sample_id"]): r for f in store.features() for r in f.failures()}
    assert set(fails) == {
        ("local", "bad_text"),
        ("audio", "bad_text"),
        ("local", "bad_trunc"),
        ("audio", "bad_trunc"),
        ("audio", "silent"),
    }
    assert fails[("audio", "silent")]["stage"] == "decode_audio"
    assert fails[("audio", "silent")]["reason"].startswith("no_audio_stream")
    assert fails[("local", "bad_text")]["reason"].startswith("unreadable")
    assert store.attrs["extract_config"]["encoders"] == "local,audio"
    # Store order is manifest order: every full unit mixes a good and a bad clip.
    units = [store.sample_ids[i : i + 2] for i in range(0, N, 2)]
    assert all(len(set(u) & set(BAD)) == 1 for u in units[:-1]) and not set(units[-1]) & set(BAD), units


def test_stored_features_equal_the_encoder_called_directly(reference, mixed_dataset):
    """An independent reference: each clip decoded and encoded alone, outside Ray,
    compared byte for byte with its stored row (a misaligned row fails)."""
    from featstore.encoders import load_encoders
    from featstore.encoders.presets import build_tiny_checkpoints
    from featstore.extract.encode import TINY_DIR
    from featstore.manifest import load_manifest
    from featstore.media.clip import DecodeConfig, collate, decode_clip

    store = FeatureStore.open(reference[0])
    feats = {f.spec.name: f for f in store.features()}
    cfg = DecodeConfig(local_frames=2)  # the job's --local-frames 2
    build_tiny_checkpoints(TINY_DIR)  # kept as is when the job built them
    options = {s: {"upstream": cfg.upstream(s), **({} if s == "audio" else {"clips_per_forward": 1})} for s in feats}
    encoders = load_encoders("tiny", list(feats), device="cpu", tiny_dir=TINY_DIR, options=options)
    assert {s: e.spec.id for s, e in encoders.items()} == {s: f.spec.id for s, f in feats.items()}
    samples = {s.sample_id: s for s in load_manifest(mixed_dataset, "csv")}
    checked = 0
    for sid in store.sample_ids:
        clip = decode_clip(samples[sid], mixed_dataset, list(feats), cfg)
        for slot, feat in feats.items():
            if slot in clip.failures:
                with pytest.raises(KeyError, match="failed"):
                    feat.read_id(sid)
                continue
            want = encoders[slot](collate([clip], slot)[1])[slot][0].astype(feat.spec.dtype)
            got = feat.read_id(sid)
            assert got.dtype == want.dtype and got.tobytes() == want.tobytes(), f"{slot} {sid}"
            checked += 1
    assert checked == 2 * GOOD + 1


def test_rerun_does_nothing(mixed_dataset, reference, tmp_path):
    store_path, _, _ = reference
    before = tree(store_path)
    proc, summary = run_job(mixed_dataset, store_path.parent)
    assert proc.returncode == 0 and summary["units_run"] == 0
    assert tree(store_path) == before


def test_strict_fails_on_bad_clips(reference, mixed_dataset):
    proc, summary = run_job(mixed_dataset, reference[0].parent, "--strict")
    assert proc.returncode == 1 and "--strict" in proc.stderr and summary["units_run"] == 0


@pytest.mark.parametrize("fault", ["encode.audio@1", "decode@2", "sink@3"])
def test_crashed_worker_is_retried_without_loss(mixed_dataset, reference, tmp_path, fault):
    marker = tmp_path / "fired"
    proc, summary = run_job(
        mixed_dataset, tmp_path, env={"FEATSTORE_FAULT": fault, "FEATSTORE_FAULT_MARKER": str(marker)}
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert marker.exists(), "the fault never fired"
    assert tree(tmp_path / "store.zarr") == tree(reference[0])


def test_sink_killed_between_data_and_commit(mixed_dataset, reference, tmp_path):
    """The write of unit 1 ([demo_0001, silent]) dies after the local spec's data
    chunk and before its commit; the retried write must redo it, not skip it."""
    marker = tmp_path / "fired"
    proc, summary = run_job(
        mixed_dataset,
        tmp_path,
        env={"FEATSTORE_FAULT": "write_unit.after_data@1", "FEATSTORE_FAULT_MARKER": str(marker)},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert marker.exists(), "the fault never fired"
    killed = int(marker.read_text())
    # Unit 1's write that succeeded came from a process other than the killed one: it was redone.
    assert summary["units_run"] == UNITS and summary["unit_writers"]["1"] != killed, (killed, summary["unit_writers"])
    assert all(c["pending"] == 0 for c in summary["specs"].values()), summary["specs"]
    assert tree(tmp_path / "store.zarr") == tree(reference[0])


def test_driver_killed_then_resubmitted(mixed_dataset, reference, tmp_path):
    marker = tmp_path / "fired"
    cmd = [
        sys.executable,
        str(JOB),
        "--dataset",
        str(mixed_dataset),
        "--store",
        str(tmp_path / "store.zarr"),
        "--work-dir",
        str(tmp_path),
        *ARGS,
    ]
    env = {**os.environ, "FEATSTORE_FAULT": "sink.before@2:hang", "FEATSTORE_FAULT_MARKER": str(marker)}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 300
    while not marker.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.5)
    assert marker.exists(), "the job never reached unit 2's write"
    while len(pending_units(tmp_path)) == UNITS and time.time() < deadline:  # evidence of progress
        time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and the local Ray it started
    proc.wait()
    pending = pending_units(tmp_path)
    assert 2 in pending and len(pending) < UNITS, pending
    again, summary = run_job(mixed_dataset, tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    # Only the remaining work: at least one unit, strictly fewer than a fresh run's.
    assert 1 <= summary["units_run"] < reference[1]["units_run"] == UNITS
    assert summary["units_run"] == len(pending)
    assert tree(tmp_path / "store.zarr") == tree(reference[0])


def test_units_commit_as_they_finish(mixed_dataset, tmp_path):
    """The last unit's decode hangs: every other unit must reach the store while it
    hangs, each committed when it is done, not in a burst when the whole run ends."""
    marker = tmp_path / "fired"
    last = UNITS - 1
    env = {**os.environ, "FEATSTORE_FAULT": f"decode@{last}:hang", "FEATSTORE_FAULT_MARKER": str(marker)}
    proc = subprocess.Popen(
        job_cmd(mixed_dataset, tmp_path),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.time() + 300  # not a timing assert: only how long to wait for the commits
        while time.time() < deadline and proc.poll() is None and pending_units(tmp_path) != [last]:
            time.sleep(0.5)
        pending = pending_units(tmp_path)
        still_running = proc.poll() is None
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and the local Ray it started
        proc.wait()
    assert marker.exists(), "the last unit's decode never started"
    assert still_running, "the job ended although one unit's decode hangs"
    assert pending == [last], f"units pending while unit {last} hangs: {pending} (only [{last}] may be)"


def job_cmd(dataset, out) -> list[str]:
    """jobs/extract.py on ``dataset`` into ``out``/store.zarr, as run_job runs it (no summary)."""
    return [
        sys.executable,
        str(JOB),
        "--dataset",
        str(dataset),
        "--store",
        str(out / "store.zarr"),
        "--work-dir",
        str(out),
        *ARGS,
    ]


def pending_units(out) -> list[int]:
    """Units with any spec still pending (none committed yet: every unit)."""
    path = out / "store.zarr"
    if not (path / "specs").exists():
        return list(range(UNITS))
    try:
        feats = FeatureStore.open(path).features()
    except (KeyError, FileNotFoundError, StoreError):  # the coordinator is still creating the spec groups
        return list(range(UNITS))
    return sorted(set().union(*(f.pending_units() for f in feats))) if len(feats) == 2 else list(range(UNITS))


def spec_free_tree(path) -> dict[str, str]:
    """The store's files and hashes with each spec key replaced by its slot name; the
    root and spec group metadata (extract config, spec) are left out."""
    store = FeatureStore.open(path)
    keys = {f.spec.key: f.spec.name for f in store.features()}
    out = {}
    for name, digest in tree(path).items():
        for key, slot in keys.items():
            name = name.replace(key, slot)
        if name != "zarr.json" and not re.fullmatch(r"specs/\w+/zarr\.json", name):
            out[name] = digest
    return out


def test_batch_size_3_on_mixed_frame_sizes_gives_the_same_bytes(sizes_dataset, tmp_path):
    """4-sample units of two frame sizes: --batch-size 3 runs 2- and 1-clip forwards of
    the global encoder and a 3-clip audio batch; the stored bytes equal --batch-size 1's."""
    stores = {}
    for b in (1, 3):
        out = tmp_path / f"b{b}"
        proc, summary = run_job(
            sizes_dataset, out, "--encoders", "global,audio", "--unit-size", "4", "--batch-size", str(b)
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert {s: c["committed"] for s, c in summary["specs"].items()} == {"global": 6, "audio": 6}
        stores[b] = FeatureStore.open(out / "store.zarr")
    one, three = ({f.spec.name: f for f in stores[b].features()} for b in (1, 3))
    assert three["global"].spec.preprocess["clips_per_forward"] == 3
    for slot in one:
        for name in UNIT_ARRAYS:
            a, b = one[slot].raw(name)[:], three[slot].raw(name)[:]
            assert a.dtype == b.dtype and a.tobytes() == b.tobytes(), (slot, name)
    assert spec_free_tree(tmp_path / "b1" / "store.zarr") == spec_free_tree(tmp_path / "b3" / "store.zarr")


def test_unusable_media_rows_are_failures_then_computed_once_in_place(tmp_path, capsys):
    """Rows whose clip is missing, outside the dataset root or a folder: the job records each
    as a failure (stage manifest, reason naming the path) in every spec, and --strict exits 1.
    With the files in place, a plain re-run (no --retry-failed) runs exactly the three units
    holding them, leaves the fourth unit's chunks as they were, and the store is then bitwise
    the store a clean run of the fixed dataset writes."""
    from featstore.cli import main as cli_main
    from featstore.manifest.hashing import hash_media
    from tests.featstore.store.test_media_problems import GOOD as GOOD_IDS
    from tests.featstore.store.test_media_problems import (
        PROBLEMS,
        REASONS,
        fix_problems,
        problem_dataset,
        unit_chunks,
    )

    root = problem_dataset(tmp_path / "ds")
    out = tmp_path / "run"
    store_path = out / "store.zarr"
    proc, summary = run_job(root, out, "--strict")
    assert proc.returncode == 1 and "--strict: 6 failed feature(s), 3 unusable sample(s)" in proc.stderr, proc.stderr
    assert summary["units_run"] == 4 and summary["samples"] == 8
    for slot in ("local", "audio"):
        assert {k: summary["specs"][slot][k] for k in ("committed", "failed", "pending")} == {
            "committed": 5,
            "failed": 3,
            "pending": 0,
        }
        assert f"failed: 1 x {slot}: manifest: missing video file clips/missing.mp4" in proc.stdout
    assert {p["sample_id"]: (p["reason"], p["kept"]) for p in summary["manifest_problems"]} == {
        sid: (REASONS[sid], False) for sid in PROBLEMS
    }
    assert "not in store" not in proc.stdout
    assert cli_main(["failures", str(store_path), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {(r["spec"], r["sample_id"]): (r["stage"], r["reason"]) for r in rows} == {
        (slot, sid): ("manifest", REASONS[sid]) for slot in ("local", "audio") for sid in PROBLEMS
    }
    store = FeatureStore.open(store_path)
    good = {(f.spec.name, sid): f.read_id(sid).tobytes() for f in store.features() for sid in GOOD_IDS}
    untouched = unit_chunks(store_path, 3)

    fix_problems(root)
    proc, summary = run_job(root, out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert summary["units_run"] == 3 and sorted(summary["unit_writers"]) == ["0", "1", "2"]
    assert summary["clips_run"] == 6 and summary["manifest_problems"] == []
    assert all(c["committed"] == 8 and c["failed"] == 0 for c in summary["specs"].values()), summary["specs"]
    store = FeatureStore.open(store_path)
    assert {sid: store.media_hash(sid) for sid in PROBLEMS} == {
        sid: hash_media(root, f"clips/{sid}.mp4", None) for sid in PROBLEMS
    }
    assert {(f.spec.name, sid): f.read_id(sid).tobytes() for f in store.features() for sid in GOOD_IDS} == good
    assert unit_chunks(store_path, 3) == untouched

    clean = tmp_path / "clean"
    proc, summary = run_job(root, clean)
    assert proc.returncode == 0 and summary["units_run"] == 4, proc.stderr[-3000:]
    assert tree(store_path) == tree(clean / "store.zarr")
