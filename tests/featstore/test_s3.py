"""Stores and shards on S3, against moto's S3 server (tests/s3.py): a store created and
written at s3://bucket/x.zarr holds the bytes of the same store written locally; the
CLI (info, verify, failures, export-wds, verify --repair) works on s3:// URLs; shards
stream from s3:// through DataLoader workers exactly once; a read-only store is never
written; a commit made elsewhere is never hidden by a cached listing; and errors name
the URL and what is wrong (no such bucket, access denied, endpoint unreachable),
never the credentials."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import torch

from featstore.cli import main, store_info
from featstore.errors import ShardFormatError, StorageAccessError, StoreError
from featstore.shards import ShardDataset, ZarrDataset, open_features
from featstore.shards.export import export_wds
from featstore.store import FeatureStore
from featstore.store.verify import verify_store
from tests.featstore.conftest import DEMO_N, FAILED_ID, TOKENS
from tests.featstore.store import store_worker as w
from tests.featstore.store.test_exactly_once import tree
from tests.featstore.store.test_repair import corrupt, fill, recompute
from tests.s3 import SECRET_KEY

REPO = Path(__file__).resolve().parents[2]
N = 20  # test_repair's store: pooled units of 8, tokens units of 4, clip_0007 failed in pooled
GOOD = [f"demo_{i:04d}" for i in range(DEMO_N) if f"demo_{i:04d}" != FAILED_ID]


def upload(s3, local: Path, name: str) -> str:
    """Copy a local store or shard folder into the test's bucket; its s3:// URL."""
    s3.fs().put(str(local), f"{s3.bucket}/{name}", recursive=True)
    return s3.url(name)


def cli(*argv: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """``featstore ARGV`` in its own process (fresh s3fs caches, the environment of a user's shell)."""
    code = "import sys; from featstore.cli import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run(
        [sys.executable, "-c", code, *argv],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
        env={**os.environ, **(env or {})},
    )


# ---- the store ------------------------------------------------------------------
def test_store_on_s3_holds_the_bytes_of_a_local_one(s3, tmp_path):
    url = s3.url("x.zarr")
    fill(url)
    fill(tmp_path / "x.zarr")
    assert s3.tree("x.zarr") == tree(tmp_path / "x.zarr")
    store = FeatureStore.open(url)
    assert store.num_samples == N and [f.spec.name for f in store.features()] == ["pooled", "tokens"]
    assert store.feature("pooled").counts() == {"committed": N - 1, "failed": 1, "pending": 0}
    assert (store.feature("tokens").read_id("clip_0005") == w.features(w.SPECS[1], ["clip_0005"])[0]).all()
    with pytest.raises(StoreError, match=f"cannot create a store at {url}: something is already there"):
        FeatureStore.create(url)
    # open_or_create opens what is there: nothing pending, nothing rewritten.
    before = s3.listing()
    assert recompute(FeatureStore.open_or_create(url)) == {"pooled": 0, "tokens": 0}
    assert s3.listing() == before


def test_a_cached_listing_never_hides_a_commit(s3):
    """A handle that listed a unit-chunked array's chunks (as a verification tool may)
    still reads a unit another process committed afterwards as committed."""
    url = s3.url("x.zarr")
    w.make_store(url, N)
    w.write_units(FeatureStore.open(url, "r+"), "tokens", [0])
    reader = FeatureStore.open(url)
    feat = reader.feature("tokens")
    assert feat.raw("status").nchunks_initialized == 1  # lists status/c/
    assert feat.counts()["committed"] == 4
    # Another process's handle: its own filesystem instance.
    other = FeatureStore.open(url, "r+", storage_options={"skip_instance_cache": True})
    w.write_units(other, "tokens", [1, 2])
    assert feat.counts()["committed"] == 12
    assert FeatureStore.open(url).feature("tokens").pending_units() == [3, 4]


def test_cli_on_s3_urls(s3, demo_store):
    url = upload(s3, demo_store[0], "demo.zarr")
    out = s3.url("shards")
    info = cli("info", url, "--json")
    assert info.returncode == 0, info.stderr
    local = store_info(FeatureStore.open(demo_store[0]))
    got = json.loads(info.stdout)
    assert got["store"] == url and got["samples"] == DEMO_N
    assert [{k: v for k, v in s.items()} for s in got["specs"]] == local["specs"]
    ok = cli("verify", url)
    assert ok.returncode == 0 and ok.stdout.splitlines()[-1].startswith("ok: checked"), ok.stdout + ok.stderr
    failures = cli("failures", url, "--json")
    assert failures.returncode == 0, failures.stderr
    assert [(r["sample_id"], r["spec"]) for r in json.loads(failures.stdout)] == [(FAILED_ID, "tokens")]
    exported = cli("export-wds", url, out, "--maxcount", "2")
    assert exported.returncode == 0, exported.stderr
    assert f"exported {len(GOOD)} samples in 3 shard(s) to {out}" in exported.stdout
    names = sorted(s3.tree("shards"))
    assert names == ["shard-000000.tar", "shard-000001.tar", "shard-000002.tar", "shards.json"]
    # The same store exported locally gives the same shard bytes (the index names its store).
    export_wds(FeatureStore.open(demo_store[0]), str(demo_store[0].parent / "local-shards"), maxcount=2)
    local_shards = tree(demo_store[0].parent / "local-shards")
    assert {k: v for k, v in s3.tree("shards").items() if k.endswith(".tar")} == {
        k: v for k, v in local_shards.items() if k.endswith(".tar")
    }


def _epoch(ds, epoch: int, workers: int) -> list[str]:
    ds.set_epoch(epoch)
    loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=workers, collate_fn=lambda x: x)
    return [s["sample_id"] for s in loader]


def test_shards_stream_from_s3_through_dataloader_workers_exactly_once(s3, demo_store):
    store = FeatureStore.open(demo_store[0])
    expect = {"thumb": store.feature("thumb").spec.id, "tokens": TOKENS.id}
    out = s3.url("shards")
    export_wds(store, out, maxcount=2)
    ds = ShardDataset(out, expect, shuffle=4, seed=1)
    assert all(u.startswith(f"{out}/shard-") for u in ds.urls) and len(ds.urls) == 3
    first = _epoch(ds, 0, workers=2)
    assert sorted(first) == GOOD and len(first) == len(GOOD)  # every sample exactly once
    assert _epoch(ds, 0, workers=2) == first
    values = {s["sample_id"]: s["tokens"] for s in ShardDataset(out, expect)}
    assert all((values[sid] == store.feature("tokens").read_id(sid)).all() for sid in GOOD)
    assert isinstance(open_features(out, expect), ShardDataset)


def test_a_read_only_store_on_s3_is_never_written(s3, demo_store):
    url = upload(s3, demo_store[0], "demo.zarr")
    store = FeatureStore.open(url)
    expect = {"thumb": store.feature("thumb").spec.id, "tokens": TOKENS.id}
    before = s3.listing("demo.zarr")
    assert main(["info", url]) == 0
    assert main(["verify", url]) == 0
    assert main(["failures", url]) == 0
    assert cli("verify", url).returncode == 0
    assert sorted(s["sample_id"] for s in ZarrDataset(url, expect)) == GOOD
    assert isinstance(open_features(url, expect), ZarrDataset)
    export_wds(FeatureStore.open(url), s3.url("shards"), maxcount=2)
    assert sorted(s["sample_id"] for s in ShardDataset(s3.url("shards"), expect)) == GOOD
    assert s3.listing("demo.zarr") == before  # same objects, ETags and modification times
    with pytest.raises(Exception, match="read-only|read only"):  # zarr refuses writes on an "r" handle
        store.set_attr("x", 1)
    assert s3.listing("demo.zarr") == before


def test_verify_repair_on_s3(s3, tmp_path, capsys):
    fill(tmp_path / "clean.zarr")
    url = s3.url("x.zarr")
    store = fill(url)
    corrupt(store, "tokens", 2, "data", "truncate")
    corrupt(store, "pooled", 1, "media_hash", "garbage")
    before = s3.listing()
    assert main(["verify", url]) == 1  # found, nothing touched without --repair
    assert s3.listing() == before
    capsys.readouterr()
    assert main(["verify", url, "--repair"]) == 0
    said = capsys.readouterr().out
    assert "withdrew spec pooled-" in said and "unit 1" in said and "withdrew spec tokens-" in said, said
    store = FeatureStore.open(url, "r+")
    assert verify_store(store).ok
    assert store.feature("tokens").pending_units() == [2] and store.feature("pooled").pending_units() == [1]
    assert recompute(store) == {"pooled": 1, "tokens": 1}
    assert s3.tree("x.zarr") == tree(tmp_path / "clean.zarr")


# ---- errors ----------------------------------------------------------------------
def test_no_such_bucket_is_named(s3):
    missing = f"featstore-missing-{uuid.uuid4().hex[:8]}"
    url = f"s3://{missing}/x.zarr"
    for call in (lambda: FeatureStore.open(url), lambda: FeatureStore.open_or_create(url)):
        with pytest.raises(StorageAccessError, match=f"no such bucket '{missing}'") as err:
            call()
        assert url in str(err.value)
    fill(s3.url("x.zarr"))
    with pytest.raises(StorageAccessError, match=f"export-wds: s3://{missing}/shards: no such bucket"):
        export_wds(FeatureStore.open(s3.url("x.zarr")), f"s3://{missing}/shards")
    with pytest.raises(ShardFormatError, match=f"s3://{missing}/shards/shards.json: no such bucket"):
        ShardDataset(f"s3://{missing}/shards")
    assert not s3.fs().exists(missing)  # nothing made the bucket on the way
    # A bucket that is there but holds no store: that, not a bucket problem.
    with pytest.raises(StoreError, match=f"no featstore at {s3.url('none.zarr')}") as err:
        FeatureStore.open(s3.url("none.zarr"))
    assert not isinstance(err.value, StorageAccessError)


def test_wrong_credentials_say_access_denied_without_the_secret(s3):
    from moto.core.authorization import enable_iam_authentication

    fill(s3.url("x.zarr"))
    url = s3.url("x.zarr")
    wrong = {"key": "AKIAFEATSTOREWRONG", "secret": "wrong-secret-b7e2a9"}
    with enable_iam_authentication():  # moto checks signatures against its IAM users: none match
        with pytest.raises(StorageAccessError, match=f"{url}: access denied") as err:
            FeatureStore.open(url, storage_options=wrong)
        assert "wrong-secret-b7e2a9" not in str(err.value)
        env = {"AWS_ACCESS_KEY_ID": "AKIAFEATSTOREWRONG", "AWS_SECRET_ACCESS_KEY": SECRET_KEY}
        for argv in (("info", url), ("verify", url), ("export-wds", url, s3.url("shards"))):
            done = cli(*argv, env=env)
            assert done.returncode == 2, done.stdout + done.stderr
            assert f"{url}: access denied" in done.stderr and "Traceback" not in done.stderr, done.stderr
            assert SECRET_KEY not in done.stdout + done.stderr


def test_unreachable_endpoint_is_named(s3):
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    closed = f"http://127.0.0.1:{port}"
    url = s3.url("x.zarr")
    with pytest.raises(StorageAccessError, match=f"{url}: cannot reach the storage endpoint") as err:
        FeatureStore.open(url, storage_options={"endpoint_url": closed, "key": "AKIAFEATSTORE", "secret": SECRET_KEY})
    assert f"127.0.0.1:{port}" in str(err.value) and SECRET_KEY not in str(err.value)
    done = cli("info", url, env={"AWS_ENDPOINT_URL": closed})
    assert done.returncode == 2 and f"{url}: cannot reach the storage endpoint" in done.stderr, done.stderr
    assert SECRET_KEY not in done.stdout + done.stderr


def test_endpoint_from_an_fsspec_variable(s3):
    """``FSSPEC_S3_ENDPOINT_URL`` (fsspec's own configuration) reaches s3fs, and wins over
    botocore's ``AWS_ENDPOINT_URL``, here pointing at a closed port."""
    fill(s3.url("x.zarr"))
    done = cli(
        "info", s3.url("x.zarr"), env={"AWS_ENDPOINT_URL": "http://127.0.0.1:9", "FSSPEC_S3_ENDPOINT_URL": s3.endpoint}
    )
    assert done.returncode == 0, done.stderr
    assert f"samples {N}" in done.stdout
