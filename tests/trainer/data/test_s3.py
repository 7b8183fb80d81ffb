"""The trainer reading its feature cache from S3 (moto's server, tests/s3.py): a tiny
training run streaming shards from s3://, and the Zarr store read from s3:// giving the
samples of the local one."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from trainer.data.cache import open_cache

REPO = Path(__file__).resolve().parents[3]
JOB = str(REPO / "jobs" / "train.py")


def test_tiny_run_streams_shards_from_s3(cache, tiny_llm, s3, tmp_path):
    store, shards, ids = cache
    s3.fs().put(str(shards), f"{s3.bucket}/shards", recursive=True)
    out = tmp_path / "run"
    done = subprocess.run(
        [
            sys.executable,
            JOB,
            "--config",
            str(REPO / "configs" / "demo.yaml"),
            "--cache",
            "shards",
            "--shards",
            s3.url("shards"),
            *[f"--expect={slot}={i}" for slot, i in ids.items()],
            "--tiny-dir",
            str(tiny_llm),
            "--out-dir",
            str(out),
            "--max-steps",
            "2",
            "--checkpoint-every",
            "0",
        ],
        env={**os.environ, "PYTHONWARNINGS": "ignore"},  # the AWS variables of the `s3` fixture
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert f"checkpoint: {out}/checkpoints/step-00000002" in done.stdout
    assert len((out / "losses.jsonl").read_text().splitlines()) == 2


def test_zarr_cache_on_s3_reads_the_local_samples(cache, s3):
    store, _, ids = cache
    s3.fs().put(str(store), f"{s3.bucket}/store.zarr", recursive=True)
    remote, info = open_cache("zarr", s3.url("store.zarr"), ids)
    local, local_info = open_cache("zarr", str(store), ids)
    assert info.spec_ids == local_info.spec_ids == ids and info.num_samples == local_info.num_samples
    for i in range(len(local)):
        a, b = remote[i], local[i]
        assert a["sample_id"] == b["sample_id"] and a["meta"] == b["meta"]
        assert all(np.array_equal(a[slot], b[slot]) for slot in ids)
