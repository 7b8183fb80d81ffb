"""jobs/extract.py on a real local Ray: bad clips recorded, re-runs resume, and crashed
actors, decode workers and drivers never lose or duplicate a sample (bitwise-equal stores)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from featstore.store import FeatureStore
from tests.featstore.store.test_exactly_once import tree
from tests.jobs.conftest import ARGS, GOOD, JOB, run_job

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
    assert set(fails) == {("local", "bad_text"), ("audio", "bad_text"), ("local", "bad_trunc"),
                          ("audio", "bad_trunc"), ("audio", "silent")}
    assert fails[("audio", "silent")]["stage"] == "decode_audio"
    assert fails[("audio", "silent")]["reason"].startswith("no_audio_stream")
    assert fails[("local", "bad_text")]["reason"].startswith("unreadable")
    assert store.attrs["extract_config"]["encoders"] == "local,audio"


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
    proc, summary = run_job(mixed_dataset, tmp_path, env={"FEATSTORE_FAULT": fault,
                                                          "FEATSTORE_FAULT_MARKER": str(marker)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert marker.exists(), "the fault never fired"
    assert tree(tmp_path / "store.zarr") == tree(reference[0])


def test_driver_killed_then_resubmitted(mixed_dataset, reference, tmp_path):
    marker = tmp_path / "fired"
    cmd = [sys.executable, str(JOB), "--dataset", str(mixed_dataset), "--store", str(tmp_path / "store.zarr"),
           "--work-dir", str(tmp_path), *ARGS]
    env = {**os.environ, "FEATSTORE_FAULT": "sink.before@2:hang", "FEATSTORE_FAULT_MARKER": str(marker)}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.time() + 300
    while not marker.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.5)
    assert marker.exists(), "the job never reached unit 2's write"
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and the local Ray it started
    proc.wait()
    pending = FeatureStore.open(tmp_path / "store.zarr").feature("audio").pending_units()
    assert 2 in pending and len(pending) < UNITS + 1
    again, summary = run_job(mixed_dataset, tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert summary["units_run"] == len(pending)  # only the remaining work
    assert tree(tmp_path / "store.zarr") == tree(reference[0])
