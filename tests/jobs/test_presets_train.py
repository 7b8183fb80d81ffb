"""The demo end to end with the AffectGPT and Emotion-LLaMA-v2 tiny presets, as a user runs it:
jobs/extract.py (shards), jobs/train.py with the preset's feature layout (a few steps, a checkpoint),
jobs/evaluate.py on the same shards (the checkpoint's layout rebuilt from its saved config)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from featstore.demo.dataset import make_demo_dataset
from tests.jobs.conftest import JOB, REPO

pytestmark = pytest.mark.slow
N = 4


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return make_demo_dataset(tmp_path_factory.mktemp("demo") / "data", n=N, seconds=1.0, audio_source="synth")


def _run(*cmd: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "TRANSFORMERS_VERBOSITY": "error", "PYTHONWARNINGS": "ignore"}
    done = subprocess.run([sys.executable, *cmd], capture_output=True, text=True, timeout=600, env=env, cwd=REPO)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


@pytest.mark.parametrize(
    "preset, layout, members",
    [
        ("tiny-affectgpt", "affectgpt", {"frames": [8, 32], "audio": [32]}),
        ("tiny-emotion-llama-v2", "emotion-llama-v2", {"global": [1025, 32], "whisper": [32]}),
    ],
)
def test_extract_train_evaluate_with_a_new_preset(preset, layout, members, demo, tmp_path):
    shards = tmp_path / "shards"
    _run(
        str(JOB), "--dataset", str(demo), "--format", "merr", "--store", str(tmp_path / "store.zarr"),
        "--work-dir", str(tmp_path), "--preset", preset, "--unit-size", "2", "--export-wds", str(shards),
        "--ray-address", "local", "--strict",
    )  # fmt: skip
    index = json.loads((shards / "shards.json").read_text())
    assert {s["name"]: s["shape"] for s in index["specs"]} == members

    run = tmp_path / "run"
    _run(
        "jobs/train.py", "--shards", str(shards), "--layout", layout, "--out-dir", str(run), "--max-steps", "3",
        "--batch-size", "2", "--checkpoint-every", "3", "--no-progress",
    )  # fmt: skip
    losses = [json.loads(line) for line in (run / "losses.jsonl").read_text().splitlines()]
    assert [r["step"] for r in losses] == [1, 2, 3]
    state = json.loads(next((run / "checkpoints").glob("step-*3/state.json")).read_text())
    assert state["config"]["layout"] == layout
    assert state["spec_ids"] == {s["name"]: s["id"] for s in index["specs"]}

    out = tmp_path / "eval"
    _run(
        "jobs/evaluate.py", "--checkpoint", str(run), "--cache", "shards", "--shards", str(shards), "--labels",
        "merr", "--max-new-tokens", "3", "--out-dir", str(out), "--no-progress",
    )  # fmt: skip
    predictions = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert sorted(p["sample_id"] for p in predictions) == [f"demo_{i:04d}" for i in range(N)]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n"] == N and 0 <= metrics["weighted_f1"] <= 1
