"""Data: shards and Zarr give the same examples; a stale cache is refused naming both ids;
tasks, instructions, chunking and the resumable epoch stream; two torch.distributed ranks read each
sample once an epoch between them (shards by file, the store by sample)."""

from __future__ import annotations

import json
import socket

import numpy as np
import pytest
import torch

from tests.trainer.conftest import CACHE_N, annotation
from trainer.data.cache import Collator, EpochStream, chunks, examples, open_cache
from trainer.data.tasks import TASKS, parse_tasks


def test_shards_and_zarr_give_the_same_examples(cache):
    store, shards, ids = cache
    ds_s, info_s = open_cache("shards", str(shards), ids)
    ds_z, info_z = open_cache("zarr", str(store), ids)
    assert info_s.spec_ids == info_z.spec_ids == ids and info_s.num_samples == info_z.num_samples == CACHE_N
    assert info_s.shapes["global"] == (1025, 32)
    tasks = parse_tasks("emotion,reason_v2")
    a, b = list(examples(ds_s, tasks, 0)), list(examples(ds_z, tasks, 0))
    assert [(e.sample_id, e.task, e.answer, e.instruction) for e in a] == [
        (e.sample_id, e.task, e.answer, e.instruction) for e in b
    ]
    for x, y in zip(a, b):
        for slot in x.features:
            np.testing.assert_array_equal(x.features[slot], y.features[slot])
    assert a[0].answer == annotation(0)["label"] and a[1].answer == annotation(0)["reasoning"]


@pytest.mark.parametrize("kind", ["shards", "zarr"])
def test_stale_cache_is_refused_naming_both_ids(cache, kind):
    store, shards, ids = cache
    stale = {**ids, "temporal": "0123456789abcdef"}
    with pytest.raises(Exception, match="0123456789abcdef") as err:
        open_cache(kind, str(shards if kind == "shards" else store), stale)
    assert ids["temporal"] in str(err.value) and type(err.value).__name__ == "CacheError"
    assert type(err.value.__cause__).__name__ == "SpecMismatchError"  # featstore's refusal, surfaced


def test_cache_without_a_slot_is_refused(tmp_path):
    from featstore import FeatureSpec, FeatureStore, export_wds

    store = FeatureStore.create(tmp_path / "s.zarr")
    store.add_samples(["x"], ["00" * 32], [annotation(0)])
    feat = store.add_spec(FeatureSpec(name="local", encoder="E", weights="w", shape=(4,), dtype="float32"), 1)
    feat.write_unit(0, np.zeros((1, 4), np.float32))
    export_wds(store, str(tmp_path / "sh"))
    with pytest.raises(ValueError, match=r"missing \['global', 'temporal', 'audio'\]"):
        open_cache("shards", str(tmp_path / "sh"))


def test_tasks_answers_and_instructions():
    meta = {"sample_id": "s1", **annotation(2)}
    assert TASKS["emotion"].answer(meta) == "happy"
    assert TASKS["reason"].answer(meta) == annotation(2)["caption"]
    assert TASKS["reason_v2"].answer({"smp_reason_caption": "fine"}) == "fine"
    assert TASKS["emotion"].instructions[0] == (
        "Please determine which emotion label in the video represents: "
        "happy, sad, neutral, angry, worried, surprise, fear, contempt, doubt."
    )
    picks = {TASKS["reason"].instruction(f"s{i}", 0) for i in range(40)}
    assert picks == set(TASKS["reason"].instructions)  # the pool is used
    assert TASKS["reason"].instruction("s1", 0) == TASKS["reason"].instruction("s1", 0)
    with pytest.raises(ValueError, match="'s9'.*'reason'.*caption"):
        TASKS["reason"].answer({"sample_id": "s9", "label": "sad"})
    with pytest.raises(ValueError, match="unknown task 'emotions'"):
        parse_tasks("emotion,emotions")


def test_chunks():
    assert list(chunks(range(5), 2)) == [[0, 1], [2, 3], [4]]
    with pytest.raises(ValueError, match="0"):
        list(chunks([1], 0))


def test_epoch_stream_resumes_at_a_batch_and_starts_over(cache, tokenizer):
    _, shards, ids = cache
    ds, _ = open_cache("shards", str(shards), ids, shuffle=4, seed=3)
    stream = EpochStream(ds, parse_tasks("emotion"), Collator(tokenizer, 256, 4), batch_size=3, seed=3, shuffle=True)
    it = stream.batches(epoch=1)
    full = [next(it) for _ in range(5)]
    assert [f for f, _ in full] == [True, True, True, False, False]  # 8 samples: 3 fresh batches
    seen = [s for f, b in full if f for s in b["sample_ids"]]
    assert sorted(seen) == [f"demo_{i:04d}" for i in range(CACHE_N)]
    resumed = stream.batches(epoch=1, start=2)
    for f, b in full[2:]:
        f2, b2 = next(resumed)
        assert f2 == f and b2["sample_ids"] == b["sample_ids"]
    other = [s for _, b in [next(stream.batches(epoch=2))] for s in b["sample_ids"]]
    assert other != full[0][1]["sample_ids"]  # another epoch, another order
    assert full[0][1]["features"]["global"].shape == (3, 1025, 32)


def test_fewer_shards_than_workers_is_refused_with_the_ways_out(cache, monkeypatch):
    import trainer.data.cache

    _, shards, ids = cache
    monkeypatch.setattr(trainer.data.cache, "dist_info", lambda: (0, 8))  # 8 ranks, 4 shards
    with pytest.raises(trainer.data.cache.CacheError, match=r"4 file\(s\), fewer than the 8 workers.*--cache zarr"):
        open_cache("shards", str(shards), ids)
    open_cache("zarr", str(cache[0]), ids)  # the store splits by sample


def _rank_epochs(rank: int, world: int, port: int, sources: dict[str, str], out: str) -> None:
    """One rank of a gloo group (a spawned process): its sample ids in epochs 0 and 1 of each cache kind."""
    import os

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
    try:
        seen = {}
        for kind, source in sources.items():
            ds, _ = open_cache(kind, source, shuffle=4, seed=5)
            stream = EpochStream(ds, parse_tasks("emotion"), lambda group: [e.sample_id for e in group], 2, 5, True)
            for epoch in (0, 1):
                ids = seen[f"{kind} {epoch}"] = []
                for fresh, batch in stream.batches(epoch):
                    if not fresh:
                        break
                    ids += batch
        with open(f"{out}/rank{rank}.json", "w") as f:
            json.dump(seen, f)
    finally:
        torch.distributed.destroy_process_group()


def test_two_ranks_read_each_sample_once_an_epoch(cache, tmp_path):
    """The split Ray Train's workers rely on, under a real torch.distributed group of two processes:
    shards by file, the store by sample."""
    store, shards, _ = cache
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    sources = {"shards": str(shards), "zarr": str(store)}
    torch.multiprocessing.spawn(_rank_epochs, args=(2, port, sources, str(tmp_path)), nprocs=2)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    everything = [f"demo_{i:04d}" for i in range(CACHE_N)]
    for kind in sources:
        for epoch in (0, 1):
            per_rank = [r[f"{kind} {epoch}"] for r in ranks]
            assert [len(ids) for ids in per_rank] == [CACHE_N // 2] * 2, (kind, epoch, per_rank)
            assert sorted(per_rank[0] + per_rank[1]) == everything, (kind, epoch, per_rank)
        assert [r[f"{kind} 0"] for r in ranks] != [r[f"{kind} 1"] for r in ranks], kind  # each epoch its order
