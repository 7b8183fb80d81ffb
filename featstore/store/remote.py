"""Object-storage problems in words: which URL, and whether the bucket is missing, access
is denied or the endpoint cannot be reached. Credentials are never part of a message.

fsspec drivers (s3fs, gcsfs, adlfs) raise their clients' own exceptions, several
layers deep (a botocore ``ClientError`` inside an ``OSError``, an aiohttp
connection error inside botocore's ``EndpointConnectionError``). ``describe``
walks that chain by class name and error code, so that featstore needs none of
those clients to import.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping

import fsspec

from featstore.errors import StorageAccessError

__all__ = ["describe", "is_remote", "probe_bucket", "raise_described", "redact", "store_options"]

LOCAL_PROTOCOLS = frozenset({"file", "local", "memory"})
# Protocols whose URLs start with a bucket (S3, GCS) or container (Azure) name.
BUCKET_PROTOCOLS = frozenset({"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss"})

# Storage-option keys and environment variables whose values are secrets.
SECRET_OPTION_KEYS = frozenset(
    {"secret", "token", "password", "account_key", "sas_token", "client_secret", "connection_string", "credential"}
)
SECRET_ENV = (
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AZURE_STORAGE_KEY",
    "AZURE_STORAGE_ACCOUNT_KEY",
    "AZURE_STORAGE_SAS_TOKEN",
    "AZURE_STORAGE_CONNECTION_STRING",
    "AZURE_CLIENT_SECRET",
)

_NO_BUCKET_CODES = {"NoSuchBucket"}
_DENIED_CODES = {
    "403",
    "AccessDenied",
    "AllAccessDisabled",
    "ExpiredToken",
    "Forbidden",
    "InvalidAccessKeyId",
    "InvalidToken",
    "SignatureDoesNotMatch",
    "AuthorizationFailure",
    "AuthenticationFailed",
}
_UNREACHABLE_CLASSES = {
    "EndpointConnectionError",
    "ConnectTimeoutError",
    "ConnectionClosedError",
    "ClientConnectorError",
    "ServerDisconnectedError",
    "ConnectionRefusedError",
    "gaierror",
}
_USERINFO = re.compile(r"(://)[^/@\s]+@")


def is_remote(url: str) -> bool:
    """Whether ``url`` names object storage or another non-local fsspec filesystem."""
    protocol = url.split("://", 1)[0] if "://" in url else "file"
    return protocol not in LOCAL_PROTOCOLS


def redact(text: str, storage_options: Mapping | None = None) -> str:
    """``text`` with secrets from ``storage_options`` and the environment, and the
    user:password part of URLs, replaced by ``***``."""
    secrets = [os.environ.get(k, "") for k in SECRET_ENV]
    secrets += [str(v) for k, v in _flatten(storage_options or {}) if k.lower() in SECRET_OPTION_KEYS]
    for s in sorted(secrets, key=len, reverse=True):
        if len(s) >= 4:
            text = text.replace(s, "***")
    return _USERINFO.sub(r"\1***@", text)


def _flatten(options: Mapping) -> Iterator[tuple[str, object]]:
    for k, v in options.items():
        if isinstance(v, Mapping):
            yield from _flatten(v)
        else:
            yield str(k), v


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    todo = [exc]
    while todo:
        e = todo.pop(0)
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        todo += [e.__cause__, e.__context__, *(a for a in getattr(e, "args", ()) if isinstance(a, BaseException))]
        todo += [getattr(e, "os_error", None)]  # aiohttp keeps the refused connection there


def _code(e: BaseException) -> str | None:
    response = getattr(e, "response", None)
    if isinstance(response, Mapping):
        return str(response.get("Error", {}).get("Code") or "") or None
    return None


def describe(url: str, exc: BaseException, storage_options: Mapping | None = None) -> str | None:
    """A one-line account of why ``url`` could not be used, or None when ``exc`` is not
    one of the storage problems named here (no such bucket, access denied,
    endpoint unreachable). Secrets are redacted from the message."""
    kind = detail = None
    for e in _chain(exc):
        names = {c.__name__ for c in type(e).__mro__}
        code = _code(e)
        if names & _UNREACHABLE_CLASSES:
            endpoint = getattr(e, "kwargs", {}).get("endpoint_url") if hasattr(e, "kwargs") else None
            kind, detail = "unreachable", endpoint or str(e)
            break
        if code in _NO_BUCKET_CODES or (isinstance(e, FileNotFoundError) and "bucket does not exist" in str(e)):
            kind, detail = "no_bucket", str(e)
            break
        if code in _DENIED_CODES or isinstance(e, PermissionError):
            kind, detail = "denied", f"{code}: {e}" if code and code not in str(e) else str(e)
            break
    if kind is None:
        return None
    bucket = _bucket(url)
    if kind == "no_bucket":
        msg = f"{url}: no such bucket {bucket!r} ({detail}); create it first or fix the URL"
    elif kind == "denied":
        msg = (
            f"{url}: access denied ({detail}); check the credentials (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, "
            f"AWS_PROFILE or the storage options) and the bucket's policy"
        )
    else:
        msg = (
            f"{url}: cannot reach the storage endpoint ({detail}); check the endpoint URL "
            f"(AWS_ENDPOINT_URL or the storage option endpoint_url) and the network"
        )
    return redact(msg, storage_options)


def _bucket(url: str) -> str:
    return url.split("://", 1)[-1].split("/", 1)[0]


def probe_bucket(url: str, storage_options: Mapping | None = None) -> str | None:
    """For a bucket URL (``BUCKET_PROTOCOLS``): a description (``describe``) of what stops
    its bucket from being used, or None when the bucket is there and readable, or
    ``url`` has no bucket (a local path, ``memory://``, ``http://``)."""
    if url.split("://", 1)[0] not in BUCKET_PROTOCOLS or "://" not in url:
        return None
    try:
        fs, _ = fsspec.core.url_to_fs(url, **dict(storage_options or {}))
        fs.info(_bucket(url))
    except FileNotFoundError:
        return redact(f"{url}: no such bucket {_bucket(url)!r}; create it first or fix the URL", storage_options)
    except Exception as e:  # the driver's own errors: described when they are a storage problem
        return describe(url, e, storage_options)
    return None


def store_options(url: str, storage_options: dict | None) -> dict | None:
    """Storage options a store is opened with: for remote URLs, fsspec's listings cache
    is off unless the caller set it.

    A driver such as s3fs answers "does this object exist" and "how big is it"
    from a cached listing of its folder when it has one, so a handle that once
    listed a unit's chunks (``featstore info`` counts them) would read a chunk
    another process committed later as missing, i.e. pending. Reads and commit
    checks must see the storage as it is now, whatever was listed before.
    """
    if not is_remote(url):
        return storage_options
    return {"use_listings_cache": False, **(storage_options or {})}


def raise_described(url: str, exc: Exception, storage_options: dict | None) -> None:
    """Raise StorageAccessError when ``exc`` is a storage problem (``describe``)."""
    problem = describe(url, exc, storage_options)
    if problem:
        raise StorageAccessError(problem) from None
