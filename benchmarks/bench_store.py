"""Store write/read throughput per codec and unit (chunk) size, for a pooled and a token feature.

Run: python benchmarks/bench_store.py [--tokens-n 48] [--pooled-n 4096] [--only SECTION ...] [--out benchmarks/results/store.json]

Prints a table and writes the figures as JSON. Data is synthetic but shaped like
real features (per-channel offsets, low-rank token structure, noise) in fp16,
since i.i.d. noise would understate what compression can do.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from featstore.spec import FeatureSpec
from featstore.store import FeatureStore
from featstore.store.layout import CODECS, DEFAULT_CODEC

POOLED = (1024,)  # local / temporal / audio slots
TOKENS = (1025, 1408)  # global slot: EVA ViT-g/14 at 448 px


def feature_like(n: int, shape: tuple[int, ...], seed: int) -> np.ndarray:
    """Synthetic features with the structure real encoder outputs have."""
    rng = np.random.default_rng(seed)
    width = shape[-1]
    offset = rng.standard_normal(width).astype(np.float32) * 0.5
    if len(shape) == 1:
        x = offset + rng.standard_normal((n, width), dtype=np.float32) * 0.3
    else:
        basis = rng.standard_normal((8, width), dtype=np.float32)
        coef = rng.standard_normal((n, shape[0], 8), dtype=np.float32) * 0.4
        x = offset + coef @ basis + rng.standard_normal((n, *shape), dtype=np.float32) * 0.3
    return x.astype(np.float16)


def machine() -> str:
    """CPU model, cores and memory of this machine, for the record."""
    model = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), "?")
    mem = next((int(ln.split()[1]) // (1 << 20) for ln in open("/proc/meminfo") if ln.startswith("MemTotal")), 0)
    return f"{model}, {os.cpu_count()} cores, {mem} GiB, {platform.system()} {platform.machine()}, no GPU"


def run_one(root: Path, data: np.ndarray, codec: str, unit: int) -> dict:
    """Write ``data`` as one spec in whole units, then read it back unit by unit."""
    shutil.rmtree(root, ignore_errors=True)
    n = data.shape[0]
    store = FeatureStore.create(root)
    ids = [f"s{i:06d}" for i in range(n)]
    store.add_samples(ids, [hashlib.sha256(s.encode()).hexdigest() for s in ids])
    spec = FeatureSpec(name="f", encoder="bench", weights="w", shape=data.shape[1:], dtype="float16")
    feat = store.add_spec(spec, unit_size=unit, codec=codec)
    t0 = time.perf_counter()
    for u in range(feat.num_units):
        a, b = feat.unit_bounds(u)
        feat.write_unit(u, data[a:b])
    t_write = time.perf_counter() - t0
    t0 = time.perf_counter()
    total = 0
    for u in range(feat.num_units):
        block, _ = feat.read_unit(u)
        total += block.shape[0]
    t_read = time.perf_counter() - t0
    assert total == n
    mb = data.nbytes / 1e6
    return {
        "codec": codec,
        "unit": unit,
        "samples": n,
        "chunk_mb": round(unit * data[0].nbytes / 1e6, 2),
        "ratio": round(data.nbytes / feat.nbytes_stored(), 3),
        "write_mb_s": round(mb / t_write, 1),
        "write_samples_s": round(n / t_write, 1),
        "read_mb_s": round(mb / t_read, 1),
        "read_samples_s": round(n / t_read, 1),
    }


def bench_chunks_in_unit(tmp: Path, tokens: np.ndarray, unit: int = 16, repeats: int = 11) -> list[dict]:
    """The job's units (16 samples) with the token feature chunked whole (before issue 13)
    or in the spec's own chunk (``add_spec``'s default: 4). Write every unit, read every
    unit back, then read 24 random single samples (as ``ZarrDataset`` does). The two
    layouts run in turn, order rotated each round; figures are medians of the rounds."""
    import statistics

    from featstore.store.layout import default_unit_size

    best = default_unit_size(tokens.shape[1:], "float16")
    layouts = {f"chunk {unit} (one a unit, before)": unit, f"chunk {best} (default)": best}
    rng = np.random.default_rng(0)
    picks = [int(i) for i in rng.integers(0, len(tokens), 24)]
    times: dict[str, dict[str, list[float]]] = {k: {"write": [], "read": [], "random": []} for k in layouts}
    names = list(layouts)
    for r in range(repeats):
        for name in names[r % 2 :] + names[: r % 2]:
            root = tmp / "cu"
            shutil.rmtree(root, ignore_errors=True)
            store = FeatureStore.create(root)
            ids = [f"s{i:06d}" for i in range(len(tokens))]
            store.add_samples(ids, [hashlib.sha256(s.encode()).hexdigest() for s in ids])
            spec = FeatureSpec(name="f", encoder="bench", weights="w", shape=tokens.shape[1:], dtype="float16")
            feat = store.add_spec(spec, unit_size=unit, chunk_size=layouts[name])
            t0 = time.perf_counter()
            for u in range(feat.num_units):
                a, b = feat.unit_bounds(u)
                feat.write_unit(u, tokens[a:b])
            t1 = time.perf_counter()
            for u in range(feat.num_units):
                feat.read_unit(u)
            t2 = time.perf_counter()
            for i in picks:
                feat.data_rows(i, i + 1)
            t3 = time.perf_counter()
            times[name]["write"].append(len(tokens) / (t1 - t0))
            times[name]["read"].append(len(tokens) / (t2 - t1))
            times[name]["random"].append(len(picks) / (t3 - t2))
    return [
        {
            "layout": name,
            "unit": unit,
            "chunk": layouts[name],
            "chunk_mb": round(layouts[name] * tokens[0].nbytes / 1e6, 2),
            **{f"{k}_samples_s": round(statistics.median(v), 1) for k, v in times[name].items()},
        }
        for name in names
    ]


def _filled_store(root: Path, data: np.ndarray, unit: int) -> FeatureStore:
    store = FeatureStore.create(root)
    ids = [f"s{i:06d}" for i in range(data.shape[0])]
    store.add_samples(ids, [hashlib.sha256(s.encode()).hexdigest() for s in ids], [{"label": "happy"}] * len(ids))
    feat = store.add_spec(FeatureSpec(name="f", encoder="bench", weights="w", shape=data.shape[1:]), unit_size=unit)
    for u in range(feat.num_units):
        a, b = feat.unit_bounds(u)
        feat.write_unit(u, data[a:b])
    return store


def bench_readers(tmp: Path, tokens: np.ndarray, pooled: np.ndarray, repeats: int = 31) -> list[dict]:
    """Shard streaming vs a raw sequential read of the same tar bytes, and Zarr random access.

    Everything is read warm from the page cache (a first pass is discarded). The
    three readers run in turn, ``repeats`` rounds with the order rotated every round,
    so that load from other jobs falls on all of them; each figure is the median of
    the rounds, the ratio the median of the rounds' ratios."""
    import io
    import statistics

    from webdataset.tariterators import group_by_keys, tar_file_expander

    from featstore.shards import ShardDataset, ZarrDataset
    from featstore.shards.export import export_wds
    from featstore.shards.reader import make_handler, open_shards, shard_urls

    store = _filled_store(tmp / "rt", tokens, 4)
    export_wds(store, str(tmp / "wds"), maxcount=16)
    tars = sorted((tmp / "wds").glob("*.tar"))
    nbytes = sum(p.stat().st_size for p in tars)
    ds = ShardDataset(str(tmp / "wds"))

    def raw() -> int:
        for p in tars:
            with open(p, "rb", buffering=0) as f:
                while f.read(1 << 20):
                    pass
        return len(tokens)

    def stream() -> int:
        return sum(1 for _ in ds)

    def before() -> int:
        """The reader before issue 13: tarfile's stream mode, then np.load (two copies)."""
        h = make_handler("raise")
        n = 0
        members = tar_file_expander(open_shards(shard_urls(ds.urls, 0, 0, False), h), handler=h)
        for raw_sample in group_by_keys(members, handler=h):
            json.loads(raw_sample["json"])
            np.load(io.BytesIO(raw_sample["f.npy"]), allow_pickle=False)
            n += 1
        return n

    readers = {"raw sequential read": raw, "ShardDataset stream": stream, "before: tarfile + np.load": before}
    times: dict[str, list[float]] = {k: [] for k in readers}
    cpu: dict[str, list[float]] = {k: [] for k in readers}  # this process's CPU seconds (user + system)
    for fn in readers.values():
        fn()
    names = list(readers)
    for r in range(repeats):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            c0 = time.process_time()
            times[name].append(_timed(readers[name]))
            cpu[name].append(time.process_time() - c0)
    rows = [
        {
            "reader": name,
            "feature": "tokens",
            "mb_s": round(nbytes / 1e6 / statistics.median(ts), 1),
            "samples_s": round(len(tokens) / statistics.median(ts), 1),
        }
        for name, ts in times.items()
    ]
    raw_t, raw_c = times["raw sequential read"], cpu["raw sequential read"]
    for name in ("ShardDataset stream", "before: tarfile + np.load"):
        ratios = [a / b for a, b in zip(raw_t, times[name])]
        cpu_ratios = [a / b for a, b in zip(raw_c, cpu[name])]
        rows.append(
            {
                "reader": f"{name} / raw",
                "feature": "tokens",
                "mb_s": round(statistics.median(ratios), 3),
                "samples_s": None,
                "ratio_min_max": [round(min(ratios), 3), round(max(ratios), 3)],
                "cpu_time_ratio": round(statistics.median(cpu_ratios), 3),
                "rounds": len(ratios),
            }
        )
    for feature, data, unit in (("tokens", tokens, 4), ("pooled", pooled, 256)):
        zd = ZarrDataset(_filled_store(tmp / f"z{feature}", data, unit))
        order = np.random.default_rng(0).permutation(len(zd))[: min(len(zd), 400)]
        zd[int(order[0])]
        t = _timed(lambda zd=zd, order=order: [zd[int(i)] for i in order])
        rows.append(
            {
                "reader": "ZarrDataset random access",
                "feature": feature,
                "mb_s": round(len(order) * data[0].nbytes / 1e6 / t, 1),
                "samples_s": round(len(order) / t, 1),
            }
        )
    return rows


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def print_table(title: str, rows: list[dict]) -> None:
    cols = ["codec", "unit", "chunk_mb", "ratio", "write_mb_s", "write_samples_s", "read_mb_s", "read_samples_s"]
    print(f"\n{title}")
    print("  ".join(f"{c:>20}" if c == "codec" else f"{c:>15}" for c in cols))
    for r in rows:
        print("  ".join(f"{r[c]:>20}" if c == "codec" else f"{r[c]:>15}" for c in cols))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tokens-n", type=int, default=48, help="samples of the [1025,1408] token feature")
    p.add_argument("--pooled-n", type=int, default=4096, help="samples of the [1024] pooled feature")
    p.add_argument("--out", default="benchmarks/results/store.json", help="where to write the JSON figures")
    p.add_argument(
        "--only",
        nargs="+",
        choices=["codecs", "units", "chunks", "readers"],
        default=["codecs", "units", "chunks", "readers"],
        help="run only these sections (others keep their figures in --out)",
    )
    args = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench_store_"))
    results: dict = {
        "machine": machine(),
        "python": platform.python_version(),
        "date": datetime.date.today().isoformat(),
        "command": "python benchmarks/bench_store.py "
        + f"--tokens-n {args.tokens_n} --pooled-n {args.pooled_n} --only {' '.join(args.only)}",
    }
    try:
        tokens = feature_like(args.tokens_n, TOKENS, seed=0)
        pooled = feature_like(args.pooled_n, POOLED, seed=1)
        sections = {}
        if "codecs" in args.only:
            sections["tokens_by_codec"] = [run_one(tmp / "t", tokens, c, 4) for c in CODECS]
            sections["pooled_by_codec"] = [run_one(tmp / "p", pooled, c, 256) for c in CODECS]
        if "units" in args.only:
            sections["tokens_by_unit"] = [run_one(tmp / "t", tokens, DEFAULT_CODEC, u) for u in (1, 2, 4, 8, 16)]
            sections["pooled_by_unit"] = [run_one(tmp / "p", pooled, DEFAULT_CODEC, u) for u in (16, 64, 256, 1024)]
        if "chunks" in args.only:
            sections["tokens_chunks_in_16_unit"] = bench_chunks_in_unit(tmp, tokens)
        readers = bench_readers(tmp, tokens, pooled) if "readers" in args.only else None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    for title, rows in sections.items():
        if title == "tokens_chunks_in_16_unit":
            print(f"\n{title}")
            for r in rows:
                print("  ".join(f"{k}={v}" for k, v in r.items()))
            continue
        print_table(title, rows)
    if readers is not None:
        print("\nreaders (for the '/ raw' rows the MB/s column is the ratio)")
        for r in readers:
            print(f"{r['reader']:>34} {r['feature']:>8} {r['mb_s']:>10} MB/s {r['samples_s']} samples/s")
        sections["readers"] = readers
    out = Path(args.out)
    old = json.loads(out.read_text()) if out.exists() else {}
    # Which run each section came from: a partial run (--only) leaves the others' figures.
    runs = old.get("runs", {})
    runs.update({name: {k: results[k] for k in ("machine", "date", "command")} for name in sections})
    if set(args.only) != {"codecs", "units", "chunks", "readers"}:
        results = {}  # keep the full run's top-level machine/date/command
    results.update(sections, runs=runs)
    out.parent.mkdir(parents=True, exist_ok=True)
    # Keep other benchmarks' sections (the shard reader adds its own) in the same file.
    out.write_text(json.dumps({**old, **results}, indent=2) + "\n")
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
