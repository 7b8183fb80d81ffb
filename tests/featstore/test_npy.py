"""import-npy / export-npy: the original Emotion-LLaMA feature folders round-trip exactly,
files are never unpickled, missing and malformed files become failure records."""

from __future__ import annotations

import json

import numpy as np
import pytest

from featstore.cli import main as cli
from featstore.demo.dataset import make_demo_dataset
from featstore.store import FeatureStore
from featstore.store.verify import verify_store

N = 6
FOLDERS = {"mae_340_UTT": "local", "maeV_399_UTT": "temporal", "HL-UTT": "audio"}
# Per folder: file shape and dtype, as the original folders may hold either shape.
LAYOUT = {"mae_340_UTT": ((1024,), "float32"), "maeV_399_UTT": ((1, 1024), "float32"), "HL-UTT": ((1024,), "float16")}


@pytest.fixture(scope="module")
def original(tmp_path_factory):
    """A demo dataset with the three original folders: demo_0001 has no HL-UTT file,
    demo_0002's mae_340_UTT file is a pickled object array, demo_0003's is [2, 1024]."""
    root = make_demo_dataset(tmp_path_factory.mktemp("npy") / "data", n=N, seconds=1.0)
    rng = np.random.default_rng(0)
    want: dict[str, dict[str, np.ndarray]] = {}
    for folder, (shape, dtype) in LAYOUT.items():
        (root / folder).mkdir()
        want[folder] = {}
        for i in range(N):
            sid = f"demo_{i:04d}"
            arr = rng.standard_normal(shape).astype(dtype)
            np.save(root / folder / f"{sid}.npy", arr)
            want[folder][sid] = arr
    (root / "HL-UTT" / "demo_0001.npy").unlink()
    del want["HL-UTT"]["demo_0001"]
    np.save(root / "mae_340_UTT" / "demo_0002.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    np.save(root / "mae_340_UTT" / "demo_0003.npy", np.zeros((2, 1024), np.float32))
    del want["mae_340_UTT"]["demo_0002"], want["mae_340_UTT"]["demo_0003"]
    return root, want


def import_args(store, root):
    args = ["import-npy", str(store), "--dataset", str(root), "--format", "csv"]
    for folder, name in FOLDERS.items():
        args += ["--folder", f"{folder}={name}"]
    return args


def test_import_export_round_trip(original, tmp_path, capsys):
    root, want = original
    store_path = tmp_path / "store.zarr"
    assert cli([*import_args(store_path, root), "--json"]) == 0
    reports = {r["folder"]: r for r in json.loads(capsys.readouterr().out)}
    assert {f: r["imported"] for f, r in reports.items()} == {f: len(want[f]) for f in FOLDERS}
    fails = {(r["folder"], f["sample_id"]): f["reason"] for r in reports.values() for f in r["failures"]}
    assert set(fails) == {("HL-UTT", "demo_0001"), ("mae_340_UTT", "demo_0002"), ("mae_340_UTT", "demo_0003")}
    assert fails[("HL-UTT", "demo_0001")].startswith("missing file HL-UTT/demo_0001.npy")
    assert "not a plain .npy array" in fails[("mae_340_UTT", "demo_0002")]
    assert "[2, 1024] is not [D] or [1, D]" in fails[("mae_340_UTT", "demo_0003")]

    store = FeatureStore.open(store_path)
    assert verify_store(store).ok
    for folder, name in FOLDERS.items():
        feat = store.feature(name)
        pre = feat.spec.preprocess
        assert pre["imported"] and pre["encoder"] == "unknown" and pre["preprocessing"] == "unknown"
        assert pre["folder"] == folder and pre["file_shape"] == list(LAYOUT[folder][0])
        assert feat.spec.dtype == LAYOUT[folder][1] and feat.spec.shape == (1024,)
        assert sorted(feat.attrs["import"]["files"]) == sorted(want[folder])
        failed = {r["sample_id"]: (r["stage"], r["reason"]) for r in feat.failures()}
        assert set(failed) == {s for f, s in fails if f == folder}
    # Re-running the import changes nothing (same spec ids, committed units kept).
    keys = sorted(f.spec.key for f in store.features())
    assert cli(import_args(store_path, root)) == 0
    assert sorted(f.spec.key for f in FeatureStore.open(store_path).features()) == keys

    out = tmp_path / "export"
    assert cli(["export-npy", str(store_path), str(out)]) == 0
    printed = capsys.readouterr().out
    assert "left out demo_0001 (audio-" in printed and "failed" in printed
    for folder, arrays in want.items():
        files = sorted(p.name for p in (out / folder).iterdir())
        assert files == sorted(f"{sid}.npy" for sid in arrays), folder
        for sid, arr in arrays.items():
            got = np.load(out / folder / f"{sid}.npy", allow_pickle=False)
            assert got.dtype == arr.dtype and got.shape == arr.shape and got.tobytes() == arr.tobytes()
            # np.save wrote both: the files are byte for byte the originals.
            assert (out / folder / f"{sid}.npy").read_bytes() == (root / folder / f"{sid}.npy").read_bytes()


def test_export_shape_option_and_bad_specs(original, tmp_path, capsys):
    root, want = original
    store_path = tmp_path / "store.zarr"
    assert cli(import_args(store_path, root)) == 0
    out = tmp_path / "flat"
    assert cli(["export-npy", str(store_path), str(out), "--spec", "temporal=maeV", "--shape", "flat"]) == 0
    got = np.load(out / "maeV" / "demo_0000.npy", allow_pickle=False)
    assert got.shape == (1024,) and np.array_equal(got, want["maeV_399_UTT"]["demo_0000"].reshape(-1))
    capsys.readouterr()
    assert cli(["export-npy", str(store_path), str(out), "--spec", "nosuch"]) == 2
    assert "nosuch" in capsys.readouterr().err


def test_import_refuses_folders_outside_the_dataset(original, tmp_path, capsys):
    root, _ = original
    args = ["import-npy", str(tmp_path / "s.zarr"), "--dataset", str(root), "--format", "csv"]
    assert cli([*args, "--folder", "../elsewhere=local"]) == 2
    assert "elsewhere" in capsys.readouterr().err
    assert cli([*args, "--folder", "mae_340_UTT"]) == 2
    assert "FOLDER=SPEC_NAME" in capsys.readouterr().err
