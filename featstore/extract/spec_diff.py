"""What makes a spec's id differ from another's, in words: the planner's ``new spec id``
reason names it (``encoder weights changed``, ``preprocessing changed: ...``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from featstore.spec import FeatureSpec

__all__ = ["json_short", "spec_changes"]


def _diff(a: Any, b: Any, where: str, out: list[str]) -> None:
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        for k in sorted(set(a) | set(b)):
            _diff(a.get(k), b.get(k), f"{where}.{k}" if where else k, out)
    elif a != b:
        out.append(f"{where}: {json_short(a)} -> {json_short(b)}")


def json_short(v: Any, width: int = 40) -> str:
    import json

    text = json.dumps(v, sort_keys=True)
    return text if len(text) <= width else text[: width - 3] + "..."


def spec_changes(old: FeatureSpec, new: FeatureSpec) -> list[str]:
    """What makes ``new``'s id differ from ``old``'s: ``"encoder weights changed"``,
    ``"preprocessing changed: preprocess.frames.count: 8 -> 4"``, ... (identity fields only)."""
    a, b = old.identity(), new.identity()
    out = []
    if a.get("weights") != b.get("weights"):
        out.append(f"encoder weights changed ({str(a.get('weights'))[:19]} -> {str(b.get('weights'))[:19]})")
    pre: list[str] = []
    _diff(a.get("preprocess"), b.get("preprocess"), "preprocess", pre)
    if pre:
        out.append("preprocessing changed: " + ", ".join(pre))
    other: list[str] = []
    for k in sorted(set(a) | set(b)):
        if k not in ("weights", "preprocess"):
            _diff(a.get(k), b.get(k), k, other)
    if other:
        out.append("spec changed: " + ", ".join(other))
    return out
