"""Readers meeting an unreadable chunk: ZarrDataset raises naming the store, spec,
unit and the repair command, or skips that chunk's samples under ``skip`` with a
log line; export-wds fails with the same message."""

from __future__ import annotations

import logging

import pytest

from featstore.cli import main
from featstore.errors import CorruptChunkError
from featstore.shards.reader import ZarrDataset
from tests.featstore.store.test_repair import corrupt, fill


@pytest.fixture()
def damaged(tmp_path):
    root = tmp_path / "s.zarr"
    store = fill(root)
    corrupt(store, "tokens", 2, "data", "garbage")  # unit 2 (8-11), its last data chunk: samples 10-11
    return root, store.feature("tokens").spec.key


def test_zarr_dataset_raises_naming_the_repair(damaged):
    root, key = damaged
    ds = ZarrDataset(str(root))
    with pytest.raises(CorruptChunkError) as e:
        list(ds)
    msg = str(e.value)
    assert f"store {root}: spec {key} unit 2: data chunk is unreadable" in msg
    assert f"featstore verify {root} --repair" in msg


def test_zarr_dataset_skips_the_chunk_under_skip(damaged, caplog):
    root, key = damaged
    with caplog.at_level(logging.WARNING, logger="featstore.shards.reader"):
        got = [s["sample_id"] for s in ZarrDataset(str(root), on_error="skip")]
    lost = {"clip_0010", "clip_0011", "clip_0007"}  # the unreadable chunk, and pooled's failed sample
    assert got == [f"clip_{i:04d}" for i in range(20) if f"clip_{i:04d}" not in lost]
    hits = [r.getMessage() for r in caplog.records if f"spec {key} unit 2" in r.getMessage()]
    assert len(hits) == 1 and "--repair" in hits[0]


def test_corrupt_status_chunk_is_named_when_opening(tmp_path):
    root = tmp_path / "s.zarr"
    store = fill(root)
    corrupt(store, "pooled", 1, "status", "truncate")
    key = store.feature("pooled").spec.key
    with pytest.raises(CorruptChunkError, match=rf"spec {key} unit 1: status chunk .*featstore verify {root} --repair"):
        ZarrDataset(str(root))


def test_export_wds_fails_with_the_same_message(damaged, tmp_path, capsys):
    root, key = damaged
    rc = main(["export-wds", str(root), str(tmp_path / "shards")])
    err = capsys.readouterr().err
    assert rc == 2
    assert f"spec {key} unit 2: data chunk is unreadable" in err and f"featstore verify {root} --repair" in err
