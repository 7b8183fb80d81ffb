"""Training-side readers: stream WebDataset shards, or read a Zarr store, as the same sample dicts.

A sample is ``{"__key__": str, "sample_id": str, "meta": dict, <spec name>: np.ndarray, ...}``.
The shard reader is a chain of small generator stages (``shard_urls`` ->
``split_by_node`` -> ``split_by_worker`` -> ``open_shards`` -> tar expansion and
grouping -> ``shuffle`` -> ``decode``), each testable on a plain list, with the
error policy as a parameter: raise by default, skip-and-log when asked.
"""

from __future__ import annotations

import io
import json
import logging
import math
import random
import re
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


# ---- tar and .npy parsing without a second copy -----------------------------------
# ``tarfile``'s stream mode copies each member through its own buffer, and
# ``np.load`` copies the array out of the member's bytes again; on 2.9 MB token
# features that held streaming to a quarter of a raw read of the tars. Here each
# member is read once, straight into the array's memory, and the array is a view
# of it. Plain (uncompressed) POSIX/PAX/GNU tars, as ``export_wds`` writes them.
_BLOCK = 512
_ZERO_BLOCK = bytes(_BLOCK)
_SKIP_META = re.compile(r"__[^/]*__($|/)")
_NPY_MAGIC = b"\x93NUMPY"


def _tar_number(field: bytes, what: str) -> int:
    """A tar header number: octal ASCII, or GNU base-256 when the high bit is set."""
    if field[:1] and field[0] & 0x80:
        return int.from_bytes(field[1:], "big") - (1 << (8 * len(field) - 8) if field[0] & 0x40 else 0)
    text = field.split(b"\0", 1)[0].strip()
    try:
        return int(text, 8) if text else 0
    except ValueError:
        raise ShardFormatError(f"bad tar header: {what} field {field!r} is not a number") from None


def _read_exact(stream: Any, n: int, what: str) -> bytes:
    data = stream.read(n)
    while len(data) < n:  # pipes and sockets may return less than asked
        more = stream.read(n - len(data))
        if not more:
            raise ShardFormatError(f"truncated shard: {what} needs {n} bytes, got {len(data)}")
        data += more
    return data


def _read_into(stream: Any, size: int, what: str) -> np.ndarray:
    """``size`` bytes of ``stream`` in a fresh writable uint8 array (one copy)."""
    buf = np.empty(size, np.uint8)
    view = memoryview(buf)
    got = 0
    readinto = getattr(stream, "readinto", None)
    while got < size:
        if readinto is not None:
            n = readinto(view[got:])
        else:
            chunk = stream.read(size - got)
            n = len(chunk)
            view[got : got + n] = chunk
        if not n:
            raise ShardFormatError(f"truncated shard: {what} needs {size} bytes, got {got}")
        got += n
    return buf


def _pax_records(data: bytes, where: str) -> dict[str, str]:
    out, pos = {}, 0
    while pos < len(data) and data[pos : pos + 1] != b"\0":
        space = data.find(b" ", pos)
        try:
            length = int(data[pos:space])
            key, _, value = data[space + 1 : pos + length - 1].partition(b"=")
        except ValueError:
            raise ShardFormatError(f"bad pax header in {where}") from None
        if length <= 0:
            raise ShardFormatError(f"bad pax header in {where}")
        out[key.decode("utf-8", "replace")] = value.decode("utf-8", "surrogateescape")
        pos += length
    return out


def tar_members(stream: Any, url: str) -> Iterator[dict[str, Any]]:
    """Regular members of a plain tar stream as ``{"fname", "data", "__url__"}``, in order.

    ``.npy`` members come as writable uint8 arrays read straight from the stream
    (no intermediate copy); other members as bytes. Stops at the end-of-archive
    block, or at the end of the stream.

    Raises:
        ShardFormatError: naming ``url`` for a bad header checksum, a truncated
        member, or a compressed stream.
    """
    pax: dict[str, str] = {}
    long_name: str | None = None
    first = True
    while True:
        header = stream.read(_BLOCK)
        while header and len(header) < _BLOCK:
            more = stream.read(_BLOCK - len(header))
            if not more:
                break
            header += more
        if not header:
            return  # no end-of-archive block: tolerated, as tarfile does
        if first and (header[:2] == b"\x1f\x8b" or header[:3] in (b"BZh", b"\xfd7z")):
            raise ShardFormatError(f"{url} is compressed; decompress it (e.g. a pipe: URL) before reading")
        if len(header) < _BLOCK:
            raise ShardFormatError(f"truncated shard {url}: {len(header)}-byte tar header")
        if header == _ZERO_BLOCK:
            return
        first = False
        stored = _tar_number(header[148:156], "checksum")
        unsigned = sum(header) - sum(header[148:156]) + 256  # the checksum field counts as spaces
        if stored != unsigned and stored != unsigned - 2 * sum(b for b in header[:148] + header[156:] if b > 127):
            raise ShardFormatError(f"bad tar header checksum in {url} (corrupt or not a tar)")
        kind = header[156:157]
        size = _tar_number(header[124:136], "size")
        name = header[:100].split(b"\0", 1)[0]
        if header[257:262] == b"ustar" and header[345:346] != b"\0":
            name = header[345:500].split(b"\0", 1)[0] + b"/" + name
        fname = name.decode("utf-8", "surrogateescape")
        pad = -size % _BLOCK
        if kind in (b"x", b"g", b"L"):
            data = _read_exact(stream, size + pad, f"header of {url}")[:size]
            if kind == b"x":
                pax = _pax_records(data, url)
            elif kind == b"L":
                long_name = data.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
            continue
        fname = pax.get("path", long_name or fname)
        size = int(pax["size"]) if "size" in pax else size
        pad = -size % _BLOCK
        pax, long_name = {}, None
        if kind not in (b"0", b"\0", b"7") or _SKIP_META.match(fname):
            if size + pad:
                _read_exact(stream, size + pad, f"member {fname} of {url}")
            continue
        what = f"member {fname} of {url}"
        data = _read_into(stream, size, what) if fname.endswith(".npy") else _read_exact(stream, size, what)
        if pad:
            _read_exact(stream, pad, what)
        yield {"fname": fname, "data": data, "__url__": url}


def expand_shards(src: Iterable[dict], handler: Callable[[Exception], bool]) -> Iterator[dict]:
    """Opened shards -> their members, the stream closed after each shard."""
    for item in src:
        stream, url = item["stream"], item["url"]
        try:
            yield from tar_members(stream, url)
        except Exception as e:
            if not handler(e if isinstance(e, ShardFormatError) else ShardFormatError(f"{url}: {e}")):
                break
        finally:
            stream.close()


_npy_headers: dict[bytes, tuple[np.dtype, tuple[int, ...], str, int]] = {}  # header bytes -> parsed


def npy_array(blob: Any, where: Any) -> np.ndarray:
    """The array in ``.npy`` bytes, as a view of ``blob`` (no copy); never unpickles.

    ``blob`` is bytes or a uint8 array; the result is writable when ``blob`` is.

    Raises:
        ShardFormatError: naming ``where`` for a bad header, an object dtype or a size
        that does not match the header.
    """
    buf = np.frombuffer(blob, np.uint8) if not isinstance(blob, np.ndarray) else blob
    head = buf[:12].tobytes()
    if head[:6] != _NPY_MAGIC or len(head) < 10:
        raise ShardFormatError(f"{where}: not a .npy member")
    if head[6] not in (1, 2):  # version 3 (utf-8 field names): np.load, which copies
        try:
            return np.load(io.BytesIO(bytes(buf)), allow_pickle=False)
        except Exception as e:
            raise ShardFormatError(f"{where}: bad .npy member: {e}") from None
    start = 10 + int.from_bytes(head[8:10], "little") if head[6] == 1 else 12 + int.from_bytes(head[8:12], "little")
    if start > buf.size:
        raise ShardFormatError(f"{where}: .npy header runs past the member's {buf.size} bytes")
    key = buf[:start].tobytes()
    parsed = _npy_headers.get(key)
    if parsed is None:
        try:
            f = io.BytesIO(key)
            major, _ = np.lib.format.read_magic(f)
            read = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
            shape, fortran, dtype = read(f)  # ast.literal_eval of the header: never unpickles
        except Exception as e:
            raise ShardFormatError(f"{where}: bad .npy header: {e}") from None
        if dtype.hasobject:
            raise ShardFormatError(f"{where}: object arrays are refused (reading them would unpickle)")
        parsed = (dtype, tuple(shape), "F" if fortran else "C", math.prod(shape) * dtype.itemsize)
        if len(_npy_headers) < 256:
            _npy_headers[key] = parsed
    dtype, shape, order, nbytes = parsed
    if buf.size - start != nbytes:
        raise ShardFormatError(
            f"{where}: .npy holds {buf.size - start} bytes of data, header says {dtype}{list(shape)}"
        )
    arr = buf[start:].view(dtype) if nbytes else np.empty(0, dtype)
    return arr.reshape(shape, order=order)


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
