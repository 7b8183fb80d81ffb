"""Ray Train: 2 CPU workers (gloo DDP) read their own shards, every sample once an epoch across them;
checkpoints go through ray.train.report and a second run resumes from the newest one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.trainer.conftest import CACHE_N

REPO = Path(__file__).resolve().parents[3]


def _run(shards, tiny_llm, out, steps):
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "PYTHONPATH": str(REPO), "RAY_TRAIN_ENABLE_PRINT_PATCH": "0"}
    return subprocess.run(
        [
            sys.executable,
            str(REPO / "jobs" / "train.py"),
            "--shards",
            str(shards),
            "--tiny-dir",
            str(tiny_llm),
            "--out-dir",
            str(out),
            "--num-workers",
            "2",
            "--ray-address",
            "local",
            "--tasks",
            "emotion",
            "--batch-size",
            "2",
            "--epochs",
            "2",
            "--max-steps",
            str(steps),
            "--shuffle-buffer",
            "0",
            "--log-samples",
            "--no-progress",
            "--checkpoint-every",
            "0",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.slow
def test_two_workers_cover_every_sample_once_and_resume(cache, tiny_llm, tmp_path):
    _, shards, _ = cache  # 8 samples in 4 shards of 2: 2 shards, 4 samples, 2 steps per rank an epoch
    first = _run(shards, tiny_llm, tmp_path, steps=2)
    assert first.returncode == 0, first.stderr[-3000:]
    ranks = [
        [json.loads(line) for line in (tmp_path / f"samples-rank{r}.jsonl").read_text().splitlines()] for r in (0, 1)
    ]
    per_rank = [[s for row in rows if row["epoch"] == 0 for s in row["sample_ids"]] for rows in ranks]
    assert all(len(ids) == CACHE_N // 2 for ids in per_rank)
    assert sorted(per_rank[0] + per_rank[1]) == [f"demo_{i:04d}" for i in range(CACHE_N)]  # once each
    ckpts = list((tmp_path / "ray").rglob("state.json"))
    assert len(ckpts) == 1 and {p.name for p in ckpts[0].parent.iterdir()} >= {
        "adapter",
        "projector.pt",
        "optimizer.pt",
        "rng-rank0.pt",
        "rng-rank1.pt",
    }
    assert json.loads(ckpts[0].read_text())["world_size"] == 2

    again = _run(shards, tiny_llm, tmp_path, steps=3)  # resume auto: from step 2 to step 3
    assert again.returncode == 0, again.stderr[-3000:]
    losses = [json.loads(line) for line in (tmp_path / "losses.jsonl").read_text().splitlines()]
    assert [r["step"] for r in losses] == [1, 2, 3]  # continued, not restarted
    assert losses[-1]["epoch"] == 1
    assert "checkpoint:" in again.stdout and "step" in again.stdout
