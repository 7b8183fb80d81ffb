"""The shard reader's own tar and .npy parsing: same members and arrays as tarfile and
np.load, one copy, never unpickling, clear errors on damaged input."""

from __future__ import annotations

import io
import tarfile

import numpy as np
import pytest

from featstore.errors import ShardFormatError
from featstore.shards.tar import npy_array, tar_members


def npy(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()


def make_tar(members: list[tuple[str, bytes]], fmt: int = tarfile.PAX_FORMAT, extra=None) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=fmt) as tar:
        if extra:
            extra(tar)
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


class ReadOnly:
    """A stream with read() only, returning at most 1000 bytes a call (like a pipe)."""

    def __init__(self, data: bytes) -> None:
        self.f = io.BytesIO(data)

    def read(self, n: int = -1) -> bytes:
        return self.f.read(min(n, 1000) if n >= 0 else 1000)


LONG = "d/" + "x" * 150 + ".tokens.npy"  # needs a pax (or GNU) long name
MEMBERS = [
    ("a.json", b'{"sample_id": "a"}'),
    ("a.tokens.npy", npy(np.arange(40, dtype=np.float16).reshape(5, 8))),
    ("__meta__", b"skipped"),
    (LONG, npy(np.ones((3, 2), np.float32))),
    ("b.json", b""),
]


@pytest.mark.parametrize("fmt", [tarfile.PAX_FORMAT, tarfile.GNU_FORMAT, tarfile.USTAR_FORMAT])
@pytest.mark.parametrize("stream", [io.BytesIO, ReadOnly])
def test_members_match_tarfile(fmt, stream):
    members = [m for m in MEMBERS if fmt != tarfile.USTAR_FORMAT or m[0] != LONG]

    data = make_tar(members, fmt, lambda tar: tar.addfile(_dir("d")))
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        want = [(m.name, tar.extractfile(m).read()) for m in tar if m.isreg() and not m.name.startswith("__")]
    got = [(m["fname"], bytes(m["data"])) for m in tar_members(stream(data), "mem.tar")]
    assert got == want and len(got) == len(members) - 1
    assert all(m["__url__"] == "mem.tar" for m in tar_members(stream(data), "mem.tar"))


def _dir(name):
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    return info


def test_npy_members_are_writable_arrays_read_once():
    data = make_tar(MEMBERS)
    got = {m["fname"]: m["data"] for m in tar_members(io.BytesIO(data), "t")}
    assert isinstance(got["a.json"], bytes)
    buf = got["a.tokens.npy"]
    arr = npy_array(buf, "a")
    np.testing.assert_array_equal(arr, np.arange(40, dtype=np.float16).reshape(5, 8))
    assert arr.flags.writeable and np.shares_memory(arr, buf)  # a view: no second copy


@pytest.mark.parametrize(
    "arr",
    [
        np.arange(12, dtype=np.int64).reshape(3, 4),
        np.asfortranarray(np.arange(12, dtype=np.float32).reshape(3, 4)),
        np.zeros((0, 4), np.float16),
        np.array(3.5),
        np.zeros(3, dtype=[("a", "<i4"), ("b", "<f2")]),
        np.arange(6, dtype=">u2"),
    ],
)
def test_npy_array_equals_np_load(arr):
    blob = npy(arr)
    got = npy_array(blob, "x")
    want = np.load(io.BytesIO(blob), allow_pickle=False)
    assert got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_array_equal(got, want)


def test_npy_array_refuses_objects_and_bad_sizes():
    buf = io.BytesIO()
    np.save(buf, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ShardFormatError, match="s1.*object arrays are refused"):
        npy_array(buf.getvalue(), "s1")
    blob = npy(np.zeros((5, 8), np.float16))
    with pytest.raises(ShardFormatError, match=r"s2: .npy holds 78 bytes of data, header says float16\[5, 8\]"):
        npy_array(blob[:-2], "s2")
    with pytest.raises(ShardFormatError, match="s3: not a .npy member"):
        npy_array(b"PK\x03\x04 zip", "s3")
    with pytest.raises(ShardFormatError, match="s4: .npy header runs past"):
        npy_array(blob[:40], "s4")


def test_damaged_tars_raise_naming_the_shard():
    data = make_tar(MEMBERS)
    head = data.find(b"a.tokens.npy")  # the member's header (a short name: no pax header)
    assert head % 512 == 0
    with pytest.raises(ShardFormatError, match=r"truncated shard: member a.tokens.npy of t1.tar needs"):
        list(tar_members(io.BytesIO(data[: head + 512 + 100]), "t1.tar"))
    bad = bytearray(data)
    bad[head + 3] ^= 0xFF
    with pytest.raises(ShardFormatError, match="bad tar header checksum in t2.tar"):
        list(tar_members(io.BytesIO(bytes(bad)), "t2.tar"))
    import gzip

    with pytest.raises(ShardFormatError, match="t3.tar.gz is compressed"):
        list(tar_members(io.BytesIO(gzip.compress(data)), "t3.tar.gz"))
    # No end-of-archive blocks: every member still comes out, as with tarfile.
    last = data.rfind(b"b.json")
    assert last % 512 == 0
    assert [m["fname"] for m in tar_members(io.BytesIO(data[: last + 512]), "t4")][-1] == "b.json"
