"""`featstore plan` and the extraction job share one planning function: the units a run
executes are the ones the plan listed, with the reason for each sample (new clip, edited
clip, changed weights or preprocessing = new spec id, failed and --retry-failed)."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from featstore.cli import main as cli
from featstore.demo.dataset import make_demo_dataset
from featstore.encoders.presets import build_tiny_checkpoints
from featstore.extract.encode import TINY_DIR
from featstore.store import FeatureStore
from tests.jobs.conftest import JOB_ARGS, run_job

pytestmark = pytest.mark.slow
# The job's options that change spec ids and units, as `featstore plan` takes them.
PLAN_ARGS = [*JOB_ARGS, "--gpus-per-actor", "0"]
SLOTS = ("local", "audio")


def plan(capsys, store: Path, dataset: Path, *extra: str) -> dict:
    capsys.readouterr()
    assert cli(["plan", str(store), "--dataset", str(dataset), *PLAN_ARGS, *extra, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def run(dataset: Path, out: Path, *extra: str) -> dict:
    proc, summary = run_job(dataset, out, *extra)
    assert summary is not None, proc.stdout[-3000:] + proc.stderr[-3000:]
    return summary


def add_rows(root: Path, rows: list[list[str]]) -> None:
    with open(root / "manifest.csv", newline="", encoding="utf-8") as f:
        header, *old = list(csv.reader(f))
    with open(root / "manifest.csv", "w", newline="", encoding="utf-8") as f:
        csv.writer(f, lineterminator="\n").writerows([header, *old, *rows])


def test_plan_lists_what_the_run_executes(tmp_path, capsys):
    data = make_demo_dataset(tmp_path / "data", n=4, seconds=1.0)
    out = tmp_path / "out"
    out.mkdir()
    store = out / "store.zarr"

    # 1. An empty store: everything is a new spec id, units 0 and 1 (2 samples a unit).
    p = plan(capsys, store, data)
    for slot in SLOTS:
        assert p["specs"][slot]["todo"] == {"new spec id": 4} and p["specs"][slot]["units"] == [0, 1]
    assert not store.exists()  # planning writes nothing
    s = run(data, out)
    assert s["units"] == {slot: p["specs"][slot]["units"] for slot in SLOTS}
    assert {slot: p["specs"][slot]["key"] for slot in SLOTS} == {slot: c["key"] for slot, c in s["specs"].items()}
    assert plan(capsys, store, data)["units"] == {}  # nothing left to do

    # 2. A new clip, an edited clip and an unreadable clip.
    clips = data / "clips"
    shutil.copy(clips / "demo_0003.mp4", clips / "demo_0002.mp4")  # edited: other (valid) bytes
    shutil.copy(clips / "demo_0000.mp4", clips / "new_0004.mp4")
    (clips / "bad_0005.mp4").write_text("not a video\n")
    add_rows(
        data,
        [["new_0004", "clips/new_0004.mp4", "", "hi", "happy"], ["bad_0005", "clips/bad_0005.mp4", "", "x", "sad"]],
    )
    p = plan(capsys, store, data)
    assert p["new_samples"] == 2 and p["edited_samples"] == 1
    for slot in SLOTS:
        assert p["specs"][slot]["todo"] == {"new clip": 2, "edited clip": 1}, p["specs"][slot]
        assert p["specs"][slot]["units"] == [1, 2] and p["specs"][slot]["done"] == 3
    s = run(data, out)
    assert s["units"] == {slot: p["specs"][slot]["units"] for slot in SLOTS}

    # 3. The unreadable clip failed; it is kept unless --retry-failed.
    p = plan(capsys, store, data)
    assert p["units"] == {} and all(p["specs"][slot]["failed_kept"] == 1 for slot in SLOTS)
    p = plan(capsys, store, data, "--retry-failed")
    assert all(p["specs"][slot]["todo"] == {"failed, --retry-failed": 1} for slot in SLOTS)
    assert all(p["specs"][slot]["units"] == [2] for slot in SLOTS)
    s = run(data, out, "--retry-failed")
    assert s["units"] == {slot: p["specs"][slot]["units"] for slot in SLOTS}


def test_changed_weights_and_preprocessing_are_new_spec_ids(tmp_path, capsys):
    data = make_demo_dataset(tmp_path / "data", n=2, seconds=1.0)
    out = tmp_path / "out"
    out.mkdir()
    store = out / "store.zarr"
    run(data, out)
    keys = {f.spec.name: f.spec.key for f in FeatureStore.open(store).features()}

    # A preprocessing parameter: frames sampled for the face crops (local only).
    p = plan(capsys, store, data, "--local-frames", "3")
    local, audio = p["specs"]["local"], p["specs"]["audio"]
    assert local["todo"] == {"new spec id": 2} and local["replaces"] == [keys["local"]]
    assert any(c.startswith("preprocessing changed:") and "frames" in c for c in local["changes"]), local
    assert not any("weights" in c for c in local["changes"])
    assert audio["todo"] == {} and audio["done"] == 2

    # One encoder weight changed: a copy of the tiny MAE with one tensor nudged.
    src = build_tiny_checkpoints(TINY_DIR)["local"]
    ckpt = tmp_path / "mae-edited"
    shutil.copytree(src, ckpt)
    state = load_file(ckpt / "model.safetensors")
    name = sorted(k for k in state if k.endswith("layernorm.weight"))[0]
    state[name] = state[name] + torch.ones_like(state[name]) * 1e-3
    save_file(state, ckpt / "model.safetensors", metadata={"format": "pt"})
    p = plan(capsys, store, data, "--checkpoint", f"local={ckpt}")
    local = p["specs"]["local"]
    assert local["todo"] == {"new spec id": 2} and local["replaces"] == [keys["local"]]
    assert [c for c in local["changes"] if c.startswith("encoder weights changed")], local
    assert not any(c.startswith("preprocessing") for c in local["changes"])
    assert p["specs"]["audio"]["todo"] == {}
    # The run agrees: it computes the new spec for every unit, audio nothing.
    s = run(data, out, "--checkpoint", f"local={ckpt}")
    assert s["units"] == {"local": [0], "audio": []}
    assert s["specs"]["local"]["key"] == local["key"] != keys["local"]
