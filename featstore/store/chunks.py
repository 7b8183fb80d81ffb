"""Chunk-level access for verification and repair, through the Zarr store API only
(so local paths and fsspec URLs behave the same)."""

from __future__ import annotations

import zarr
from zarr.core.sync import sync

__all__ = ["chunk_decodes", "chunk_exists", "chunk_path", "chunks_present", "drop_chunk", "unit_chunks"]


def chunk_path(arr: zarr.Array, chunk: int) -> str:
    """Store key of chunk number ``chunk`` (along the sample axis) of an array."""
    key = arr.metadata.encode_chunk_key((chunk,) + (0,) * (arr.ndim - 1))
    return f"{arr.path}/{key}" if arr.path else key


def unit_chunks(arr: zarr.Array, unit: int, unit_size: int | None = None) -> range:
    """Chunk numbers of work unit ``unit``: one for a unit-chunked array, ``unit_size /
    chunk`` for an array chunked finer (``unit_size`` defaults to the array's chunk)."""
    chunk = arr.chunks[0]
    per = 1 if unit_size is None else max(1, unit_size // chunk)
    last = -(-arr.shape[0] // chunk)
    return range(unit * per, max(unit * per, min((unit + 1) * per, last)))


def chunks_present(arr: zarr.Array, unit: int, unit_size: int | None = None) -> list[bool]:
    """For each chunk of work unit ``unit``, whether it is on storage."""
    return [bool(sync(arr.store.exists(chunk_path(arr, c)))) for c in unit_chunks(arr, unit, unit_size)]


def chunk_exists(arr: zarr.Array, unit: int, unit_size: int | None = None) -> bool:
    """Whether any chunk of work unit ``unit`` is on storage."""
    return any(chunks_present(arr, unit, unit_size))


def chunk_decodes(arr: zarr.Array, unit: int, unit_size: int | None = None) -> bool:
    """Whether every chunk of work unit ``unit`` reads back (a missing chunk reads as fill values)."""
    size = arr.chunks[0] if unit_size is None else unit_size
    start = unit * size
    try:
        arr[start : min(start + size, arr.shape[0])]
    except Exception:  # a corrupt chunk raises whatever its codec (or the reshape) raises
        return False
    return True


def drop_chunk(arr: zarr.Array, unit: int, unit_size: int | None = None) -> None:
    """Delete every chunk of work unit ``unit``; they then read as fill values."""
    for c in unit_chunks(arr, unit, unit_size):
        sync(arr.store.delete(chunk_path(arr, c)))
