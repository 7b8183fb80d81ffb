"""The loader off the critical path: the prefetch thread and DataLoader workers give the very batches
(ids, features, tokens) of the plain in-process stream, in the same order, and training with them
gives the same losses; a shard epoch cannot resume mid-way with another number of workers; answers
are cut at max_txt_len as the original's tokenizer call cuts them."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch

from tests.trainer.conftest import CACHE_N
from trainer.data.cache import Collator, EpochStream, open_cache
from trainer.data.loader import Prefetcher, pin_batch, read_samples
from trainer.data.tasks import parse_tasks
from trainer.model.prompt import tokenize_prompt
from trainer.train.config import TrainConfig


def _stream(cache, tokenizer, kind: str, workers: int) -> EpochStream:
    store, shards, ids = cache
    ds, _ = open_cache(kind, str(shards if kind == "shards" else store), ids, shuffle=4, seed=5)
    return EpochStream(ds, parse_tasks("emotion,reason"), Collator(tokenizer, 256, 4), 3, 5, True, workers)


def _take(stream: EpochStream, epoch: int, n: int, start: int = 0, prefetch: int = 0) -> list:
    it = stream.batches(epoch, start)
    if prefetch:
        it = Prefetcher(it, prefetch)
    try:
        return [next(it) for _ in range(n)]
    finally:
        if prefetch:
            it.close()


def _assert_same(a: list, b: list) -> None:
    assert [(f, x["sample_ids"], x["tasks"]) for f, x in a] == [(f, x["sample_ids"], x["tasks"]) for f, x in b]
    for (_, x), (_, y) in zip(a, b):
        for key in ("input_ids", "labels", "attention_mask", "feature_mask"):
            assert torch.equal(x[key], y[key]), key
        for slot in x["features"]:
            assert torch.equal(x["features"][slot], y["features"][slot]), slot


def test_prefetcher_keeps_items_order_and_errors():
    assert list(Prefetcher(iter(range(100)), depth=3)) == list(range(100))

    def broken():
        yield 1
        raise RuntimeError("shard 7 is truncated")

    it = Prefetcher(broken(), depth=2)
    assert next(it) == 1
    with pytest.raises(RuntimeError, match="shard 7 is truncated"):
        next(it)
    with pytest.raises(ValueError, match="depth 0"):
        Prefetcher(iter([]), depth=0)


def test_prefetcher_reads_ahead_and_close_stops_and_closes_the_source():
    read, closed = [], threading.Event()

    def source():
        try:
            for i in range(1000):
                read.append(i)
                yield i
        finally:
            closed.set()

    it = Prefetcher(source(), depth=2)
    assert next(it) == 0
    deadline = time.monotonic() + 10
    while len(read) < 3 and time.monotonic() < deadline:  # ahead of the consumer, bounded by the depth
        time.sleep(0.01)
    assert 3 <= len(read) <= 4
    it.close()
    assert closed.is_set() and len(read) <= 5
    with pytest.raises(StopIteration):
        next(it)


@pytest.mark.parametrize("kind", ["zarr", "shards"])
def test_prefetch_thread_gives_the_plain_batches(cache, tokenizer, kind):
    stream = _stream(cache, tokenizer, kind, workers=0)
    plain = _take(stream, 1, 8)
    _assert_same(_take(stream, 1, 8, prefetch=2), plain)
    _assert_same(_take(stream, 1, 5, start=3, prefetch=1), plain[3:])  # a resumed position


def test_zarr_loader_workers_keep_the_order(cache, tokenizer):
    plain = _take(_stream(cache, tokenizer, "zarr", workers=0), 2, 7)
    _assert_same(_take(_stream(cache, tokenizer, "zarr", workers=2), 2, 7, prefetch=2), plain)


def test_shard_loader_workers_cover_each_sample_once_in_a_fixed_order(cache, tokenizer):
    a = _take(_stream(cache, tokenizer, "shards", workers=2), 1, 6)  # 16 examples: 6 batches, the last short
    _assert_same(_take(_stream(cache, tokenizer, "shards", workers=2), 1, 6, prefetch=2), a)
    fresh = [s for f, b in a if f for s, t in zip(b["sample_ids"], b["tasks"]) if t == "emotion"]
    assert sorted(fresh) == [f"demo_{i:04d}" for i in range(CACHE_N)]
    assert all(f for f, _ in a)


def test_workers_hand_over_tensors_not_pickled_arrays(cache):
    store, _, ids = cache
    ds, _ = open_cache("zarr", str(store), ids)
    got = list(read_samples(ds, workers=2, order=[3, 1, 2]))
    assert [s["sample_id"] for s in got] == [ds[i]["sample_id"] for i in (3, 1, 2)]
    assert isinstance(got[0]["local"], torch.Tensor)
    np.testing.assert_array_equal(got[0]["local"].numpy(), ds[3]["local"])


def test_pin_batch_keeps_values():
    batch = {"input_ids": torch.arange(4), "features": {"local": torch.ones(2, 3)}, "sample_ids": ["a"]}
    if not torch.cuda.is_available():  # pinning needs a CUDA runtime; the values must not change either way
        pytest.skip("pin_memory needs CUDA")
    out = pin_batch(batch)
    assert out["input_ids"].is_pinned() and out["features"]["local"].is_pinned()
    assert torch.equal(out["input_ids"], batch["input_ids"]) and out["sample_ids"] == ["a"]


def _cfg(cache_, tiny_llm, out, **kw) -> TrainConfig:
    store, shards, ids = cache_
    base = dict(
        shards=str(shards),
        store=str(store),
        tiny_dir=str(tiny_llm),
        out_dir=str(out),
        expect=ids,
        progress=False,
        resume="never",
        batch_size=2,
        shuffle_buffer=4,
        lr=1e-3,
        warmup_steps=2,
        warmup_lr=1e-4,
        min_lr=1e-4,
        max_steps=5,
    )
    return TrainConfig(**{**base, **kw})


def _losses(cfg: TrainConfig) -> list[float]:
    import json
    from pathlib import Path

    from trainer.train.recipe import TrainRecipe

    recipe = TrainRecipe(cfg)
    recipe.setup()
    recipe.train()
    return [json.loads(line)["loss"] for line in (Path(cfg.out_dir) / "losses.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("kind", ["shards", "zarr"])
def test_training_with_prefetch_and_workers_gives_the_plain_losses(cache, tiny_llm, tmp_path, kind):
    plain = _losses(_cfg(cache, tiny_llm, tmp_path / "plain", cache=kind, prefetch=0))
    fed = _losses(_cfg(cache, tiny_llm, tmp_path / "fed", cache=kind, prefetch=2))
    assert fed == plain  # bitwise: the same batches in the same order
    if kind == "zarr":
        assert _losses(_cfg(cache, tiny_llm, tmp_path / "w2", cache=kind, prefetch=2, loader_workers=2)) == plain


def test_mid_epoch_shard_resume_with_other_loader_workers_is_refused(cache, tiny_llm, tmp_path):
    from trainer.train.recipe import TrainRecipe

    cfg = _cfg(cache, tiny_llm, tmp_path / "run", max_steps=2, loader_workers=2, resume="auto")
    _losses(cfg)
    again = TrainRecipe(_cfg(cache, tiny_llm, tmp_path / "run", max_steps=4, loader_workers=1, resume="auto"))
    with pytest.raises(ValueError, match=r"--loader-workers 2.*not 1"):
        from trainer.train.recipe import resolve_resume

        again.setup(resolve_resume(again.cfg))


def test_max_txt_len_cuts_the_answer_as_the_original_tokenizer_call(tokenizer):
    answer = "The face, the tone and the words all point to a worried person who is about to cry."
    full = tokenize_prompt(tokenizer, "hi", "emotion", "Which?", answer)
    for n in (1, 5, len(full.answer) - 1, len(full.answer), len(full.answer) + 3):
        cut = tokenize_prompt(tokenizer, "hi", "emotion", "Which?", answer, max_txt_len=n)
        # minigpt_base.py: llama_tokenizer(answer + end_sym, truncation=True, max_length=max_txt_len)
        ref = tokenizer(answer + tokenizer.eos_token, truncation=True, max_length=n, add_special_tokens=False)
        assert list(cut.answer) == ref["input_ids"], n
        assert cut.pieces == full.pieces
    assert tokenize_prompt(tokenizer, "hi", "emotion", "Which?", answer, 5).answer[-1] != tokenizer.eos_token_id


def test_bad_loader_options_are_named():
    with pytest.raises(ValueError, match="prefetch -1"):
        TrainConfig(prefetch=-1)
    with pytest.raises(ValueError, match="max_txt_len 0"):
        TrainConfig(max_txt_len=0)
    with pytest.raises(ValueError, match="loader_workers 2.*--online"):
        TrainConfig(online=True, loader_workers=2)
