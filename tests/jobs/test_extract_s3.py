"""jobs/extract.py with its store and shards on S3 (moto's server, tests/s3.py): the Ray
workers reach the endpoint through the standard AWS environment variables they inherit;
the store holds the bytes of the clean local run; a job SIGKILLed after it committed
units is resumed to that same store."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from featstore.errors import StoreError
from featstore.shards import ShardDataset
from featstore.store import FeatureStore
from tests.featstore.store.test_exactly_once import tree
from tests.jobs.conftest import ARGS, JOB, run_job

pytestmark = pytest.mark.slow
UNITS = 4  # 7 samples, 2 a unit (tests/jobs/conftest.py)


def test_job_writes_its_store_and_shards_to_s3(mixed_dataset, reference, s3, tmp_path):
    url, shards = s3.url("store.zarr"), s3.url("shards")
    proc, summary = run_job(mixed_dataset, tmp_path, "--store", url, "--export-wds", shards)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert summary["store"] == url and summary["units_run"] == UNITS
    assert not (tmp_path / "store.zarr").exists()  # nothing went to the local default
    assert s3.tree("store.zarr") == tree(reference[0])  # every object, byte for byte
    both = min(summary["specs"][s]["committed"] for s in ("local", "audio"))
    assert summary["shards"] == {"out": shards, "samples": both}
    assert sorted(s["sample_id"] for s in ShardDataset(shards)) == sorted(
        s["sample_id"] for s in ShardDataset(str(_local_shards(reference[0], tmp_path)))
    )


def _local_shards(store_path, tmp_path):
    from featstore.shards.export import export_wds

    out = tmp_path / "local-shards"
    export_wds(FeatureStore.open(store_path), str(out))
    return out


def pending_units(url: str) -> list[int]:
    """Units with any spec still pending, read through a filesystem instance of its own."""
    try:
        feats = FeatureStore.open(url, storage_options={"skip_instance_cache": True}).features()
    except StoreError:
        return list(range(UNITS))
    return sorted(set().union(*(f.pending_units() for f in feats))) if len(feats) == 2 else list(range(UNITS))


def test_job_killed_after_commits_resumes_to_the_clean_store(mixed_dataset, reference, s3, tmp_path):
    url = s3.url("store.zarr")
    marker = tmp_path / "fired"
    cmd = [sys.executable, str(JOB), "--dataset", str(mixed_dataset), "--store", url, "--work-dir", str(tmp_path)]
    env = {**os.environ, "FEATSTORE_FAULT": "sink.before@2:hang", "FEATSTORE_FAULT_MARKER": str(marker)}
    proc = subprocess.Popen(
        [*cmd, *ARGS], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    deadline = time.time() + 300
    while not marker.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.5)
    assert marker.exists(), "the job never reached unit 2's write"
    while len(pending_units(url)) == UNITS and time.time() < deadline:  # wait for a committed unit
        time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and the local Ray it started
    proc.wait()
    pending = pending_units(url)
    assert 2 in pending and len(pending) < UNITS, pending
    again, summary = run_job(mixed_dataset, tmp_path, "--store", url)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert summary["units_run"] == len(pending)  # only the remaining work
    assert s3.tree("store.zarr") == tree(reference[0])


def test_job_names_a_missing_bucket_before_starting_ray(mixed_dataset, s3, tmp_path):
    for extra in (("--store", f"s3://{s3.bucket}-missing/store.zarr"), ("--export-wds", f"s3://{s3.bucket}-gone/sh")):
        proc, summary = run_job(mixed_dataset, tmp_path, *extra)
        assert proc.returncode == 2 and summary is None, proc.stdout[-2000:] + proc.stderr[-2000:]
        said = proc.stdout + proc.stderr
        assert f"extract: {extra[1]}: no such bucket '{extra[1][5:].split('/')[0]}'" in said, said[-2000:]
        assert "Traceback" not in said and "Ray" not in said, said[-2000:]
    assert not (tmp_path / "store.zarr").exists()  # nothing written anywhere
