"""The demo round trip on real demo clips: every manifest format of the demo agrees,
the store fills, verifies, and a re-run does nothing."""

from __future__ import annotations

import numpy as np
import pytest

from featstore.demo import roundtrip
from featstore.demo.dataset import make_demo_dataset
from featstore.manifest import load_manifest
from featstore.store import FeatureStore

N = 4


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return make_demo_dataset(tmp_path_factory.mktemp("demo") / "data", n=N)


def test_demo_loads_in_every_format(demo):
    csv = load_manifest(demo, format="csv")
    merr = load_manifest(demo, format="merr")
    mer = load_manifest(demo, format="mer2023")
    wav = load_manifest(demo, annotation="manifest_wav.jsonl")
    for m in (csv, merr, mer, wav):
        assert m.ids == [f"demo_{i:04d}" for i in range(N)] and not m.problems
        assert [s.label for s in m] == ["neutral", "angry", "happy", "sad"]
        assert [s.video for s in m] == [f"clips/demo_{i:04d}.mp4" for i in range(N)]
    assert [s.media_hash for s in csv] == [s.media_hash for s in merr] == [s.media_hash for s in mer]
    assert all(s.caption and s.reasoning and "peak_index" in s.extra for s in merr)
    assert [s.transcript for s in merr] == [s.transcript for s in csv]
    # Separate audio files are part of the media, so they change the key.
    assert [s.audio for s in wav] == [f"audio/demo_{i:04d}.wav" for i in range(N)]
    assert all(a.media_hash != b.media_hash for a, b in zip(wav, csv))


def test_roundtrip_fills_store_then_does_nothing(demo, tmp_path, capsys):
    out = tmp_path / "out"
    (out / "data").parent.mkdir(parents=True, exist_ok=True)
    (out / "data").symlink_to(demo, target_is_directory=True)
    assert roundtrip.main([str(out)]) == 0
    assert "wrote 1 unit(s)" in capsys.readouterr().out
    store = FeatureStore.open(out / "store.zarr")
    thumb = store.feature("thumb")
    assert thumb.counts() == {"committed": N, "failed": 0, "pending": 0}
    expected = roundtrip.thumbnail(demo / "clips" / "demo_0002.mp4")
    np.testing.assert_array_equal(thumb.read_id("demo_0002"), expected)
    assert not np.array_equal(thumb.read_id("demo_0001"), expected)
    assert roundtrip.main([str(out)]) == 0
    assert "wrote 0 unit(s)" in capsys.readouterr().out


def test_edited_clip_is_recomputed(demo, tmp_path, capsys):
    data = tmp_path / "out" / "data"
    make_demo_dataset(data, n=2)
    assert roundtrip.main([str(tmp_path / "out")]) == 0
    (data / "clips" / "demo_0001.mp4").write_bytes((data / "clips" / "demo_0000.mp4").read_bytes())
    capsys.readouterr()
    assert roundtrip.main([str(tmp_path / "out")]) == 0
    assert "'changed': 1" in capsys.readouterr().out
    thumb = FeatureStore.open(tmp_path / "out" / "store.zarr").feature("thumb")
    np.testing.assert_array_equal(thumb.read_id("demo_0001"), thumb.read_id("demo_0000"))


def test_store_keeps_manifest_annotations(demo, tmp_path):
    manifest = load_manifest(demo, format="merr")
    store = FeatureStore.create(tmp_path / "s.zarr")
    assert store.add_manifest(manifest)["added"] == N
    ann = FeatureStore.open(tmp_path / "s.zarr").annotation("demo_0001")
    sample = manifest.get("demo_0001")
    assert ann["label"] == "angry" and ann["caption"] == sample.caption and ann["reasoning"] == sample.reasoning
    assert ann["video"] == "clips/demo_0001.mp4" and ann["extra"]["peak_index"] == sample.extra["peak_index"]
    assert "media_hash" not in ann and "audio" not in ann
