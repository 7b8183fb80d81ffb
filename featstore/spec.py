"""FeatureSpec: everything that decides a feature's bytes, and its content-addressed id."""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

# Bump when the on-disk layout or the meaning of a spec field changes: every
# spec id changes with it, so old caches are never mistaken for new ones.
FORMAT_VERSION = 1

# Storage dtypes. Only core Zarr v3 data types, so any Zarr reader can open the
# store: bfloat16 is not one, so bf16 compute is stored as float16 or float32
# (the compute dtype belongs in ``preprocess``, since it changes the bytes).
DTYPES = ("float16", "float32")
_NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,47}$")
# Fields recorded for provenance only: they do not decide the bytes (the weights
# fingerprint does), so they stay out of the id. Loading the same weights from
# another path must not invalidate a cache.
PROVENANCE_FIELDS = ("source",)


def canonical_json(obj: Any) -> str:
    """Serialise ``obj`` the one way that is hashed: sorted keys, no spaces, ASCII.

    Raises:
        ValueError: if ``obj`` holds NaN/inf or a value JSON cannot represent.
    """
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def _plain(value: Any, where: str) -> Any:
    """Convert tuples to lists and check the value is plain JSON data."""
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise ValueError(f"{where}: keys must be strings, got {k!r}")
            out[k] = _plain(v, f"{where}.{k}")
        return out
    if isinstance(value, (list, tuple)):
        return [_plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{where}: {value!r} is not a finite number")
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    raise ValueError(f"{where}: {value!r} ({type(value).__name__}) is not JSON data")


@dataclass(frozen=True)
class FeatureSpec:
    """How one kind of feature is made, precisely enough that equal ids mean equal bytes.

    Args:
        name: short slot name, also the feature's file name in shards (``[a-z][a-z0-9_]*``).
        encoder: model architecture, e.g. ``"Blip2VisionModel"``.
        weights: fingerprint of the loaded weights (hash of the state dict), not a model name.
        shape: shape of one sample's feature, e.g. ``(1024,)`` or ``(1025, 1408)``.
        dtype: storage dtype, one of ``DTYPES``.
        preprocess: every preprocessing parameter (frame selection, frames, size, face
            detector, sample rate, ...), as plain JSON data.
        layer: which layer's output (index or name), ``None`` for the final output.
        pooling: how tokens/frames are reduced, e.g. ``"mean"`` or ``"none"``.
        source: where the weights were loaded from (provenance only, not part of the id).
        format_version: featstore format version the feature was written under.

    Raises:
        ValueError: naming the field and value when any field is invalid.
    """

    name: str
    encoder: str
    weights: str
    shape: tuple[int, ...]
    dtype: str = "float16"
    preprocess: Mapping[str, Any] = field(default_factory=dict)
    layer: int | str | None = None
    pooling: str = "none"
    source: str = ""
    format_version: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME_RE.match(self.name):
            raise ValueError(f"spec name {self.name!r} must match {_NAME_RE.pattern}")
        for attr in ("encoder", "weights", "pooling"):
            if not isinstance(getattr(self, attr), str) or not getattr(self, attr):
                raise ValueError(f"spec {self.name!r}: {attr} must be a non-empty string, got {getattr(self, attr)!r}")
        if self.dtype not in DTYPES:
            raise ValueError(f"spec {self.name!r}: dtype {self.dtype!r} is not one of {DTYPES}")
        shape = tuple(self.shape)
        if not shape or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape):
            raise ValueError(f"spec {self.name!r}: shape {self.shape!r} must be a non-empty tuple of positive ints")
        object.__setattr__(self, "shape", shape)
        object.__setattr__(self, "preprocess", _plain(dict(self.preprocess), f"spec {self.name!r} preprocess"))
        if self.layer is not None and (isinstance(self.layer, bool) or not isinstance(self.layer, (int, str))):
            raise ValueError(f"spec {self.name!r}: layer {self.layer!r} must be an int, a string or None")
        if not isinstance(self.format_version, int) or self.format_version < 1:
            raise ValueError(f"spec {self.name!r}: format_version {self.format_version!r} must be a positive int")

    def to_dict(self) -> dict[str, Any]:
        """All fields as plain JSON data (``shape`` as a list)."""
        return _plain(asdict(self), "spec")

    def identity(self) -> dict[str, Any]:
        """The fields that decide the bytes: ``to_dict()`` minus provenance."""
        d = self.to_dict()
        for k in PROVENANCE_FIELDS:
            d.pop(k)
        return d

    @property
    def id(self) -> str:
        """16 hex digits of sha256 over the canonical JSON of ``identity()``."""
        return hashlib.sha256(canonical_json(self.identity()).encode("ascii")).hexdigest()[:16]

    def to_json(self) -> str:
        """Canonical JSON of every field, provenance included."""
        return canonical_json(self.to_dict())

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> FeatureSpec:
        """Rebuild a spec; unknown keys are an error rather than silently dropped.

        Raises:
            ValueError: naming unknown or missing keys.
        """
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown FeatureSpec fields {unknown}; known: {sorted(known)}")
        kw = dict(d)
        if "shape" in kw:
            kw["shape"] = tuple(kw["shape"])
        try:
            return cls(**kw)
        except TypeError as e:
            raise ValueError(f"incomplete FeatureSpec {dict(d)!r}: {e}") from None

    @classmethod
    def from_json(cls, text: str) -> FeatureSpec:
        """Inverse of ``to_json``."""
        return cls.from_dict(json.loads(text))

    @property
    def key(self) -> str:
        """Group name inside a store: ``<name>-<id>``, unique per spec version."""
        return f"{self.name}-{self.id}"

    def sample_key(self, media_hash: str) -> str:
        """A sample's cache key: this spec's id plus the hash of its input media bytes."""
        return f"{self.id}:{media_hash}"
