"""Export a store to WebDataset tar shards plus a ``shards.json`` index, deterministically."""

from __future__ import annotations

import hashlib
import io
import json
import re
import tarfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import fsspec
import numpy as np

from featstore.errors import StorageAccessError
from featstore.store.array import FeatureArray
from featstore.store.remote import describe, is_remote, probe_bucket
from featstore.store.selection import DEFAULT_SPLIT_RATIOS, resolve_specs, select
from featstore.store.store import FeatureStore

INDEX_NAME = "shards.json"
INDEX_FORMAT = "featstore-wds"
INDEX_VERSION = 1
_KEY_SAFE = re.compile(r"[^A-Za-z0-9_-]")


def tar_key(sample_id: str) -> str:
    """A WebDataset-safe ``__key__`` for a sample id, unique per id.

    WebDataset splits a member name at its first dot and skips names starting
    with ``__``, so anything but ``[A-Za-z0-9_-]`` becomes ``_``; a changed id
    gets 8 hex digits of its hash appended so that two ids never share a key.
    """
    key = _KEY_SAFE.sub("_", sample_id)
    if key != sample_id or key.startswith("__"):
        key = f"{key.lstrip('_') or 'k'}_{hashlib.sha256(sample_id.encode('utf-8')).hexdigest()[:8]}"
    return key


def npy_bytes(array: np.ndarray) -> bytes:
    """``.npy`` bytes of an array (no pickle, loadable with allow_pickle=False)."""
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
    return buf.getvalue()


def _add_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    # Fixed owner, mode and mtime: the same store gives byte-identical shards.
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), 0, 0o444
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    tar.addfile(info, io.BytesIO(data))


@dataclass
class ExportSummary:
    """What an export wrote and what it left out."""

    out: str
    shards: list[dict[str, Any]] = field(default_factory=list)
    excluded: list[dict[str, str]] = field(default_factory=list)

    @property
    def total_samples(self) -> int:
        return sum(s["samples"] for s in self.shards)


def _samples(
    store: FeatureStore, feats: Sequence[FeatureArray], indices: list[int]
) -> Iterator[list[tuple[str, bytes]]]:
    """Tar members of each chosen sample, reading each feature unit once."""
    annotations = store.annotations()
    blocks: dict[str, tuple[int, np.ndarray]] = {}
    for i in indices:
        sid = store.sample_ids[i]
        key = tar_key(sid)
        members = []
        for f in feats:
            unit = i // f.unit_size
            if blocks.get(f.spec.key, (None,))[0] != unit:
                blocks[f.spec.key] = (unit, f.read_unit(unit)[0])
            members.append((f"{key}.{f.spec.name}.npy", npy_bytes(blocks[f.spec.key][1][i - unit * f.unit_size])))
        meta = {"sample_id": sid, **annotations[i]}
        members.append((f"{key}.json", json.dumps(meta, sort_keys=True, ensure_ascii=False).encode("utf-8")))
        yield members


class _HashingWriter:
    """A write-only file wrapper that counts and hashes what passes through."""

    def __init__(self, f) -> None:
        self.f, self.bytes, self.sha = f, 0, hashlib.sha256()

    def write(self, data: bytes) -> int:
        self.f.write(data)
        self.sha.update(data)
        self.bytes += len(data)
        return len(data)


class _ShardWriter:
    """Streams samples into one tar at a time, rolling over at maxcount / maxsize."""

    def __init__(self, fs, root: str, prefix: str, maxcount: int | None, maxsize_mb: float | None, progress) -> None:
        self.fs, self.root, self.prefix, self.progress = fs, root, prefix, progress
        self.maxcount, self.limit = maxcount, None if maxsize_mb is None else maxsize_mb * 1e6
        self.shards: list[dict[str, Any]] = []
        self._file = self._hw = self._tar = None
        self._count = self._size = 0

    def add(self, members: list[tuple[str, bytes]]) -> None:
        # Bytes in the tar: a 512-byte header per member, data padded to 512 (tarfile
        # buffers its output, so what reached the file lags behind).
        size = sum(512 + -(-len(d) // 512) * 512 for _, d in members)
        if self._tar is not None and (
            (self.maxcount and self._count >= self.maxcount) or (self.limit and self._size + size > self.limit)
        ):
            self.close()
        if self._tar is None:
            self._open()
        for name, data in members:
            _add_member(self._tar, name, data)
        self._count += 1
        self._size += size

    def _open(self) -> None:
        self._name = f"{self.prefix}-{len(self.shards):06d}.tar"
        self._file = self.fs.open(f"{self.root}/{self._name}.tmp", "wb")
        self._hw = _HashingWriter(self._file)
        self._tar = tarfile.open(fileobj=self._hw, mode="w|", format=tarfile.PAX_FORMAT)
        self._count = self._size = 0

    def close(self) -> None:
        if self._tar is None:
            return
        self._tar.close()
        self._file.close()
        path = f"{self.root}/{self._name}"
        self.fs.mv(f"{path}.tmp", path)
        self.shards.append(
            {"name": self._name, "samples": self._count, "bytes": self._hw.bytes, "sha256": self._hw.sha.hexdigest()}
        )
        if self.progress:
            self.progress(f"wrote {self._name}: {self._count} samples, {self._hw.bytes / 1e6:.1f} MB")
        self._tar = None


def export_wds(
    store: FeatureStore,
    out: str,
    specs: Sequence[str] | None = None,
    maxcount: int | None = 1000,
    maxsize_mb: float | None = None,
    split: str | None = None,
    prefix: str | None = None,
    ratios: Sequence[float] = DEFAULT_SPLIT_RATIOS,
    progress=None,
) -> ExportSummary:
    """Write ``OUT/{prefix}-%06d.tar`` shards and ``OUT/shards.json`` from a store.

    Args:
        store: the feature store.
        out: output folder, a local path or fsspec URL.
        specs: spec names (or ids) to include; default every spec in the store.
        maxcount: at most this many samples a shard.
        maxsize_mb: at most about this many MB a shard (a single larger sample still gets a shard).
        split: only samples of this split (``train``/``val``/``test``).
        prefix: shard name prefix; default the split, else ``shard``.
        ratios: train/val/test ratios for samples without a ``split`` annotation.
        progress: optional callable taking one line of text per shard.

    Returns:
        An ExportSummary. The index is written last: shards without it do not exist.

    Raises:
        ValueError: naming bad maxcount/maxsize values.
        StorageAccessError: naming ``out`` (or the store) when its bucket is missing,
            access is denied or the endpoint cannot be reached.
    """
    if maxcount is not None and maxcount < 1:
        raise ValueError(f"maxcount {maxcount!r} must be at least 1")
    if maxsize_mb is not None and maxsize_mb <= 0:
        raise ValueError(f"maxsize {maxsize_mb!r} MB must be positive")
    feats = resolve_specs(store, specs)
    chosen = select(store, feats, split, ratios)
    prefix = prefix or split or "shard"
    try:
        fs, root = fsspec.core.url_to_fs(out)
        if is_remote(out):  # object stores have no folders, and s3fs's makedirs would create a bucket
            problem = probe_bucket(out)
            if problem:
                raise StorageAccessError(f"export-wds: {problem}")
        else:
            fs.makedirs(root, exist_ok=True)
        writer = _ShardWriter(fs, root, prefix, maxcount, maxsize_mb, progress)
        for members in _samples(store, feats, chosen.indices):
            writer.add(members)
        writer.close()
        summary = ExportSummary(out=out, shards=writer.shards, excluded=chosen.excluded)
        _remove_stale(fs, root, prefix, {s["name"] for s in summary.shards})
        index = _index(store, feats, summary, split, ratios)
        with fs.open(f"{root}/{INDEX_NAME}", "w") as f:
            f.write(json.dumps(index, indent=2, sort_keys=True) + "\n")
    except StorageAccessError:
        raise
    except Exception as e:  # no such bucket, access denied, endpoint unreachable: name the URL
        problem = describe(out, e) or describe(store.url, e)
        if problem:
            raise StorageAccessError(f"export-wds: {problem}") from None
        raise
    return summary


def _remove_stale(fs, root: str, prefix: str, keep: set[str]) -> None:
    """Shards of an earlier export with the same prefix that this one did not rewrite."""
    for path in fs.glob(f"{root}/{prefix}-*.tar"):
        if path.rsplit("/", 1)[-1] not in keep:
            fs.rm(path)


def _index(store, feats, summary, split, ratios) -> dict[str, Any]:
    return {
        "format": INDEX_FORMAT,
        "version": INDEX_VERSION,
        "store": store.url,
        "split": split,
        "split_ratios": list(ratios),
        "specs": [
            {
                "name": f.spec.name,
                "id": f.spec.id,
                "shape": list(f.spec.shape),
                "dtype": f.spec.dtype,
                "encoder": f.spec.encoder,
            }
            for f in feats
        ],
        "shards": summary.shards,
        "total_samples": summary.total_samples,
        "excluded": summary.excluded,
    }
