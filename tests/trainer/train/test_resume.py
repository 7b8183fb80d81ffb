"""Resume: a run SIGKILLed mid-epoch and resumed from its checkpoint continues the same loss curve
as an uninterrupted run (same losses to 1e-6 on CPU), across the epoch boundary."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
STEPS = 12  # 8 samples x 2 tasks / batch 2 = 8 steps an epoch: crosses into epoch 1


def _args(shards, tiny_llm, out):
    return [
        sys.executable,
        str(REPO / "jobs" / "train.py"),
        "--shards",
        str(shards),
        "--tiny-dir",
        str(tiny_llm),
        "--out-dir",
        str(out),
        "--epochs",
        "2",
        "--max-steps",
        str(STEPS),
        "--batch-size",
        "2",
        "--tasks",
        "emotion,reason",
        "--shuffle-buffer",
        "4",
        "--lr",
        "1e-3",
        "--warmup-steps",
        "3",
        "--warmup-lr",
        "1e-4",
        "--min-lr",
        "1e-4",
        "--checkpoint-every",
        "3",
        "--keep-checkpoints",
        "0",
        "--no-progress",
    ]


def _losses(out) -> dict[int, float]:
    """Step -> loss, the last line written for each step (a resumed run rewrites the steps after its checkpoint)."""
    rows = [json.loads(line) for line in (Path(out) / "losses.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in rows}


def test_kill_and_resume_continues_the_same_loss_curve(cache, tiny_llm, tmp_path):
    _, shards, _ = cache
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    full = subprocess.run(
        _args(shards, tiny_llm, tmp_path / "full"), env=env, capture_output=True, text=True, timeout=300
    )
    assert full.returncode == 0, full.stderr
    reference = _losses(tmp_path / "full")
    assert sorted(reference) == list(range(1, STEPS + 1))

    out = tmp_path / "killed"
    proc = subprocess.Popen(
        _args(shards, tiny_llm, out),
        env={**env, "TRAINER_STEP_SLEEP": "0.5"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    mid = out / "checkpoints" / "step-00000006" / "state.json"  # 6 of the epoch's 8 batches done
    deadline = time.monotonic() + 240
    while not mid.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert mid.exists(), "the run never wrote its mid-epoch checkpoint"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (out / "checkpoints" / f"step-{STEPS:08d}").exists()  # killed mid-run, not after it
    state = json.loads(mid.read_text())
    assert state["data"] == {
        "epoch": 0,
        "batches_in_epoch": 6,
        "samples_in_epoch": 12,
        "loader_workers": 0,
        "source": str(shards),
    }

    resumed = subprocess.run(_args(shards, tiny_llm, out), env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    got = _losses(out)
    assert sorted(got) == sorted(reference)
    for step in reference:
        assert abs(got[step] - reference[step]) <= 1e-6, (step, got[step], reference[step])
    assert len(set(reference.values())) > 6  # the curve moves: equality is not trivial
