"""Ray Train as the README runs it (jobs/train.py --cache zarr --num-workers 2): 2 CPU workers (gloo
DDP) split the store by sample, every sample once an epoch across them in both epochs; checkpoints go
through ray.train.report with every rank's RNG, and a run resumed (--resume auto) from a mid-epoch
checkpoint continues the uninterrupted run's loss curve.

Two job runs, shared by the tests (each pays Ray Train's ~30 s start-up): the uninterrupted one, which
checkpoints every step, and one that resumes from a copy of its step-1 checkpoint."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.trainer.conftest import CACHE_N

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[3]
SAMPLES = [f"demo_{i:04d}" for i in range(CACHE_N)]
# 8 samples, 2 ranks, batch 2, one task: 2 steps a rank an epoch, 4 in 2 epochs. No --max-steps: the
# split alone decides how many samples each rank gets. Shuffled: each epoch splits the store anew.
ARGS = [
    "--cache", "zarr", "--num-workers", "2", "--ray-address", "local", "--tasks", "emotion", "--batch-size", "2",
    "--epochs", "2", "--shuffle-buffer", "4", "--lr", "1e-3", "--warmup-steps", "1", "--log-samples",
    "--no-progress", "--checkpoint-every", "1", "--keep-checkpoints", "0",
]  # fmt: skip
STEPS = 4


def _run(store, tiny_llm, out, *extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "PYTHONPATH": str(REPO), "RAY_TRAIN_ENABLE_PRINT_PATCH": "0"}
    cmd = [sys.executable, str(REPO / "jobs" / "train.py"), "--store", str(store), "--tiny-dir", str(tiny_llm)]
    done = subprocess.run(
        [*cmd, "--out-dir", str(out), *ARGS, *extra], env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _checkpoints(out: Path) -> dict[int, Path]:
    """Step -> checkpoint folder that Ray Train kept for the run in ``out``."""
    return {json.loads(p.read_text())["step"]: p.parent for p in (out / "ray").rglob("state.json")}


@pytest.fixture(scope="module")
def runs(cache, tiny_llm, tmp_path_factory):
    """(uninterrupted run's folder, resumed run's folder, the resumed job's output)."""
    store, _, _ = cache
    full = tmp_path_factory.mktemp("ray-full")
    _run(store, tiny_llm, full)
    resumed = tmp_path_factory.mktemp("ray-resumed")
    step1 = _checkpoints(full)[1]  # mid-epoch 0: 1 of its 2 steps done
    shutil.copytree(step1, resumed / "ray" / "earlier-run" / step1.name)  # where --resume auto looks
    return full, resumed, _run(store, tiny_llm, resumed, "--checkpoint-every", "0")  # only its last


def test_two_workers_cover_every_sample_once_an_epoch(runs):
    full, _, _ = runs
    ranks = [_rows(full / f"samples-rank{r}.jsonl") for r in (0, 1)]
    assert [[row["step"] for row in rows] for rows in ranks] == [list(range(1, STEPS + 1))] * 2
    split = {}
    for epoch in (0, 1):
        per_rank = [[s for row in rows if row["epoch"] == epoch for s in row["sample_ids"]] for rows in ranks]
        assert [len(ids) for ids in per_rank] == [CACHE_N // 2] * 2, (epoch, per_rank)
        assert sorted(per_rank[0] + per_rank[1]) == SAMPLES, (epoch, per_rank)  # each sample once
        split[epoch] = per_rank
    assert split[0] != split[1]  # reshuffled: epoch 1 is not a replay of epoch 0's split


def test_checkpoints_hold_every_ranks_rng(runs):
    full, _, _ = runs
    found = _checkpoints(full)
    assert sorted(found) == list(range(1, STEPS + 1))
    for step, folder in found.items():
        assert {p.name for p in folder.iterdir()} >= {
            "adapter",
            "projector.pt",
            "optimizer.pt",
            "scheduler.pt",
            "rng-rank0.pt",
            "rng-rank1.pt",
        }, step
        state = json.loads((folder / "state.json").read_text())
        assert state["world_size"] == 2
        # each rank's position: 2 batches of 2 samples an epoch
        assert (state["data"]["epoch"], state["data"]["samples_in_epoch"]) == (
            (step - 1) // 2,
            2 * ((step - 1) % 2 + 1),
        )


def test_resume_continues_the_same_loss_curve(runs):
    full, resumed, job = runs
    reference = {r["step"]: r for r in _rows(full / "losses.jsonl")}
    assert sorted(reference) == list(range(1, STEPS + 1)) and len({r["loss"] for r in reference.values()}) == STEPS
    got = _rows(resumed / "losses.jsonl")
    assert [r["step"] for r in got] == [2, 3, 4]  # continued from step 1, not restarted
    for r in got:  # every rank's RNG (dropout masks) and the data position restored: the same losses
        assert r["epoch"] == reference[r["step"]]["epoch"]
        assert abs(r["loss"] - reference[r["step"]]["loss"]) <= 1e-6, (r, reference[r["step"]])
    for rank in (0, 1):  # and the same samples on each rank from step 2 on
        want = [row for row in _rows(full / f"samples-rank{rank}.jsonl") if row["step"] >= 2]
        assert _rows(resumed / f"samples-rank{rank}.jsonl") == want
    assert f"checkpoint: {resumed}" in job.stdout and "trained 4 steps (epoch 1)" in job.stdout
