"""jobs/train.py as a user runs it: trains and says where the checkpoint and logs went; a missing
demo store gets the command that makes it; a stale cache is refused naming both ids."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
JOB = str(REPO / "jobs" / "train.py")
ENV = {**os.environ, "PYTHONWARNINGS": "ignore"}


def test_job_trains_from_the_store_and_reports(cache, tiny_llm, tmp_path):
    store, shards, _ = cache
    out = tmp_path / "run"
    done = subprocess.run(
        [
            sys.executable,
            JOB,
            "--config",
            str(REPO / "configs" / "demo.yaml"),
            "--cache",
            "zarr",
            "--store",
            str(store),
            "--tiny-dir",
            str(tiny_llm),
            "--out-dir",
            str(out),
            "--max-steps",
            "2",
            "--checkpoint-every",
            "0",
        ],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert f"checkpoint: {out}/checkpoints/step-00000002" in done.stdout
    assert f"logs: {out}/tb" in done.stdout
    assert list((out / "tb").glob("events.out.tfevents.*"))
    assert len((out / "losses.jsonl").read_text().splitlines()) == 2
    assert "step/s" in done.stderr and "samples_s" in done.stderr  # the progress bar


def test_no_arguments_without_the_demo_store_says_how_to_make_it(tmp_path):
    done = subprocess.run([sys.executable, JOB], cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "no feature cache at demo_out/shards" in done.stderr and "python jobs/extract.py" in done.stderr


def test_stale_cache_is_refused_by_the_job(cache, tiny_llm, tmp_path):
    _, shards, ids = cache
    done = subprocess.run(
        [
            sys.executable,
            JOB,
            "--shards",
            str(shards),
            "--tiny-dir",
            str(tiny_llm),
            "--out-dir",
            str(tmp_path),
            "--expect",
            "local=0123456789abcdef",
        ],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert "0123456789abcdef" in done.stderr and ids["local"] in done.stderr
    assert "Traceback" not in done.stderr
