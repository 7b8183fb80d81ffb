"""Training-side readers: stream WebDataset shards, or read a Zarr store, as the same sample dicts.

A sample is ``{"__key__": str, "sample_id": str, "meta": dict, <spec name>: np.ndarray, ...}``.
The shard reader is a chain of small generator stages (``shard_urls`` ->
``split_by_node`` -> ``split_by_worker`` -> ``open_shards`` -> tar expansion and
grouping -> ``shuffle`` -> ``decode``), each testable on a plain list, with the
error policy as a parameter: raise by default, skip-and-log when asked.
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import fsspec
import numpy as np
import webdataset as wds
from torch.utils.data import Dataset, IterableDataset
from webdataset.gopen import gopen
from webdataset.tariterators import group_by_keys

from featstore.errors import CorruptChunkError, ShardFormatError, StoreError
from featstore.shards.export import INDEX_FORMAT, INDEX_NAME, INDEX_VERSION, tar_key
from featstore.shards.tar import expand_shards, npy_array
from featstore.store.remote import describe
from featstore.store.selection import DEFAULT_SPLIT_RATIOS, check_expected, resolve_specs, select
from featstore.store.store import FeatureStore

log = logging.getLogger(__name__)
POLICIES = ("raise", "skip")


def make_handler(policy: str) -> Callable[[Exception], bool]:
    """WebDataset-style handler: ``raise`` re-raises, ``skip`` logs and continues."""
    if policy not in POLICIES:
        raise ValueError(f"error policy {policy!r} must be one of {POLICIES}")

    def handler(exn: Exception) -> bool:
        if policy == "raise":
            raise exn
        log.warning("skipping after error: %s", exn)
        return True

    return handler


def read_index(source: str) -> dict[str, Any]:
    """Load and check ``shards.json`` (``source`` is the folder or the index file itself).

    Raises:
        ShardFormatError: naming the file when it is missing or not a featstore index.
    """
    url = source if source.endswith(".json") else f"{source.rstrip('/')}/{INDEX_NAME}"
    try:
        with fsspec.open(url, "r") as f:
            index = json.load(f)
    except Exception as e:
        problem = describe(url, e)  # no such bucket, access denied, endpoint unreachable
        if problem or isinstance(e, (OSError, json.JSONDecodeError)):
            raise ShardFormatError(f"cannot read shard index {problem or f'{url}: {e}'}") from None
        raise
    if index.get("format") != INDEX_FORMAT or index.get("version") != INDEX_VERSION:
        raise ShardFormatError(f"{url} is not a {INDEX_FORMAT} v{INDEX_VERSION} index")
    return index


# ---- stages --------------------------------------------------------------------
def shard_urls(urls: Sequence[str], seed: int, epoch: int, shuffle: bool) -> Iterator[dict[str, str]]:
    """Shard URLs, in an order that depends only on (seed, epoch)."""
    order = list(urls)
    if shuffle:
        random.Random(f"{seed}:{epoch}").shuffle(order)
    for url in order:
        yield {"url": url}


def open_shards(src: Iterable[dict], handler: Callable[[Exception], bool]) -> Iterator[dict]:
    """Open each shard: ``pipe:`` commands through webdataset's gopen, URLs through fsspec."""
    for item in src:
        url = item["url"]
        try:
            stream = gopen(url) if url.startswith("pipe:") or "://" not in url else fsspec.open(url, "rb").open()
            yield {**item, "stream": stream}
        except Exception as e:  # an unreachable shard goes through the error policy
            if not handler(ShardFormatError(f"cannot open shard {describe(url, e) or f'{url}: {e}'}")):
                break


def shuffle(src: Iterable[dict], bufsize: int, rng: random.Random) -> Iterator[dict]:
    """Shuffle within a buffer of ``bufsize`` samples (0: keep order)."""
    if bufsize <= 1:
        yield from src
        return
    buf: list[dict] = []
    for sample in src:
        buf.append(sample)
        if len(buf) >= bufsize:
            yield buf.pop(rng.randrange(len(buf)))
    while buf:
        yield buf.pop(rng.randrange(len(buf)))


def decode(src: Iterable[dict], specs: Sequence[Mapping], handler: Callable[[Exception], bool]) -> Iterator[dict]:
    """Raw tar members -> sample dicts, every feature checked against the index."""
    for raw in src:
        try:
            yield decode_sample(raw, specs)
        except Exception as e:
            if not handler(e if isinstance(e, ShardFormatError) else ShardFormatError(f"{raw.get('__key__')}: {e}")):
                break


class _Where:
    """Names a sample (and one of its members) in error messages; built only when printed."""

    def __init__(self, raw: Mapping[str, Any], member: str | None = None) -> None:
        self.raw, self.name = raw, member

    def member(self, name: str) -> _Where:
        return _Where(self.raw, name)

    def __str__(self) -> str:
        where = f"sample {self.raw.get('__key__')!r} in {self.raw.get('__url__')}"
        return where if self.name is None else f"{where}: {self.name}.npy"


def decode_sample(raw: Mapping[str, Any], specs: Sequence[Mapping]) -> dict[str, Any]:
    """One grouped tar sample -> ``{"__key__", "sample_id", "meta", <spec>: array}``.

    Raises:
        ShardFormatError: naming the sample and shard when a member is missing or mismatched.
    """
    where = _Where(raw)
    if "json" not in raw:
        raise ShardFormatError(f"{where}: no .json member")
    meta = json.loads(bytes(raw["json"]))
    out = {"__key__": raw["__key__"], "sample_id": meta.get("sample_id"), "meta": meta}
    for spec in specs:
        name = spec["name"]
        blob = raw.get(f"{name}.npy")
        if blob is None:
            raise ShardFormatError(f"{where}: no {name}.npy member")
        arr = npy_array(blob, where.member(name))
        if list(arr.shape) != list(spec["shape"]) or arr.dtype != np.dtype(spec["dtype"]):
            raise ShardFormatError(
                f"{where}: {name} is {arr.dtype}{list(arr.shape)}, index says {spec['dtype']}{spec['shape']}"
            )
        out[name] = arr
    return out


# ---- datasets -----------------------------------------------------------------
class ShardDataset(IterableDataset):
    """Stream WebDataset shards written by ``export_wds``.

    Args:
        source: the shard folder (local path, fsspec URL) holding ``shards.json``.
        expect: ``{spec name: spec id}`` the caller's config expects; a mismatch is refused.
        shuffle: shuffle buffer size in samples (0: index order, no shard shuffle).
        seed: with the epoch (``set_epoch``), fixes the order.
        on_error: ``"raise"`` (default) or ``"skip"`` (log and continue).
        urls: explicit shard URLs (e.g. ``pipe:`` commands) instead of the index's names.

    Raises:
        SpecMismatchError: naming expected and found ids.
    """

    def __init__(
        self,
        source: str,
        expect: Mapping[str, str] | None = None,
        shuffle: int = 0,
        seed: int = 0,
        on_error: str = "raise",
        urls: Sequence[str] | None = None,
    ) -> None:
        self.source = str(source)
        self.index = read_index(self.source)
        self.specs = self.index["specs"]
        check_expected({s["name"]: s["id"] for s in self.specs}, expect, f"shards at {self.source}")
        if expect:
            self.specs = [s for s in self.specs if s["name"] in expect]
        base = self.source[: -len(INDEX_NAME)] if self.source.endswith(".json") else self.source.rstrip("/") + "/"
        self.urls = list(urls) if urls is not None else [base + s["name"] for s in self.index["shards"]]
        self.bufsize, self.seed, self.epoch = int(shuffle), int(seed), 0
        self.handler = make_handler(on_error)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order the next iteration produces."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return int(self.index["total_samples"])

    def __iter__(self) -> Iterator[dict[str, Any]]:
        rank, world, worker, workers = wds.utils.pytorch_worker_info()
        rng = random.Random(f"{self.seed}:{self.epoch}:{rank}:{worker}")
        stages = shard_urls(self.urls, self.seed, self.epoch, shuffle=self.bufsize > 0)
        stages = wds.shardlists.split_by_node(stages)
        stages = wds.shardlists.split_by_worker(stages)
        stages = open_shards(stages, self.handler)
        stages = group_by_keys(expand_shards(stages, self.handler), handler=self.handler)
        stages = shuffle(stages, self.bufsize, rng)
        return decode(stages, self.specs, self.handler)


class ZarrDataset(Dataset):
    """Random access to committed samples of a store, as the same dicts as ``ShardDataset``.

    Args:
        store: a FeatureStore or its URL.
        expect: ``{spec name: spec id}``; a mismatch is refused.
        specs: spec names to read (default: those in ``expect``, else all).
        split: only samples of this split.
        on_error: what iteration does with a sample whose chunk is unreadable:
            ``"raise"`` (default) a CorruptChunkError naming the store, spec, unit
            and the repair command; ``"skip"`` log it and leave out the samples of
            that unreadable data chunk (a unit may hold several). Indexing
            (``ds[i]``) always raises.
    """

    def __init__(
        self,
        store: FeatureStore | str,
        expect: Mapping[str, str] | None = None,
        specs: Sequence[str] | None = None,
        split: str | None = None,
        ratios: Sequence[float] = DEFAULT_SPLIT_RATIOS,
        on_error: str = "raise",
    ) -> None:
        self.handler = make_handler(on_error)
        self.store = store if isinstance(store, FeatureStore) else FeatureStore.open(store)
        self.feats = resolve_specs(self.store, specs, expect)
        self.selection = select(self.store, self.feats, split, ratios)
        self._annotations = self.store.annotations()
        # The last data chunk read per spec: zarr decodes whole chunks, so the samples of a unit read
        # one by one decode it once, not once each (one chunk a spec held: 11.5 MB for the EVA tokens).
        self._chunk: dict[str, tuple[int, np.ndarray]] = {}

    def __len__(self) -> int:
        return len(self.selection.indices)

    def __getitem__(self, i: int) -> dict[str, Any]:
        row = self.selection.indices[i]
        sid = self.store.sample_ids[row]
        out: dict[str, Any] = {
            "__key__": tar_key(sid),
            "sample_id": sid,
            "meta": {"sample_id": sid, **self._annotations[row]},
        }
        for f in self.feats:  # selection checked these rows are committed: read the data directly
            out[f.spec.name] = self._row(f, row)
        return out

    def _row(self, feat: Any, row: int) -> np.ndarray:
        size = feat.chunk_size
        chunk = row // size
        held = self._chunk.get(feat.spec.key)
        if held is None or held[0] != chunk:
            start = chunk * size
            held = (chunk, feat.data_rows(start, min(start + size, len(self.store.sample_ids))))
            self._chunk[feat.spec.key] = held
        return held[1][row - chunk * size].copy()  # a copy: the sample outlives the chunk held

    def __iter__(self) -> Iterator[dict[str, Any]]:
        bad: set[tuple[str, int]] = set()  # (spec, data chunk) found unreadable: skip without re-reading
        chunk = {f.spec.key: f.chunk_size for f in self.feats}
        for i in range(len(self)):
            row = self.selection.indices[i]
            if any((key, row // size) in bad for key, size in chunk.items()):
                continue
            try:
                sample = self[i]
            except CorruptChunkError as e:
                bad.add((e.spec, row // chunk.get(e.spec, 1)))
                if not self.handler(e):
                    return
                continue
            yield sample


def open_features(source: str, expect: Mapping[str, str] | None = None, **kw: Any) -> ShardDataset | ZarrDataset:
    """A reader for ``source``: a ShardDataset for a shard folder (one with
    ``shards.json``), else a ZarrDataset for a featstore. ``kw`` goes to that class.

    Raises:
        StoreError: naming ``source`` when it is neither.
    """
    try:
        read_index(str(source))
    except ShardFormatError as shard_err:
        try:
            return ZarrDataset(source, expect, **kw)
        except StoreError as store_err:
            raise StoreError(f"{source} is neither a shard folder ({shard_err}) nor a store ({store_err})") from None
    return ShardDataset(str(source), expect, **kw)
