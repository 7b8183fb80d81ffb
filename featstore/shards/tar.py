"""Plain tar shards read member by member, and ``.npy`` members as arrays, without a second copy.

``tarfile``'s stream mode copies each member through its own buffer, and
``np.load`` copies the array out of the member's bytes again; on 2.9 MB token
features that held streaming to a quarter of a raw read of the tars. Here each
member is read once, straight into the array's memory, and the array is a view
of it. Plain (uncompressed) POSIX/PAX/GNU tars, as ``export_wds`` writes them.
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np

from featstore.errors import ShardFormatError

__all__ = ["expand_shards", "npy_array", "tar_members"]

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
