"""Feeding a fast step: samples read by DataLoader worker processes, batches collated and pinned in a
background thread ahead of the step, the same batches in the same order as without either.

- ``read_samples``: one pass over this rank's samples, in the calling process
  (``workers=0``) or in DataLoader worker processes. A map-style dataset (the
  Zarr store, the online path) is read in the order given, whatever the number
  of workers. Shards are split between workers by whole files, as webdataset
  does, so their order depends on the number of workers: it is fixed for a
  given number, and the checkpoint records it (``TrainRecipe`` refuses to
  resume a shard epoch mid-way with another).
- ``Prefetcher``: runs an iterator (reading + collation) in a daemon thread,
  ``depth`` items ahead, pins tensors for a CUDA step; items, order and
  exceptions are the iterator's own.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import torch

__all__ = ["Prefetcher", "pin_batch", "read_samples", "to_device"]

_END = object()


def _as_tensors(sample: dict[str, Any]) -> dict[str, Any]:
    """In a worker: arrays become tensors so that they cross to the trainer in shared memory, not pickled."""
    out = {}
    for k, v in sample.items():
        if isinstance(v, np.ndarray):
            v = torch.from_numpy(v if v.flags.writeable else v.copy())
        out[k] = v
    return out


def read_samples(
    dataset: Any, workers: int, order: Sequence[int] | None = None, prefetch_factor: int = 4
) -> Iterable[dict[str, Any]]:
    """One pass over ``dataset``: ``dataset[i] for i in order`` (map-style) or ``iter(dataset)`` (shards).

    Args:
        dataset: a map-style dataset (with ``order``) or an iterable one (``order`` None).
        workers: DataLoader worker processes; 0 reads here.
        order: the indices to read, in order (map-style only).
        prefetch_factor: samples each worker reads ahead.
    """
    if workers == 0:
        return iter(dataset) if order is None else (dataset[i] for i in order)
    from torch.utils.data import DataLoader

    # Its own generator: a DataLoader otherwise draws its workers' base seed from the global torch RNG,
    # which would shift the dropout masks of the training step (and race with it from the prefetch thread).
    kw: dict[str, Any] = {"generator": torch.Generator().manual_seed(0)}
    if order is not None:
        kw["sampler"] = list(order)
    return DataLoader(
        dataset,
        batch_size=None,
        num_workers=workers,
        collate_fn=_as_tensors,
        prefetch_factor=prefetch_factor,
        **kw,
    )


def pin_batch(batch: dict[str, Any]) -> dict[str, Any]:
    """The batch with its tensors in page-locked memory, so that the copy to the GPU can be asynchronous."""
    out = dict(batch)
    for k, v in batch.items():
        if isinstance(v, torch.Tensor):
            out[k] = v.pin_memory()
        elif isinstance(v, dict):
            out[k] = {n: t.pin_memory() if isinstance(t, torch.Tensor) else t for n, t in v.items()}
    return out


def to_device(batch: dict[str, Any], keys: Sequence[str], device: torch.device) -> dict[str, Any]:
    """The model's inputs of a batch on ``device`` (asynchronous from pinned memory)."""
    out = {k: batch[k].to(device, non_blocking=True) for k in keys}
    out["features"] = {k: v.to(device, non_blocking=True) for k, v in batch["features"].items()}
    return out


class Prefetcher:
    """``iter(source)`` run in a daemon thread, ``depth`` items ahead of the consumer.

    Same items in the same order; an exception in the source is raised at the
    consumer's next ``next()``. ``close()`` stops the thread (and closes a
    generator source); use it as a context manager or close it when you stop early.

    Args:
        source: any iterable (a generator of batches).
        depth: items held ready (at least 1).
        transform: applied to each item in the thread (``pin_batch`` for a CUDA step).
    """

    def __init__(self, source: Iterable[Any], depth: int = 2, transform: Callable[[Any], Any] | None = None) -> None:
        if depth < 1:
            raise ValueError(f"prefetch depth {depth!r} must be at least 1")
        self._source = source
        self._transform = transform
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._done = False
        self._thread = threading.Thread(target=self._run, name="trainer-prefetch", daemon=True)
        self._thread.start()

    def _put(self, item: Any) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        it = iter(self._source)
        try:
            for item in it:
                if self._transform is not None:
                    item = self._transform(item)
                if not self._put(item):
                    return
            self._put(_END)
        except BaseException as e:  # handed to the consumer, raised there
            self._put(e)
        finally:
            close = getattr(it, "close", None)
            if close is not None:
                close()

    def __iter__(self) -> Iterator[Any]:
        return self

    def __next__(self) -> Any:
        if self._done:
            raise StopIteration
        item = self._queue.get()
        if item is _END:
            self._done = True
            raise StopIteration
        if isinstance(item, BaseException):
            self._done = True
            raise item
        return item

    def close(self) -> None:
        """Stop reading ahead and wait for the thread (it stops within one item's read)."""
        self._stop.set()
        self._done = True
        while True:  # unblock a put
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        self._thread.join()

    def __enter__(self) -> Prefetcher:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
