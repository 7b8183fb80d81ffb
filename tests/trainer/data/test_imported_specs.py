"""The trainer trains from imported specs (featstore import-npy) when its config names their ids,
even when the store also holds extracted specs of the same names."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from featstore import FeatureStore
from featstore.npy import import_npy
from tests.trainer.conftest import make_cache

REPO = Path(__file__).resolve().parents[3]
FOLDERS = {"mae_340_UTT": "local", "maeV_399_UTT": "temporal", "HL-UTT": "audio"}


def test_trains_from_imported_specs(tiny_llm, tmp_path):
    store_path, _, extracted = make_cache(tmp_path / "cache")
    data = tmp_path / "data"
    rng = np.random.default_rng(1)
    store = FeatureStore.open(store_path, "r+")
    for folder in FOLDERS:
        (data / folder).mkdir(parents=True)
        for sid in store.sample_ids:
            np.save(data / folder / f"{sid}.npy", rng.standard_normal((1, 1024)).astype(np.float32))
    imported = {r.spec.name: r.spec.id for r in import_npy(store, data, FOLDERS)}
    assert set(imported) == set(FOLDERS.values()) and not set(imported.values()) & set(extracted.values())

    out = tmp_path / "run"
    expect = {"global": extracted["global"], **imported}
    cmd = [sys.executable, str(REPO / "jobs" / "train.py"), "--config", str(REPO / "configs" / "demo.yaml")]
    cmd += ["--cache", "zarr", "--store", str(store_path), "--tiny-dir", str(tiny_llm), "--out-dir", str(out)]
    cmd += ["--max-steps", "2", "--checkpoint-every", "0"]
    for slot, sid in expect.items():
        cmd += ["--expect", f"{slot}={sid}"]
    done = subprocess.run(
        cmd, env={**os.environ, "PYTHONWARNINGS": "ignore"}, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    state = json.loads((out / "checkpoints" / "step-00000002" / "state.json").read_text())
    assert state["spec_ids"] == expect
