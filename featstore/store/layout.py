"""On-disk layout constants of a featstore Zarr v3 group, and the codecs it uses."""

from __future__ import annotations

from typing import Any

import numpy as np
from zarr.codecs import BloscCodec, ZstdCodec

# Store-level attribute naming the format; a group without it is not a featstore.
FORMAT_KEY = "featstore_format"

# Sample index: fixed-width UTF-8 ids and raw sha256 digests, as uint8 rows,
# because zarr-python's variable-length strings are an extension other Zarr
# readers cannot open (DESIGN: keep to core v3 data types).
ID_BYTES = 128
HASH_BYTES = 32
INDEX_CHUNK = 4096  # rows per index chunk; the index is written by the coordinator only

# Annotations (labels, transcripts, captions, ...): one canonical JSON object per
# sample, concatenated UTF-8 in a uint8 array with int64 offsets [N+1] (a ragged
# array in core types). Written by the coordinator only, whole, when they change.
ANNOTATION_CHUNK = 1 << 20
OFFSETS_CHUNK = 1 << 16

# Failure records: a stage name and a reason, fixed-width UTF-8, one row per sample.
STAGE_BYTES = 32
REASON_BYTES = 480

# Commit array values.
PENDING, OK, FAILED = 0, 1, 2
STATUS_NAMES = {PENDING: "pending", OK: "ok", FAILED: "failed"}

# Work units hold a power-of-two number of samples so that units of specs with
# different unit sizes nest (a job can process the largest and fill the rest).
# A spec's data array may be chunked finer than its unit (``chunk_size``, a power
# of two dividing the unit): a unit still owns whole chunks, so exactly-once holds;
# the other arrays (hashes, failures, the commit flags) keep one chunk a unit.
# Chunk sizing from benchmarks/bench_store.py (BENCHMARKS.md): token features
# write and read fastest at 4-8 samples (12-23 MB chunks), 1-sample chunks are
# ~2x slower. Pooled features gain ~2.5x from 256 to 1024 samples a unit, but at
# 256 a unit already writes ~10k samples/s, far above any encoder's rate, and
# smaller units mean finer retries and more parallel work on small datasets.
TARGET_CHUNK_BYTES = 16 << 20
MAX_UNIT = 256

# Per-array runtime config: always write chunks, even all-zero ones (a failed
# unit), so that `verify` can tell a missing chunk from an empty one.
ARRAY_CONFIG = {"write_empty_chunks": True}

# Codecs by name (all Zarr v3 core/registered codecs, readable by other
# implementations). Default from benchmarks/bench_store.py: on fp16 features every
# zstd variant saves the same ~8% and blosc's shuffle adds nothing, so plain zstd
# level 3, the simplest codec for other readers; "none" writes ~1.5x faster.
CODECS = {
    "none": lambda itemsize: None,
    "zstd1": lambda itemsize: ZstdCodec(level=1),
    "zstd3": lambda itemsize: ZstdCodec(level=3),
    "blosc-zstd1-shuffle": lambda itemsize: BloscCodec(typesize=itemsize, cname="zstd", clevel=1, shuffle="shuffle"),
    "blosc-zstd3-shuffle": lambda itemsize: BloscCodec(typesize=itemsize, cname="zstd", clevel=3, shuffle="shuffle"),
    "blosc-lz4-shuffle": lambda itemsize: BloscCodec(typesize=itemsize, cname="lz4", clevel=5, shuffle="shuffle"),
}
DEFAULT_CODEC = "zstd3"


def default_unit_size(shape: tuple[int, ...], dtype: str) -> int:
    """Largest power of two (<= MAX_UNIT) whose chunk fits TARGET_CHUNK_BYTES.

    Also each spec's default data chunk inside a larger work unit (``add_spec``
    takes the smaller of the two): token features get 4-sample chunks
    (~11.5 MB) even in a job's 16-sample units, pooled ones the whole unit."""
    sample_bytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
    unit = 1
    while unit * 2 <= MAX_UNIT and unit * 2 * sample_bytes <= TARGET_CHUNK_BYTES:
        unit *= 2
    return unit


def compressors_for(codec: str, dtype: str) -> list:
    """Zarr v3 compressors list for a codec name.

    Raises:
        ValueError: naming the codec when it is unknown.
    """
    if codec not in CODECS:
        raise ValueError(f"unknown codec {codec!r}; choose one of {sorted(CODECS)}")
    c = CODECS[codec](np.dtype(dtype).itemsize)
    return [] if c is None else [c]


def encode_text(text: str, width: int) -> np.ndarray:
    """UTF-8 bytes of ``text`` in a zero-padded uint8 row, cut at a character boundary."""
    raw = text.encode("utf-8")
    if len(raw) > width:
        raw = raw[: width - 3].decode("utf-8", "ignore").encode("utf-8") + b"..."
    row = np.zeros(width, dtype=np.uint8)
    row[: len(raw)] = np.frombuffer(raw, dtype=np.uint8)
    return row


def decode_text(row: np.ndarray) -> str:
    """Inverse of ``encode_text``."""
    return bytes(row).rstrip(b"\0").decode("utf-8")


def create_index_arrays(group: Any) -> None:
    """The sample index's arrays in a new store's ``group``: ``samples/id`` and
    ``samples/media_hash`` (fixed-width uint8 rows), and the annotations as one byte
    array with int64 offsets (core Zarr v3 types only, so other readers can open them)."""
    arrays = (
        ("id", (0, ID_BYTES), (INDEX_CHUNK, ID_BYTES), "uint8"),
        ("media_hash", (0, HASH_BYTES), (INDEX_CHUNK, HASH_BYTES), "uint8"),
        ("annotation_offsets", (1,), (OFFSETS_CHUNK,), "int64"),
        ("annotation_bytes", (0,), (ANNOTATION_CHUNK,), "uint8"),
    )
    for name, shape, chunks, dtype in arrays:
        group.create_array(
            f"samples/{name}",
            shape=shape,
            chunks=chunks,
            dtype=dtype,
            fill_value=0,
            compressors=compressors_for("zstd3", dtype),
        )
