"""A store writer process for the exactly-once tests: writes the given units of a
store made by ``make_store`` with features that depend only on the sample."""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from featstore.spec import FeatureSpec  # noqa: E402
from featstore.store import FeatureStore  # noqa: E402

SPECS = (
    FeatureSpec(name="pooled", encoder="TestEncoder", weights="w1", shape=(64,), dtype="float16", pooling="mean"),
    FeatureSpec(name="tokens", encoder="TestEncoder", weights="w2", shape=(17, 32), dtype="float32"),
)
UNITS = {"pooled": 8, "tokens": 4}
CHUNKS = {"pooled": 8, "tokens": 2}  # tokens: two data chunks a unit (issue 13)
FAILING = {"pooled": {"clip_0007": ("decode", "corrupt file: moov atom not found")}}


def sample_ids(n: int) -> list[str]:
    return [f"clip_{i:04d}" for i in range(n)]


def media_hash(sid: str) -> str:
    return hashlib.sha256(f"media:{sid}".encode()).hexdigest()


def make_store(path: str | Path, n: int) -> FeatureStore:
    """The same empty store every time: n samples, both specs."""
    store = FeatureStore.create(path)
    ids = sample_ids(n)
    store.add_samples(ids, [media_hash(s) for s in ids])
    for spec in SPECS:
        store.add_spec(spec, unit_size=UNITS[spec.name], chunk_size=CHUNKS[spec.name])
    return store


def features(spec: FeatureSpec, ids: list[str], hashes: list[str] | None = None) -> np.ndarray:
    """Deterministic features: a function of spec id, sample id and media hash only."""
    rows = []
    for k, sid in enumerate(ids):
        h = media_hash(sid) if hashes is None else hashes[k]
        seed = int.from_bytes(hashlib.sha256(f"{spec.id}/{sid}/{h}".encode()).digest()[:8], "little")
        rows.append(np.random.default_rng(seed).standard_normal(spec.shape).astype(np.float32))
    return np.stack(rows)


def write_units(
    store: FeatureStore,
    name: str,
    units: list[int],
    failing: dict | None = None,
    retry_failed: bool = False,
    progress: bool = False,
) -> int:
    """Write ``units`` of spec ``name`` with features of each sample's current media hash;
    samples named in ``failing`` (default ``FAILING``) are recorded as failed. With
    ``progress``, print ``committed NAME UNIT`` after each unit's commit (the evidence
    a kill test waits for)."""
    feat = store.feature(name)
    failing = FAILING.get(name, {}) if failing is None else failing
    written = 0
    for u in units:
        start, stop = feat.unit_bounds(u)
        ids = store.sample_ids[start:stop]
        hashes = [store.media_hash(s) for s in ids]
        fails = {k: v for k, v in failing.items() if k in ids}
        written += feat.write_unit(u, features(feat.spec, ids, hashes), failures=fails, retry_failed=retry_failed)
        if progress:
            print("committed", name, u, flush=True)
    return written


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("store")
    p.add_argument("jobs", nargs="+", help="NAME:u1,u2,... or NAME:pending")
    p.add_argument(
        "--fail",
        action="append",
        default=None,
        metavar="ID=STAGE:REASON",
        help="record this sample as failed (replaces the built-in failures)",
    )
    p.add_argument("--retry-failed", action="store_true")
    p.add_argument("--progress", action="store_true", help="print a line after each unit's commit")
    args = p.parse_args()
    failing = None
    if args.fail is not None:
        failing = {}
        for item in args.fail:
            sid, _, rest = item.partition("=")
            stage, _, reason = rest.partition(":")
            failing[sid] = (stage, reason)
    store = FeatureStore.open(args.store, "r+")
    for job in args.jobs:
        name, _, spec_units = job.partition(":")
        units = (
            store.feature(name).pending_units() if spec_units == "pending" else [int(u) for u in spec_units.split(",")]
        )
        print(name, write_units(store, name, units, failing, args.retry_failed, args.progress), flush=True)


if __name__ == "__main__":
    main()
