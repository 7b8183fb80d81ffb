"""Chunk-level access for verification and repair, through the Zarr store API only
(so local paths and fsspec URLs behave the same)."""

from __future__ import annotations

import zarr
from zarr.core.sync import sync

__all__ = ["chunk_decodes", "chunk_exists", "chunk_path", "drop_chunk"]


def chunk_path(arr: zarr.Array, unit: int) -> str:
    """Store key of the chunk of work unit ``unit`` of a unit-chunked array."""
    key = arr.metadata.encode_chunk_key((unit,) + (0,) * (arr.ndim - 1))
    return f"{arr.path}/{key}" if arr.path else key


def chunk_exists(arr: zarr.Array, unit: int) -> bool:
    """Whether the chunk of work unit ``unit`` of a unit-chunked array is on storage."""
    return bool(sync(arr.store.exists(chunk_path(arr, unit))))


def chunk_decodes(arr: zarr.Array, unit: int) -> bool:
    """Whether the chunk of work unit ``unit`` reads back (a missing chunk reads as fill values)."""
    start = unit * arr.chunks[0]
    try:
        arr[start : min(start + arr.chunks[0], arr.shape[0])]
    except Exception:  # a corrupt chunk raises whatever its codec (or the reshape) raises
        return False
    return True


def drop_chunk(arr: zarr.Array, unit: int) -> None:
    """Delete the chunk of work unit ``unit``; it then reads as fill values."""
    sync(arr.store.delete(chunk_path(arr, unit)))
