"""WebDataset export: layout, index, determinism, exclusions, splits, standard tools."""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import tarfile

import numpy as np
import pytest

from featstore.cli import main as cli_main
from featstore.shards.export import export_wds, tar_key
from featstore.store import FeatureStore
from tests.featstore.conftest import DEMO_N, FAILED_ID, TOKENS, expected_features


@pytest.fixture(scope="module")
def exported(demo_store, tmp_path_factory):
    out = tmp_path_factory.mktemp("wds") / "shards"
    summary = export_wds(FeatureStore.open(demo_store[0]), str(out), maxcount=2)
    return out, summary


def test_index_describes_shards(exported, demo_store):
    out, summary = exported
    index = json.loads((out / "shards.json").read_text())
    assert index["total_samples"] == DEMO_N - 1 == summary.total_samples
    assert [s["samples"] for s in index["shards"]] == [2, 2, 1]
    for s in index["shards"]:
        data = (out / s["name"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == s["sha256"] and len(data) == s["bytes"]
    assert {s["name"]: (s["id"], s["shape"]) for s in index["specs"]} == {
        "thumb": (FeatureStore.open(demo_store[0]).feature("thumb").spec.id, [64]),
        "tokens": (TOKENS.id, [5, 8]),
    }
    assert index["excluded"] == [{"sample_id": FAILED_ID, "reason": "tokens: failed at decode_audio: no audio stream"}]
    assert index["store"] == str(demo_store[0])


def test_members_hold_features_and_annotations(exported, demo_store):
    out, _ = exported
    expected = expected_features(demo_store[0])
    manifest = demo_store[1]
    with tarfile.open(out / "shard-000000.tar") as tar:
        names = tar.getnames()
        assert names == [
            "demo_0000.thumb.npy",
            "demo_0000.tokens.npy",
            "demo_0000.json",
            "demo_0001.thumb.npy",
            "demo_0001.tokens.npy",
            "demo_0001.json",
        ]
        arr = np.load(io.BytesIO(tar.extractfile("demo_0001.tokens.npy").read()), allow_pickle=False)
        meta = json.loads(tar.extractfile("demo_0001.json").read())
        info = tar.getmember("demo_0001.json")
    np.testing.assert_array_equal(arr, expected["tokens"]["demo_0001"])
    sample = manifest.get("demo_0001")
    assert meta["sample_id"] == "demo_0001" and meta["label"] == sample.label
    assert meta["reasoning"] == sample.reasoning and meta["extra"]["peak_index"] == sample.extra["peak_index"]
    assert (info.mtime, info.uid, info.uname, info.mode) == (0, 0, "", 0o444)


def test_export_is_byte_identical(exported, demo_store, tmp_path):
    out, _ = exported
    again = tmp_path / "again"
    export_wds(FeatureStore.open(demo_store[0]), str(again), maxcount=2)
    for name in ("shard-000000.tar", "shard-000001.tar", "shard-000002.tar"):
        assert (again / name).read_bytes() == (out / name).read_bytes()


def test_reexport_removes_stale_shards(demo_store, tmp_path):
    store = FeatureStore.open(demo_store[0])
    export_wds(store, str(tmp_path), maxcount=1)
    assert len(list(tmp_path.glob("shard-*.tar"))) == DEMO_N - 1
    export_wds(store, str(tmp_path), maxcount=10)
    assert sorted(p.name for p in tmp_path.glob("*")) == ["shard-000000.tar", "shards.json"]


def test_maxsize_and_spec_subset(demo_store, tmp_path):
    store = FeatureStore.open(demo_store[0])
    # About 2.5 kB a sample in the tar (two members with headers and 512-byte padding).
    summary = export_wds(store, str(tmp_path / "a"), specs=["thumb"], maxcount=None, maxsize_mb=0.008)
    assert summary.total_samples == DEMO_N and summary.excluded == []  # tokens' failure does not matter
    counts = [s["samples"] for s in summary.shards]
    assert len(counts) > 1 and max(counts) in (2, 3)
    tiny = export_wds(store, str(tmp_path / "b"), specs=["thumb"], maxcount=None, maxsize_mb=0.0001)
    assert [s["samples"] for s in tiny.shards] == [1] * DEMO_N  # a sample over the limit still gets a shard


def test_split_export(demo_store, tmp_path):
    store = FeatureStore.open(demo_store[0])
    counts = {}
    for split in ("train", "val", "test"):
        counts[split] = export_wds(store, str(tmp_path / split), split=split, ratios=(0.5, 0.25, 0.25)).total_samples
    assert sum(counts.values()) == DEMO_N - 1
    assert sorted(p.name for p in (tmp_path / "train").glob("*.tar"))[0].startswith("train-")


def test_tar_tf_lists_members(exported):
    out, _ = exported
    listing = subprocess.run(["tar", "tf", str(out / "shard-000002.tar")], capture_output=True, text=True, check=True)
    assert listing.stdout.split() == ["demo_0005.thumb.npy", "demo_0005.tokens.npy", "demo_0005.json"]


def test_tar_key_is_safe_and_unique():
    assert tar_key("demo_0001") == "demo_0001"
    keys = {tar_key(s) for s in ("a.b", "a_b", "a/b", "__x", "a b.mp4")}
    assert len(keys) == 5 and all("." not in k and "/" not in k and not k.startswith("__") for k in keys)


def test_cli_export(demo_store, tmp_path, capsys):
    assert cli_main(["export-wds", str(demo_store[0]), str(tmp_path), "--maxcount", "3"]) == 0
    out = capsys.readouterr().out
    assert f"exported {DEMO_N - 1} samples in 2 shard(s)" in out and f"left out {FAILED_ID}" in out
