"""The sample index of a store: fixed-width ids and media digests shared by every spec."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import zarr

from featstore.store.layout import HASH_BYTES, ID_BYTES, INDEX_CHUNK, encode_text

__all__ = ["SampleIndex", "check_sample_id", "hash_row"]


def check_sample_id(sample_id: str) -> None:
    """Raise ValueError naming ``sample_id`` unless it is a usable id."""
    if not isinstance(sample_id, str) or not sample_id or "\0" in sample_id:
        raise ValueError(f"sample id {sample_id!r} must be a non-empty string without NUL")
    if len(sample_id.encode("utf-8")) > ID_BYTES:
        raise ValueError(f"sample id {sample_id!r} is longer than {ID_BYTES} UTF-8 bytes")


def hash_row(media_hash: str, sample_id: str) -> np.ndarray:
    """A sha256 hex digest as its raw ``[32]`` uint8 row; ValueError naming the sample if malformed."""
    try:
        raw = bytes.fromhex(media_hash)
    except (TypeError, ValueError):
        raw = b""
    if len(raw) != HASH_BYTES:
        raise ValueError(f"sample {sample_id!r}: media hash {media_hash!r} is not a {HASH_BYTES * 2}-digit sha256 hex")
    return np.frombuffer(raw, dtype=np.uint8)


class SampleIndex:
    """Row order of every spec in a store: sample ids and the media digest each
    sample's features must be computed from. Rows are only ever appended, so a
    sample keeps its row (and its unit) for the life of the store.

    Args:
        ids: the ``samples/id`` array, ``[N, ID_BYTES]`` uint8.
        hashes: the ``samples/media_hash`` array, ``[N, HASH_BYTES]`` uint8.
        url: the store's URL, for error messages.
    """

    def __init__(self, ids: zarr.Array, hashes: zarr.Array, url: str) -> None:
        self._ids_arr, self._hash_arr, self.url = ids, hashes, url
        self.reload()

    def reload(self) -> None:
        """Read the index again (after another handle appended or changed it)."""
        # Read in blocks (a million ids are 128 MB as rows) and viewed as
        # fixed-width bytes, which drops the zero padding (ids hold no NUL).
        n, step = self._ids_arr.shape[0], INDEX_CHUNK * 16
        self.sample_ids: list[str] = []
        for a in range(0, n, step):
            raw = np.ascontiguousarray(self._ids_arr[a : a + step]).view(f"S{ID_BYTES}").ravel()
            self.sample_ids.extend(b.decode("utf-8") for b in raw.tolist())
        self._hashes: np.ndarray = self._hash_arr[:]
        self._pos_map: dict[str, int] | None = None  # built on first lookup (a million ids take ~1 s)

    @property
    def _pos(self) -> dict[str, int]:
        if self._pos_map is None:
            self._pos_map = {sid: i for i, sid in enumerate(self.sample_ids)}
        return self._pos_map

    def __len__(self) -> int:
        return len(self.sample_ids)

    def __contains__(self, sample_id: object) -> bool:
        return sample_id in self._pos

    def index_of(self, sample_id: str) -> int:
        """Row of a sample id. Raises KeyError naming the id when it is not in the store."""
        try:
            return self._pos[sample_id]
        except KeyError:
            raise KeyError(f"sample {sample_id!r} is not in store {self.url}") from None

    def media_hash(self, sample_id: str) -> str:
        """Hex sha256 of a sample's media bytes, as recorded in the index."""
        return bytes(self._hashes[self.index_of(sample_id)]).hex()

    def hash_rows(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Raw ``[n, 32]`` uint8 media digests of rows ``[start, stop)``."""
        return self._hashes[start:stop]

    def set_hash(self, sample_id: str, row: np.ndarray) -> bool:
        """Record a new media digest for a known sample; True if it changed."""
        i = self.index_of(sample_id)
        if np.array_equal(self._hashes[i], row):
            return False
        self._hash_arr[i] = row
        self._hashes[i] = row
        return True

    def append(self, ids: Sequence[str], rows: np.ndarray) -> None:
        """Append new samples (ids not yet in the index) with their digests."""
        n0, n1 = len(self), len(self) + len(ids)
        self._ids_arr.resize((n1, ID_BYTES))
        self._hash_arr.resize((n1, HASH_BYTES))
        self._ids_arr[n0:n1] = np.stack([encode_text(s, ID_BYTES) for s in ids])
        self._hash_arr[n0:n1] = rows
        self.reload()
