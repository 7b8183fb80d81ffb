"""Reading shards: our reader, webdataset, Ray Data, torch DataLoader; the Zarr reader;
stale specs refused; error policy."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch
import webdataset as wds

from featstore.errors import ShardFormatError, SpecMismatchError
from featstore.shards import ShardDataset, ZarrDataset, open_features
from featstore.shards.export import export_wds
from featstore.store import FeatureStore
from tests.featstore.conftest import DEMO_N, FAILED_ID, TOKENS, expected_features


@pytest.fixture(scope="module")
def shards(demo_store, tmp_path_factory):
    out = tmp_path_factory.mktemp("reader") / "shards"
    export_wds(FeatureStore.open(demo_store[0]), str(out), maxcount=2)
    return out


@pytest.fixture(scope="module")
def expect(demo_store):
    store = FeatureStore.open(demo_store[0])
    return {"thumb": store.feature("thumb").spec.id, "tokens": TOKENS.id}


GOOD = [f"demo_{i:04d}" for i in range(DEMO_N) if f"demo_{i:04d}" != FAILED_ID]


def test_shard_dataset_yields_store_values(shards, demo_store, expect):
    expected = expected_features(demo_store[0])
    samples = list(ShardDataset(str(shards), expect))
    assert [s["sample_id"] for s in samples] == GOOD
    for s in samples:
        np.testing.assert_array_equal(s["tokens"], expected["tokens"][s["sample_id"]])
        np.testing.assert_array_equal(s["thumb"], expected["thumb"][s["sample_id"]])
        assert s["meta"]["label"] == demo_store[1].get(s["sample_id"]).label


def test_stale_spec_refused_naming_both_ids(shards, expect):
    stale = {**expect, "tokens": "0123456789abcdef"}
    with pytest.raises(SpecMismatchError) as err:
        ShardDataset(str(shards), stale)
    assert TOKENS.id in str(err.value) and "0123456789abcdef" in str(err.value)
    with pytest.raises(SpecMismatchError, match="no features named 'audio'"):
        ShardDataset(str(shards), {"audio": "feedfeedfeedfeed"})


def test_zarr_dataset_matches_shards(shards, demo_store, expect):
    zd = ZarrDataset(str(demo_store[0]), expect)
    assert len(zd) == len(GOOD)
    from_shards = {s["sample_id"]: s for s in ShardDataset(str(shards), expect)}
    for s in zd:
        other = from_shards[s["sample_id"]]
        assert s["__key__"] == other["__key__"] and s["meta"] == other["meta"]
        for name in expect:
            np.testing.assert_array_equal(s[name], other[name])
    with pytest.raises(SpecMismatchError, match="0123456789abcdef"):
        ZarrDataset(str(demo_store[0]), {"tokens": "0123456789abcdef"})


def test_open_features_dispatches(shards, demo_store, expect):
    assert isinstance(open_features(str(shards), expect), ShardDataset)
    assert isinstance(open_features(str(demo_store[0]), expect), ZarrDataset)


def test_webdataset_reads_shards(shards):
    urls = sorted(str(p) for p in shards.glob("*.tar"))
    ids = []
    for sample in wds.WebDataset(urls, shardshuffle=False):
        tokens = np.load(io.BytesIO(sample["tokens.npy"]), allow_pickle=False)
        assert tokens.shape == (5, 8)
        ids.append(json.loads(sample["json"])["sample_id"])
    assert ids == GOOD


def test_ray_read_webdataset(shards):
    ray = pytest.importorskip("ray")
    ray.init(address="local", num_cpus=1, include_dashboard=False, ignore_reinit_error=True, log_to_driver=False)
    try:
        # The folder also holds shards.json: read only the tars.
        rows = ray.data.read_webdataset(str(shards), decoder=None, file_extensions=["tar"]).take_all()
    finally:
        ray.shutdown()
    assert sorted(r["__key__"] for r in rows) == GOOD
    assert {"tokens.npy", "thumb.npy", "json"} <= set(rows[0])


def test_pipe_url(shards, expect):
    urls = [f"pipe:cat {p}" for p in sorted(shards.glob("*.tar"))]
    assert [s["sample_id"] for s in ShardDataset(str(shards), expect, urls=urls)] == GOOD


def _epoch(ds, epoch, workers):
    ds.set_epoch(epoch)
    loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=workers, collate_fn=lambda x: x)
    return [s["sample_id"] for s in loader]


def test_dataloader_workers_exactly_once_and_reproducible(shards, expect):
    ds = ShardDataset(str(shards), expect, shuffle=4, seed=1)
    first = _epoch(ds, 0, workers=2)
    assert sorted(first) == GOOD and len(first) == len(GOOD)  # every sample exactly once
    assert _epoch(ds, 0, workers=2) == first  # same seed and epoch: same order
    orders = {tuple(_epoch(ds, e, workers=2)) for e in range(1, 6)}
    assert len(orders) > 1 and all(sorted(o) == GOOD for o in orders)


def test_error_policy(shards, tmp_path, expect):
    bad = tmp_path / "bad"
    bad.mkdir()
    for p in shards.iterdir():
        (bad / p.name).write_bytes(p.read_bytes())
    # Break the tokens member of one sample: the index says float16[5, 8].
    import tarfile

    with tarfile.open(shards / "shard-000001.tar") as src, tarfile.open(bad / "shard-000001.tar", "w") as dst:
        for m in src.getmembers():
            data = src.extractfile(m).read()
            if m.name == "demo_0002.tokens.npy":
                buf = io.BytesIO()
                np.save(buf, np.zeros((4, 8), np.float16))
                data = buf.getvalue()
                m.size = len(data)
            dst.addfile(m, io.BytesIO(data))
    with pytest.raises(ShardFormatError, match=r"demo_0002.*float16\[4, 8\].*\[5, 8\]"):
        list(ShardDataset(str(bad), expect))
    kept = [s["sample_id"] for s in ShardDataset(str(bad), expect, on_error="skip")]
    assert kept == [i for i in GOOD if i != "demo_0002"]
    with pytest.raises(ValueError, match="'ignore'"):
        ShardDataset(str(bad), expect, on_error="ignore")
