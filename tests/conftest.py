"""Fixtures shared by every test folder: the S3 endpoint (tests/s3.py)."""

from tests.s3 import s3, s3_server  # noqa: F401  (fixtures)
