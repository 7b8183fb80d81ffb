"""From the feature cache to padded batches: open the cache (spec ids checked), expand samples
into task examples, group them, collate them into tensors; one resumable epoch stream.

Stages are small generators, each testable on a plain list:
``samples -> examples(tasks) -> chunks(batch_size) -> Collator``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np
import torch

from trainer.data.tasks import Task
from trainer.model.projector import FEATURE_SLOTS
from trainer.model.prompt import batch_prompts, tokenize_prompt

__all__ = [
    "CacheError",
    "CacheInfo",
    "Collator",
    "EpochStream",
    "Example",
    "chunks",
    "dist_info",
    "examples",
    "open_cache",
]


class CacheError(ValueError):
    """The cache cannot be read as configured: missing, stale spec ids, a slot missing, a bad shard."""


@dataclass(frozen=True)
class CacheInfo:
    """What the trainer needs to know about a cache: its spec ids and feature shapes per slot."""

    source: str
    spec_ids: dict[str, str]
    shapes: dict[str, tuple[int, ...]]
    num_samples: int


def open_cache(
    kind: str,
    source: str,
    expect: Mapping[str, str] | None = None,
    shuffle: int = 0,
    seed: int = 0,
    split: str | None = None,
    slots: Sequence[str] = FEATURE_SLOTS,
) -> tuple[Any, CacheInfo]:
    """Open shards (``kind="shards"``) or a Zarr store (``kind="zarr"``) for the model's slots.

    Args:
        kind: "shards" or "zarr".
        source: the shard folder or the store, a local path or fsspec URL.
        expect: slot -> spec id the config expects; a cache holding other ids is refused
            (featstore's SpecMismatchError names both). Empty: ``slots``, whatever their ids.
        shuffle: shard shuffle buffer in samples (0: index order).
        seed: with the epoch, fixes the order.
        split: Zarr only: only samples of this split.
        slots: the features the model reads (its layout's; default Emotion-LLaMA's four).

    Returns:
        The featstore dataset and its CacheInfo.

    Raises:
        CacheError: featstore's refusal (stale spec ids name both; a missing store or index names it),
            or a cache that lacks one of ``slots``.
        ValueError: naming a bad kind.
    """
    from featstore.errors import FeatstoreError

    try:
        return _open(kind, source, expect, shuffle, seed, split, tuple(slots))
    except FeatstoreError as e:  # a stale cache names both ids; keep featstore's words
        raise CacheError(str(e)) from e


def _open(
    kind: str,
    source: str,
    expect: Mapping[str, str] | None,
    shuffle: int,
    seed: int,
    split: str | None,
    slots: tuple[str, ...],
) -> tuple[Any, CacheInfo]:
    from featstore import ShardDataset, ZarrDataset

    if kind == "shards":
        ds = ShardDataset(source, dict(expect or {}), shuffle=shuffle, seed=seed)
        world = dist_info()[1]
        if len(ds.urls) < world:  # featstore splits shards, not samples, between ranks
            raise CacheError(
                f"shards at {source} are {len(ds.urls)} file(s), fewer than the {world} workers, each of "
                f"which reads whole shards: re-export with more shards (featstore export-wds STORE OUT "
                f"--maxcount K) or train from the store (--cache zarr)"
            )
        specs = {s["name"]: (s["id"], tuple(s["shape"])) for s in ds.specs}
        total = len(ds)
    elif kind == "zarr":
        ds = ZarrDataset(source, dict(expect or {}) or None, specs=None if expect else list(slots), split=split)
        specs = {f.spec.name: (f.spec.id, tuple(f.spec.shape)) for f in ds.feats}
        total = len(ds)
    else:
        raise ValueError(f"cache kind {kind!r} must be 'shards' or 'zarr'")
    missing = [s for s in slots if s not in specs]
    if missing:
        raise CacheError(
            f"cache {source} has features {sorted(specs)}; the model needs {list(slots)} (missing {missing})"
        )
    info = CacheInfo(source, {s: specs[s][0] for s in slots}, {s: specs[s][1] for s in slots}, total)
    return ds, info


@dataclass(frozen=True)
class Example:
    """One training example: a sample's features and texts for one task."""

    sample_id: str
    features: Mapping[str, np.ndarray]
    transcript: str
    task: str
    instruction: str
    answer: str | None


def examples(
    samples: Iterable[Mapping[str, Any]], tasks: Sequence[Task], seed: int, slots: Sequence[str] = FEATURE_SLOTS
) -> Iterator[Example]:
    """Each sample once per task, in task order, with the features of ``slots``.

    Raises:
        ValueError: naming the sample when a task's answer is missing from its annotation.
    """
    for s in samples:
        meta = s["meta"]
        feats = {slot: s[slot] for slot in slots}
        for t in tasks:
            yield Example(
                s["sample_id"],
                feats,
                str(meta.get("transcript") or ""),
                t.name,
                t.instruction(s["sample_id"], seed),
                t.answer(meta),
            )


def chunks(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    """Consecutive lists of ``size`` items; the last may be shorter."""
    if size < 1:
        raise ValueError(f"chunk size {size!r} must be at least 1")
    buf: list[Any] = []
    for item in items:
        buf.append(item)
        if len(buf) == size:
            yield buf
            buf = []
    if buf:
        yield buf


class Collator:
    """Examples -> a batch: token layout from ``trainer.model.prompt``, features stacked as tensors of their dtype.

    Args:
        tokenizer: the LLM's tokenizer (BOS, EOS; pad falls back to UNK, then EOS).
        num_video: tokens at ``<VideoHere>`` (the model's ``num_video_tokens``).
        num_feature: tokens at ``<FeatureHere>``.
        max_txt_len: answer tokens kept, ``</s>`` counted (``tokenize_prompt``); None: all.
    """

    def __init__(self, tokenizer, num_video: int, num_feature: int, max_txt_len: int | None = None) -> None:
        self.tokenizer, self.num_video, self.num_feature = tokenizer, num_video, num_feature
        self.max_txt_len = max_txt_len
        pad = tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else (tokenizer.unk_token_id or tokenizer.eos_token_id)

    def __call__(self, batch: Sequence[Example], generation: bool = False) -> dict[str, Any]:
        """Collate; ``generation`` drops the answers and pads on the left."""
        prompts = [
            tokenize_prompt(
                self.tokenizer,
                e.transcript,
                e.task,
                e.instruction,
                None if generation else e.answer,
                self.max_txt_len,
            )
            for e in batch
        ]
        out: dict[str, Any] = batch_prompts(
            prompts, self.num_video, self.num_feature, self.pad_id, "left" if generation else "right"
        )
        # In the cache's dtype (float16 as stored): half the bytes to pin and copy; the projector casts
        # to its own dtype on the device, exactly (every float16 is a float32).
        out["features"] = {s: torch.from_numpy(np.stack([e.features[s] for e in batch])) for s in batch[0].features}
        out["sample_ids"] = [e.sample_id for e in batch]
        out["tasks"] = [e.task for e in batch]
        return out


def dist_info() -> tuple[int, int]:
    """(rank, world size) of torch.distributed, (0, 1) when it is not running."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


class EpochStream:
    """This rank's batches of an epoch, in an order fixed by (seed, epoch), resumable at a batch count.

    Shards are split between ranks by featstore's ShardDataset (by node, then by
    DataLoader worker); a Zarr store is split here, by sample index. After its
    first pass a rank's stream starts over (``fresh`` False), so that ranks with
    fewer samples can keep pace with the others, as DistributedSampler pads.

    Args:
        dataset: a ShardDataset or ZarrDataset from ``open_cache``.
        tasks: the tasks each sample is expanded into.
        collate: a Collator.
        batch_size: examples per batch on this rank.
        seed: fixes orders and instructions.
        shuffle: shuffle the Zarr sample order per epoch (shards shuffle in the ShardDataset).
        workers: DataLoader worker processes reading the samples (``trainer.data.loader.read_samples``);
            0 reads in this process. A map-style dataset keeps its order with any number; shards
            are split between workers by file, so their order is fixed per number of workers.
        slots: the features each example carries (the model's layout's).
    """

    def __init__(
        self,
        dataset,
        tasks: Sequence[Task],
        collate: Collator,
        batch_size: int,
        seed: int,
        shuffle: bool,
        workers: int = 0,
        slots: Sequence[str] = FEATURE_SLOTS,
    ) -> None:
        self.dataset, self.tasks, self.collate, self.slots = dataset, list(tasks), collate, tuple(slots)
        self.batch_size, self.seed, self.shuffle, self.workers = batch_size, seed, shuffle, workers

    def _samples(self, epoch: int) -> Iterable[Mapping[str, Any]]:
        from trainer.data.loader import read_samples

        if hasattr(self.dataset, "set_epoch"):  # shards: order and rank split inside the dataset
            self.dataset.set_epoch(epoch)
            return read_samples(self.dataset, self.workers)
        order = list(range(len(self.dataset)))
        if self.shuffle:
            random.Random(f"{self.seed}:{epoch}").shuffle(order)
        rank, world = dist_info()
        return read_samples(self.dataset, self.workers, order[rank::world])

    def batches(self, epoch: int, start: int = 0) -> Iterator[tuple[bool, dict[str, Any]]]:
        """Endless ``(fresh, batch)`` pairs of ``epoch`` from batch number ``start`` on.

        Raises:
            ValueError: when this rank has no sample at all.
        """
        n, fresh = 0, True
        while True:
            for group in chunks(examples(self._samples(epoch), self.tasks, self.seed, self.slots), self.batch_size):
                if n >= start:
                    yield fresh, self.collate(group)
                n += 1
            if n == 0:
                raise ValueError(f"no samples for rank {dist_info()[0]} of {dist_info()[1]}: fewer shards than ranks?")
            fresh = False
