"""An S3 endpoint for the tests: moto's S3 server on 127.0.0.1 at a free port, started by
the tests themselves (the convention of s3fs's own test suite), nothing on the internet.

Fixtures (registered in tests/conftest.py):
    ``s3_server``  session: the endpoint URL of one ThreadedMotoServer.
    ``s3``         per test: a fresh bucket, with the standard AWS environment variables
                   (dummy credentials, region, ``AWS_ENDPOINT_URL``) set for this process
                   and every process it starts (a job's Ray workers inherit them).
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from dataclasses import dataclass

import pytest

ACCESS_KEY = "featstore-test-key"
SECRET_KEY = "featstore-test-secret-6f1c"  # dummy; tests check it never shows in messages
REGION = "us-east-1"


@pytest.fixture(scope="session")
def s3_server():
    """Endpoint URL of a moto S3 server running in this process for the session."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@dataclass
class S3:
    """A test's bucket on the moto server."""

    endpoint: str
    bucket: str

    def url(self, path: str = "") -> str:
        return f"s3://{self.bucket}/{path}".rstrip("/")

    def fs(self):
        """A fresh s3fs filesystem (no shared instance, no listings cache)."""
        import s3fs

        return s3fs.S3FileSystem(skip_instance_cache=True, use_listings_cache=False)

    def tree(self, path: str) -> dict[str, str]:
        """Every object under ``path`` (relative names) -> sha256 of its bytes, like
        ``tests.featstore.store.test_exactly_once.tree`` for a local folder."""
        fs, root = self.fs(), f"{self.bucket}/{path}".rstrip("/")
        return {p[len(root) + 1 :]: hashlib.sha256(fs.cat_file(p)).hexdigest() for p in sorted(fs.find(root))}

    def listing(self, path: str = "") -> dict[str, tuple]:
        """Every object under ``path`` -> (ETag, LastModified, size): what any write changes."""
        fs, root = self.fs(), f"{self.bucket}/{path}".rstrip("/")
        return {
            p: (i["ETag"], str(i["LastModified"]), i["size"]) for p, i in sorted(fs.find(root, detail=True).items())
        }


@pytest.fixture
def s3(s3_server, monkeypatch) -> S3:
    """A new bucket on the session's moto server, the AWS variables set for it."""
    import s3fs

    for name, value in {
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_ENDPOINT_URL": s3_server,  # botocore reads it; child processes inherit it
    }.items():
        monkeypatch.setenv(name, value)
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)
    s3fs.S3FileSystem.clear_instance_cache()  # instances cache listings and credentials
    bucket = f"featstore-{uuid.uuid4().hex[:12]}"
    s3fs.S3FileSystem(skip_instance_cache=True).mkdir(bucket)
    yield S3(s3_server, bucket)
    s3fs.S3FileSystem.clear_instance_cache()
