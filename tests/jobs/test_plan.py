"""`featstore plan` and the extraction job share one planning function: the units a run
executes are the ones the plan listed, with the reason for each sample (new clip, edited
clip, changed weights or preprocessing = new spec id, failed and --retry-failed); samples
whose media is unusable are listed and the run records them as failed; the device type the
job's actors would use is in the spec (--gpus-per-actor, else the store's, else this machine's)."""

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
from featstore.extract.config import ExtractConfig
from featstore.extract.encode import TINY_DIR
from featstore.extract.specs import planned_specs
from featstore.store import FeatureStore
from tests.jobs.conftest import JOB_ARGS, run_job

pytestmark = pytest.mark.slow
# The job's options that change spec ids and units, as `featstore plan` takes them.
PLAN_ARGS = [*JOB_ARGS, "--gpus-per-actor", "0"]
SLOTS = ("local", "audio")


def plan(capsys, store: Path, dataset: Path, *extra: str, base: list[str] = PLAN_ARGS) -> dict:
    capsys.readouterr()
    assert cli(["plan", str(store), "--dataset", str(dataset), *base, *extra, "--json"]) == 0
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

    # 2. A new clip, an edited clip, an unreadable clip and a row whose clip is missing.
    clips = data / "clips"
    shutil.copy(clips / "demo_0003.mp4", clips / "demo_0002.mp4")  # edited: other (valid) bytes
    shutil.copy(clips / "demo_0000.mp4", clips / "new_0004.mp4")
    (clips / "bad_0005.mp4").write_text("not a video\n")
    add_rows(
        data,
        [
            ["new_0004", "clips/new_0004.mp4", "", "hi", "happy"],
            ["bad_0005", "clips/bad_0005.mp4", "", "x", "sad"],
            ["gone_0006", "clips/gone_0006.mp4", "", "y", "angry"],
        ],
    )
    p = plan(capsys, store, data)
    assert p["new_samples"] == 3 and p["edited_samples"] == 1
    # The missing clip is listed as unusable, with why, before anything runs (rows 4-6 are new).
    assert [u["sample_id"] for u in p["unusable"]] == ["gone_0006"] and p["unusable_rows"] == [6]
    assert "gone_0006.mp4" in p["unusable"][0]["reason"] and "missing" in p["unusable"][0]["reason"]
    for slot in SLOTS:
        assert p["specs"][slot]["todo"] == {"new clip": 3, "edited clip": 1}, p["specs"][slot]
        assert p["specs"][slot]["units"] == [1, 2, 3] and p["specs"][slot]["done"] == 3
    capsys.readouterr()
    assert cli(["plan", str(store), "--dataset", str(data), *PLAN_ARGS]) == 0
    text = capsys.readouterr().out
    assert (
        "; 1 unusable" in text
        and f"unusable media (recorded as failed): gone_0006: {p['unusable'][0]['reason']}" in text
    )
    s = run(data, out)
    assert s["units"] == {slot: p["specs"][slot]["units"] for slot in SLOTS}
    # The run records it as failed, with the plan's reason, in every slot.
    for feat in FeatureStore.open(store).features():
        gone = [f for f in feat.failures() if f["sample_id"] == "gone_0006"]
        assert len(gone) == 1 and gone[0]["reason"] == p["unusable"][0]["reason"], feat.failures()

    # 3. The unreadable and the missing clip failed; they are kept unless --retry-failed.
    p = plan(capsys, store, data)
    assert p["units"] == {} and all(p["specs"][slot]["failed_kept"] == 2 for slot in SLOTS)
    p = plan(capsys, store, data, "--retry-failed")
    assert all(p["specs"][slot]["todo"] == {"failed, --retry-failed": 2} for slot in SLOTS)
    assert all(p["specs"][slot]["units"] == [2, 3] for slot in SLOTS)
    s = run(data, out, "--retry-failed")
    assert s["units"] == {slot: p["specs"][slot]["units"] for slot in SLOTS}


def test_changed_weights_and_preprocessing_are_new_spec_ids(tmp_path, capsys):
    data = make_demo_dataset(tmp_path / "data", n=2, seconds=1.0)
    out = tmp_path / "out"
    out.mkdir()
    store = out / "store.zarr"
    run(data, out)
    keys = {f.spec.name: f.spec.key for f in FeatureStore.open(store).features()}

    # The device type is in the spec: the CPU run recorded cpu ...
    assert {f.spec.preprocess["device_type"] for f in FeatureStore.open(store).features()} == {"cpu"}
    # ... --gpus-per-actor > 0 plans cuda, on this machine too: a new spec id in every slot, saying why
    p = plan(capsys, store, data, "--gpus-per-actor", "1")
    for slot in SLOTS:
        sp = p["specs"][slot]
        assert sp["todo"] == {"new spec id": 2} and sp["replaces"] == [keys[slot]], sp
        assert any('preprocess.device_type: "cpu" -> "cuda"' in c for c in sp["changes"]), sp["changes"]
    cuda = {slot: p["specs"][slot]["key"] for slot in SLOTS}
    # ... unset, the device type of the store's spec of the same name (a store made for a GPU run) ...
    job = ExtractConfig(
        dataset=str(data), format="csv", encoders="local,audio", unit_size=2, local_frames=2, gpus_per_actor=1
    )
    gpu_store = FeatureStore.create(tmp_path / "gpu.zarr")
    for spec in planned_specs(job, None).values():
        gpu_store.add_spec(spec, unit_size=2)
    p = plan(capsys, tmp_path / "gpu.zarr", data, base=JOB_ARGS)
    assert {slot: (p["specs"][slot]["key"], p["specs"][slot]["exists"]) for slot in SLOTS} == {
        slot: (cuda[slot], True) for slot in SLOTS
    }
    # ... and with no store, this machine's.
    p = plan(capsys, tmp_path / "none.zarr", data, base=JOB_ARGS)
    assert {slot: p["specs"][slot]["key"] for slot in SLOTS} == (cuda if torch.cuda.is_available() else keys)

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
