"""featstore compare: per-sample cosine and max abs difference between two specs, checked against
scikit-learn's cosine similarity on the arrays written; exit 0 on an exact import of a spec, 1 on
two different specs, 2 on a bad name or shapes that differ."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics.pairwise import cosine_similarity

from featstore.cli import main as cli
from featstore.demo.dataset import make_demo_dataset
from featstore.store import FeatureStore

N = 6


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A store holding: local (folder A), temporal (folder B, other values), local again as an exact
    import of local's export (folder A_copy), local as a copy with one sample perturbed (folder A_bent),
    and audio [1, 512] (another shape)."""
    base = tmp_path_factory.mktemp("compare")
    root = make_demo_dataset(base / "data", n=N, seconds=1.0)
    rng = np.random.default_rng(3)
    arrays = {"A": rng.standard_normal((N, 1024)).astype(np.float32)}
    arrays["B"] = rng.standard_normal((N, 1024)).astype(np.float32)
    arrays["A_bent"] = arrays["A"].copy()
    arrays["A_bent"][4] += 0.8 * rng.standard_normal(1024).astype(np.float32)
    arrays["C"] = rng.standard_normal((N, 512)).astype(np.float32)
    for folder, arr in arrays.items():
        (root / folder).mkdir()
        for i in range(N):
            np.save(root / folder / f"demo_{i:04d}.npy", arr[i])
    path = base / "store.zarr"
    common = ["import-npy", str(path), "--dataset", str(root), "--format", "csv"]
    assert cli([*common, "--folder", "A=local", "--folder", "B=temporal", "--folder", "C=audio"]) == 0
    local = FeatureStore.open(path).feature("local").spec.key
    assert cli(["export-npy", str(path), str(root), "--spec", f"{local}=A_copy"]) == 0
    assert cli([*common, "--folder", "A_copy=local", "--folder", "A_bent=local"]) == 0
    keys = {f.spec.preprocess["folder"]: f.spec.key for f in FeatureStore.open(path).features()}
    return path, keys, arrays


def run_json(capsys, *args):
    code = cli(["compare", *map(str, args), "--json"])
    return code, json.loads(capsys.readouterr().out)


def test_exact_import_compares_equal(store, capsys):
    path, keys, arrays = store
    code, out = run_json(capsys, path, keys["A"], keys["A_copy"])
    assert code == 0 and out["ok"]
    assert out["compared"] == N and out["cosine_min"] == pytest.approx(1.0, abs=1e-12)
    assert out["max_abs_max"] == 0.0 and not out["only_in_a"] and not out["only_in_b"]


def test_different_specs_fail_and_figures_match_sklearn(store, capsys):
    path, keys, arrays = store
    code, out = run_json(capsys, path, keys["A"], keys["B"])
    assert code == 1 and not out["ok"] and out["below_min_cosine"] == N
    got = {s["sample_id"]: s for s in out["samples"]}
    a, b = arrays["A"].astype(np.float64), arrays["B"].astype(np.float64)
    for i in range(N):
        row = got[f"demo_{i:04d}"]
        assert row["cosine"] == pytest.approx(cosine_similarity(a[i : i + 1], b[i : i + 1])[0, 0], abs=1e-9)
        assert row["max_abs"] == pytest.approx(np.abs(a[i] - b[i]).max(), abs=1e-6)
    assert out["cosine_median"] == pytest.approx(np.median([got[k]["cosine"] for k in got]), abs=1e-12)


def test_one_bent_sample_is_the_worst_and_the_threshold_decides(store, capsys):
    path, keys, arrays = store
    code, out = run_json(capsys, path, keys["A"], keys["A_bent"])
    want = cosine_similarity(arrays["A"][4:5].astype(np.float64), arrays["A_bent"][4:5].astype(np.float64))[0, 0]
    assert code == 1 and out["below_min_cosine"] == 1
    assert out["worst"][0]["sample_id"] == "demo_0004"
    assert out["worst"][0]["cosine"] == pytest.approx(want, abs=1e-9)
    assert cli(["compare", str(path), keys["A"], keys["A_bent"], "--min-cosine", str(want - 1e-3)]) == 0
    text = capsys.readouterr().out
    assert "ok: every sample at or above" in text and "demo_0004" in text


def test_bad_names_and_shapes_are_named(store, capsys):
    path, keys, _ = store
    assert cli(["compare", str(path), keys["A"], keys["C"]]) == 2
    err = capsys.readouterr().err
    assert "[1024]" in err and "[512]" in err and keys["C"] in err
    assert cli(["compare", str(path), keys["A"], "no-such-spec"]) == 2
    assert "no-such-spec" in capsys.readouterr().err
    assert cli(["compare", str(path), keys["A"], keys["A"]]) == 2
    assert "same spec" in capsys.readouterr().err
