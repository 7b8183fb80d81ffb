"""Compare two specs of one store sample by sample: are our features the original's?

The original's users mostly fail to reproduce its numbers because their own
features differ from the released ones. ``featstore compare STORE A B`` reads
every sample committed (and fresh) in both specs, a work unit at a time, and
reports per sample the cosine similarity and the largest absolute difference
of the two features, computed in float64 over the flattened feature, with a
summary: median and 5th percentile of the cosine, the worst samples, and the
samples only one spec has.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from featstore.store import FeatureStore
from featstore.store.layout import OK

__all__ = ["CompareReport", "compare_specs"]

# A feature of zeros has no direction; its cosine with anything is taken as 0
# unless both are zeros (then 1): the comparison must not divide by zero.
_TINY = 1e-30


@dataclass
class CompareReport:
    """What ``compare_specs`` found.

    Attributes:
        spec_a, spec_b: the two specs' ``name-id`` keys.
        ids: the samples compared (committed and fresh in both), in index order.
        cosine: cosine similarity per compared sample.
        max_abs: largest absolute difference per compared sample.
        only_a, only_b: samples committed in one spec only.
        min_cosine: the threshold the report is judged by.
    """

    spec_a: str
    spec_b: str
    ids: list[str] = field(default_factory=list)
    cosine: np.ndarray = field(default_factory=lambda: np.zeros(0))
    max_abs: np.ndarray = field(default_factory=lambda: np.zeros(0))
    only_a: list[str] = field(default_factory=list)
    only_b: list[str] = field(default_factory=list)
    min_cosine: float = 0.99

    @property
    def below(self) -> list[str]:
        """Samples whose cosine is below ``min_cosine``, worst first."""
        order = np.argsort(self.cosine, kind="stable")
        return [self.ids[i] for i in order if self.cosine[i] < self.min_cosine]

    @property
    def ok(self) -> bool:
        """At least one sample compared, and none below ``min_cosine``."""
        return bool(self.ids) and not self.below

    def worst(self, k: int = 5) -> list[dict[str, Any]]:
        """The ``k`` samples of lowest cosine, with both figures."""
        order = np.argsort(self.cosine, kind="stable")[:k]
        return [
            {"sample_id": self.ids[i], "cosine": float(self.cosine[i]), "max_abs": float(self.max_abs[i])}
            for i in order
        ]

    def summary(self) -> dict[str, Any]:
        """The report as plain data (what ``featstore compare --json`` prints)."""
        have = len(self.ids) > 0
        return {
            "spec_a": self.spec_a,
            "spec_b": self.spec_b,
            "compared": len(self.ids),
            "cosine_median": float(np.median(self.cosine)) if have else None,
            "cosine_p5": float(np.percentile(self.cosine, 5)) if have else None,
            "cosine_min": float(self.cosine.min()) if have else None,
            "max_abs_median": float(np.median(self.max_abs)) if have else None,
            "max_abs_max": float(self.max_abs.max()) if have else None,
            "min_cosine": self.min_cosine,
            "below_min_cosine": len(self.below),
            "worst": self.worst(),
            "only_in_a": self.only_a,
            "only_in_b": self.only_b,
            "ok": self.ok,
        }

    def per_sample(self) -> list[dict[str, Any]]:
        """One row per compared sample: id, cosine, max abs difference."""
        return [
            {"sample_id": s, "cosine": float(c), "max_abs": float(m)}
            for s, c, m in zip(self.ids, self.cosine, self.max_abs)
        ]

    def lines(self) -> list[str]:
        """The summary as text."""
        s = self.summary()
        out = [f"compare {self.spec_a} with {self.spec_b}: {s['compared']} sample(s) committed in both"]
        if s["compared"]:
            out.append(f"cosine  median {s['cosine_median']:.6f}  p5 {s['cosine_p5']:.6f}  min {s['cosine_min']:.6f}")
            out.append(f"max |a-b|  median {s['max_abs_median']:.6g}  max {s['max_abs_max']:.6g}")
            out.append("worst: " + ", ".join(f"{w['sample_id']} ({w['cosine']:.6f})" for w in s["worst"]))
        for name, only in (("a", self.only_a), ("b", self.only_b)):
            if only:
                out.append(f"only in {name}: {len(only)} sample(s), e.g. {only[:5]}")
        if not s["compared"]:
            out.append("FAIL: no sample is committed in both specs")
        elif s["below_min_cosine"]:
            out.append(f"FAIL: {s['below_min_cosine']} sample(s) below --min-cosine {self.min_cosine}")
        else:
            out.append(f"ok: every sample at or above --min-cosine {self.min_cosine}")
        return out


def _cosine_and_max_abs(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row-wise cosine and max |a - b| of two ``[n, ...]`` blocks, in float64."""
    a = a.reshape(len(a), -1).astype(np.float64)
    b = b.reshape(len(b), -1).astype(np.float64)
    dot = np.einsum("ij,ij->i", a, b)
    na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    both_zero = (na < _TINY) & (nb < _TINY)
    cos = np.where(both_zero, 1.0, dot / np.maximum(na * nb, _TINY))
    return np.clip(cos, -1.0, 1.0), np.abs(a - b).max(axis=1, initial=0.0)


def compare_specs(store: FeatureStore, spec_a: str, spec_b: str, min_cosine: float = 0.99) -> CompareReport:
    """Compare two specs of ``store`` on every sample committed in both.

    Args:
        store: an open store.
        spec_a, spec_b: spec names, ids or ``name-id`` keys (as ``FeatureStore.feature``).
        min_cosine: the threshold ``CompareReport.ok`` judges by.

    Returns:
        The report.

    Raises:
        KeyError: a spec is not in the store (naming the specs present).
        ValueError: the two are the same spec, or their feature shapes differ (naming both).
    """
    if not -1.0 <= min_cosine <= 1.0:
        raise ValueError(f"min_cosine {min_cosine!r} must be in [-1, 1]")
    fa, fb = store.feature(spec_a), store.feature(spec_b)
    if fa.spec.key == fb.spec.key:
        raise ValueError(f"{spec_a!r} and {spec_b!r} are the same spec {fa.spec.key}; name two different specs")
    if tuple(fa.spec.shape) != tuple(fb.spec.shape):
        raise ValueError(
            f"spec {fa.spec.key} has feature shape {list(fa.spec.shape)} and {fb.spec.key} has "
            f"{list(fb.spec.shape)}: only features of the same shape compare"
        )
    ok_a, ok_b = fa.status() == OK, fb.status() == OK
    ids = store.sample_ids
    report = CompareReport(fa.spec.key, fb.spec.key, min_cosine=float(min_cosine))
    report.only_a = [ids[i] for i in np.flatnonzero(ok_a & ~ok_b)]
    report.only_b = [ids[i] for i in np.flatnonzero(ok_b & ~ok_a)]
    both = ok_a & ok_b
    cos, mx = [], []
    step = max(fa.unit_size, fb.unit_size)  # whole units of the larger: each chunk is read once
    for start in range(0, store.num_samples, step):
        stop = min(start + step, store.num_samples)
        rows = np.flatnonzero(both[start:stop])
        if rows.size == 0:
            continue
        a, b = fa.data_rows(start, stop)[rows], fb.data_rows(start, stop)[rows]
        c, m = _cosine_and_max_abs(a, b)
        cos.append(c)
        mx.append(m)
        report.ids.extend(ids[start + i] for i in rows)
    if cos:
        report.cosine, report.max_abs = np.concatenate(cos), np.concatenate(mx)
    return report
