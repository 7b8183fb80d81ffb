"""FeatureStore: index, specs, unit writes, reads, appends, failures, fsspec URLs."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import zarr

from featstore.errors import SpecMismatchError, StoreError
from featstore.spec import FeatureSpec
from featstore.store import FeatureStore
from tests.featstore.store import store_worker as w


def h(x: str) -> str:
    return hashlib.sha256(x.encode()).hexdigest()


@pytest.fixture()
def store(tmp_path) -> FeatureStore:
    return w.make_store(tmp_path / "s.zarr", 20)


def test_create_refuses_existing_and_open_refuses_missing(tmp_path, store):
    with pytest.raises(StoreError, match="already"):
        FeatureStore.create(store.url)
    with pytest.raises(StoreError, match="no featstore"):
        FeatureStore.open(tmp_path / "nope.zarr")
    zarr.open_group(tmp_path / "plain.zarr", mode="w")
    with pytest.raises(StoreError, match="not a featstore"):
        FeatureStore.open(tmp_path / "plain.zarr")


def test_index_round_trip(store):
    again = FeatureStore.open(store.url)
    assert again.sample_ids == w.sample_ids(20)
    assert again.media_hash("clip_0003") == w.media_hash("clip_0003")
    assert again.index_of("clip_0019") == 19
    with pytest.raises(KeyError, match="clip_9999"):
        again.index_of("clip_9999")


def test_bad_samples_refused(store):
    with pytest.raises(ValueError, match="not a 64-digit"):
        store.add_samples(["x"], ["abc"])
    with pytest.raises(ValueError, match="duplicate sample ids: \\['a'\\]"):
        store.add_samples(["a", "a"], [h("1"), h("2")])
    with pytest.raises(ValueError, match="longer than"):
        store.add_samples(["x" * 200], [h("1")])


def test_write_reads_and_noop_rewrite(store):
    feat = store.feature("pooled")
    assert feat.unit_bounds(2) == (16, 20) and feat.num_units == 3
    ids = store.sample_ids[8:16]
    data = w.features(feat.spec, ids)
    assert feat.write_unit(1, data) is True
    assert feat.write_unit(1, data + 1) is False  # committed: a rewrite is a no-op
    np.testing.assert_array_equal(feat.read(8), data[0].astype(np.float16))
    np.testing.assert_array_equal(feat.read_id("clip_0015"), data[7].astype(np.float16))
    block, status = feat.read_unit(1)
    np.testing.assert_array_equal(block, data.astype(np.float16))
    assert status.tolist() == [1] * 8
    assert [sid for sid, _ in feat.iter_committed()] == ids
    with pytest.raises(KeyError, match="clip_0000.*pending"):
        feat.read(0)


def test_failures_recorded_with_reason(store):
    feat = store.feature("pooled")
    ids = store.sample_ids[0:8]
    feat.write_unit(0, w.features(feat.spec, ids), failures={"clip_0002": ("decode_audio", "no audio stream")})
    assert feat.failures() == [
        {"sample_id": "clip_0002", "index": 2, "stage": "decode_audio", "reason": "no audio stream"}
    ]
    assert feat.counts() == {"committed": 7, "failed": 1, "pending": 12}
    assert feat.pending_units() == [1, 2] and feat.pending_units(retry_failed=True) == [0, 1, 2]
    with pytest.raises(KeyError, match="failed"):
        feat.read_id("clip_0002")


def test_write_validates_shape_finiteness_and_failure_ids(store):
    feat = store.feature("pooled")
    with pytest.raises(ValueError, match=r"data shape \(8, 63\)"):
        feat.write_unit(0, np.zeros((8, 63)))
    bad = np.zeros((8, 64))
    bad[3, 5] = np.nan
    with pytest.raises(ValueError, match="clip_0003"):
        feat.write_unit(0, bad)
    with pytest.raises(ValueError, match="clip_0012"):
        feat.write_unit(0, np.zeros((8, 64)), failures={"clip_0012": ("x", "y")})
    with pytest.raises(IndexError, match="unit 3"):
        feat.write_unit(3, np.zeros((8, 64)))
    assert feat.counts()["pending"] == 20  # nothing half-written


def test_append_samples_and_changed_media(store):
    feat = store.feature("pooled")
    for u in range(feat.num_units):
        a, b = feat.unit_bounds(u)
        feat.write_unit(u, w.features(feat.spec, store.sample_ids[a:b]))
    assert feat.counts()["pending"] == 0
    res = store.add_samples(["clip_0001", "clip_0020", "new"], [h("edited"), h("n20"), h("new")])
    assert res == {"added": 2, "changed": 1, "unchanged": 0}
    assert feat.num_samples == 22
    # The edited clip's unit and the unit that grew are pending; the rest stay committed.
    assert feat.pending_units() == [0, 2]
    with pytest.raises(KeyError, match="stale"):
        feat.read_id("clip_0001")
    again = FeatureStore.open(store.url)
    assert again.feature("pooled").counts() == {"committed": 19, "failed": 0, "pending": 3}
    assert again.feature("tokens").num_samples == 22


def test_add_spec_is_idempotent_and_versioned(store):
    spec = store.feature("pooled").spec
    assert store.add_spec(spec).unit_size == 8
    with pytest.raises(SpecMismatchError, match="unit_size 8"):
        store.add_spec(spec, unit_size=16)
    v2 = FeatureSpec(**{**spec.to_dict(), "shape": (64,), "weights": "w1-finetuned"})
    store.add_spec(v2, unit_size=8)
    with pytest.raises(KeyError, match="several specs named 'pooled'"):
        store.feature("pooled")
    assert store.feature(v2.id).spec == v2
    with pytest.raises(ValueError, match="power of two"):
        store.add_spec(FeatureSpec(name="x", encoder="e", weights="w", shape=(4,)), unit_size=6)


def test_default_unit_size_targets_chunk_bytes(store):
    tok = FeatureSpec(name="global", encoder="Blip2VisionModel", weights="w", shape=(1025, 1408), dtype="float16")
    pooled = FeatureSpec(name="local", encoder="ViTMAEModel", weights="w", shape=(1024,), dtype="float16")
    assert store.add_spec(tok).unit_size == 4  # 2.9 MB a sample -> ~11.5 MB chunks
    assert store.add_spec(pooled).unit_size == 256


def test_chunk_size_per_spec_inside_the_units(tmp_path):
    """A job's 16-sample units: the EVA tokens get 4-sample data chunks (the store
    benchmark's best), pooled features one chunk a unit; commits stay one chunk a unit."""
    store = FeatureStore.create(tmp_path / "c.zarr")
    store.add_samples([f"s{i}" for i in range(40)], [h(f"s{i}") for i in range(40)])
    tok = FeatureSpec(name="global", encoder="Blip2VisionModel", weights="w", shape=(1025, 1408), dtype="float16")
    pooled = FeatureSpec(name="local", encoder="ViTMAEModel", weights="w", shape=(1024,), dtype="float16")
    t, p = store.add_spec(tok, unit_size=16), store.add_spec(pooled, unit_size=16)
    assert (t.unit_size, t.chunk_size, p.unit_size, p.chunk_size) == (16, 4, 16, 16)
    assert t.raw("data").chunks == (4, 1025, 1408) and t.raw("status").chunks == (16,)
    assert p.raw("data").chunks == (16, 1024)
    again = FeatureStore.open(store.url)
    assert again.feature(tok.id).chunk_size == 4 and again.feature(pooled.id).chunk_size == 16
    assert store.add_spec(tok, unit_size=16, chunk_size=4) is t
    with pytest.raises(SpecMismatchError, match="chunk_size 4, not 8"):
        store.add_spec(tok, unit_size=16, chunk_size=8)
    x = FeatureSpec(name="x", encoder="e", weights="w", shape=(4,))
    for bad in (32, 3, 0):
        with pytest.raises(ValueError, match=f"chunk_size {bad} must be a power of two no larger than unit_size 16"):
            store.add_spec(x, unit_size=16, chunk_size=bad)


def test_fsspec_memory_url():
    url = "memory://featstore-test/s.zarr"
    store = FeatureStore.create(url)
    store.add_samples(["a", "b"], [h("a"), h("b")])
    feat = store.add_spec(FeatureSpec(name="x", encoder="e", weights="w", shape=(3,)), unit_size=2)
    feat.write_unit(0, np.ones((2, 3)))
    np.testing.assert_array_equal(FeatureStore.open(url).feature("x").read_id("b"), np.ones(3, np.float16))


def test_annotations_round_trip_and_update(store):
    anns = [{"label": "happy", "transcript": f"line {i}", "extra": {"peak_index": i}} for i in range(20)]
    store.add_samples(store.sample_ids, [w.media_hash(s) for s in store.sample_ids], anns)
    again = FeatureStore.open(store.url, "r+")
    assert again.annotation("clip_0004") == anns[4] and again.annotations() == anns
    # A corrected label and a new sample; features are not invalidated by annotations.
    res = again.add_samples(
        ["clip_0004", "new"],
        [w.media_hash("clip_0004"), h("new")],
        [{"label": "sad"}, {"label": "fear", "transcript": "ü"}],
    )
    assert res == {"added": 1, "changed": 0, "unchanged": 1}
    third = FeatureStore.open(store.url)
    assert third.annotation("clip_0004") == {"label": "sad"} and third.annotation("new")["transcript"] == "ü"
    assert third.annotation("clip_0005") == anns[5]
    with pytest.raises(ValueError, match="clip_0001.*not JSON"):
        again.add_samples(["clip_0001"], [w.media_hash("clip_0001")], [{"x": float("nan")}])


def test_samples_without_annotations_read_as_empty(store):
    assert store.annotation("clip_0000") == {}
