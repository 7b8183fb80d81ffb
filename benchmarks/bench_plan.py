"""Resume planning at scale: the pending units of a synthetic store of N samples and 4 specs.

Builds (once, cached under --work) a store of ``--samples`` samples with four
1024-d float16 specs at each ``--unit-sizes`` value: 98% of samples committed,
0.5% failed, 0.5% pending in scattered units, 0.1% stale (the feature was
computed from other media bytes), and the last 1% appended but never written
(no chunk files). The data arrays are left unwritten: planning never reads
them. The commit-flag and input-hash chunks are written straight to their
files (zstd, exactly what zarr writes; checked by reading a few back through
zarr), because writing hundreds of thousands of chunks through zarr would take
longer than the measurement.

Each measurement runs in a fresh process: import the planner, open the store
(index of N ids), ``plan_extraction`` for the four specs (with
``--retry-failed``), and report seconds and peak RSS (``ru_maxrss``). The
planner's units are checked against the ones computed here from the arrays.
``--zarr-too`` also measures the same plan with the direct chunk reader turned
off (zarr's generic read path), side by side, where it fits in the time.

Run: ``python benchmarks/bench_plan.py [--samples 1000000] [--unit-sizes 256,16]``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SPECS = ("global_pooled", "local", "temporal", "audio")
GOAL_S, GOAL_MB = 5.0, 1024


def build(path: Path, n: int, unit: int, seed: int = 0) -> dict:
    """The synthetic store; returns the expected pending units per spec."""
    from numcodecs.zstd import Zstd

    from featstore.spec import FeatureSpec
    from featstore.store import FeatureStore

    rng = np.random.default_rng(seed)
    store = FeatureStore.create(path)
    ids = [f"clip_{i:07d}" for i in range(n)]
    hashes = rng.integers(0, 256, (n, 32), dtype=np.uint8)
    store.index.append(ids, hashes)
    zstd = Zstd(level=3)
    written = int(n * 0.99) // unit * unit  # the tail was appended, never written
    expected = {}
    for k, name in enumerate(SPECS):
        spec = FeatureSpec(name=name, encoder="Synthetic", weights=f"w{k}", shape=(1024,), dtype="float16")
        feat = store.add_spec(spec, unit_size=unit)
        status = np.ones(n, np.int8)
        status[rng.random(n) < 0.005] = 2
        status[rng.random(n) < 0.005] = 0
        fh = hashes.copy()
        stale = rng.random(n) < 0.001
        fh[stale, 0] ^= 0xFF
        status[written:] = 0
        fh[written:] = 0
        todo = (status != 1) | stale
        expected[name] = np.unique(np.flatnonzero(todo) // unit).tolist()
        for arr_name, values in (("media_hash", fh), ("status", status)):
            arr = feat.raw(arr_name)
            root = Path(path) / arr.path
            for u in range(written // unit):
                key = arr.metadata.encode_chunk_key((u,) + (0,) * (arr.ndim - 1))
                f = root / key
                f.parent.mkdir(parents=True, exist_ok=True)
                f.write_bytes(zstd.encode(np.ascontiguousarray(values[u * unit : (u + 1) * unit]).tobytes()))
            # What zarr reads back is what was meant.
            for u in (0, written // unit - 1):
                assert np.array_equal(arr[u * unit : (u + 1) * unit], values[u * unit : (u + 1) * unit])
    return expected


def measure(path: str, expected_file: str, zarr_only: bool) -> dict:
    """Runs in a fresh process: import, open, plan; seconds and peak RSS."""
    t0 = time.perf_counter()
    if zarr_only:
        import featstore.store.chunks as chunks

        chunks.read_whole_local = lambda arr, threads=8: None  # noqa: E731  (zarr's generic path)
        import featstore.store.array as array

        array.read_whole_local = chunks.read_whole_local
    from featstore.extract.plan import plan_extraction
    from featstore.store import FeatureStore

    rss_imported = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t1 = time.perf_counter()
    store = FeatureStore.open(path)
    t2 = time.perf_counter()
    specs = {f.spec.name: f.spec for f in store.features()}
    plan = plan_extraction(store, specs, retry_failed=True)
    t3 = time.perf_counter()
    expected = json.loads(Path(expected_file).read_text())
    got = {slot: sp.units for slot, sp in plan.specs.items()}
    assert got == expected, "planner units differ from the synthetic store's"
    return {
        "import_s": round(t1 - t0, 3),
        "open_s": round(t2 - t1, 3),
        "plan_s": round(t3 - t2, 3),
        "open_plus_plan_s": round(t3 - t1, 3),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "rss_after_imports_mb": round(rss_imported, 1),
        "pending_units": {k: len(v) for k, v in got.items()},
    }


def floor(path: str) -> dict:
    """The limit: open, read and close every commit-flag and input-hash chunk file
    (the same 8 threads), with no decompression and no planning."""
    from concurrent.futures import ThreadPoolExecutor

    files = [
        os.path.join(dp, f)
        for name in ("status", "media_hash")
        for spec in sorted(os.listdir(os.path.join(path, "specs")))
        for dp, _, fs in os.walk(os.path.join(path, "specs", spec, name, "c"))
        for f in fs
    ]
    t0 = time.perf_counter()

    def read(lo: int) -> int:
        n = 0
        for p in files[lo : lo + 4096]:
            fd = os.open(p, os.O_RDONLY)
            n += len(os.read(fd, 1 << 20))
            os.close(fd)
        return n

    with ThreadPoolExecutor(8) as pool:
        total = sum(pool.map(read, range(0, len(files), 4096)))
    return {"files": len(files), "bytes": total, "read_s": round(time.perf_counter() - t0, 3)}


def run_child(path: Path, exp: Path, zarr_only: bool, timeout: int, floor_only: bool = False) -> dict:
    cmd = [sys.executable, __file__, "--measure", str(path), "--expected", str(exp)]
    if zarr_only:
        cmd.append("--zarr-path")
    if floor_only:
        cmd.append("--floor")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, check=True)
    except subprocess.TimeoutExpired:
        return {"timed_out_s": timeout}
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--samples", type=int, default=1_000_000, help="samples in the synthetic store")
    p.add_argument("--unit-sizes", default="256,16", help="comma-separated unit sizes to build and measure")
    p.add_argument("--repeats", type=int, default=3, help="fresh-process measurements per store (best is reported)")
    p.add_argument("--zarr-too", action="store_true", help="also measure with zarr's generic read path")
    p.add_argument("--zarr-timeout", type=int, default=300, help="seconds allowed for a zarr-path measurement")
    p.add_argument("--work", default="/tmp/featstore-bench-plan", help="where the synthetic stores are kept")
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "plan.json"), help="JSON results")
    p.add_argument("--measure", help=argparse.SUPPRESS)
    p.add_argument("--expected", help=argparse.SUPPRESS)
    p.add_argument("--zarr-path", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--floor", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.measure:
        print(json.dumps(floor(args.measure) if args.floor else measure(args.measure, args.expected, args.zarr_path)))
        return 0
    rows = []
    for unit in [int(u) for u in args.unit_sizes.split(",")]:
        path = Path(args.work) / f"n{args.samples}-u{unit}.zarr"
        exp = path.with_suffix(".expected.json")
        if not exp.exists():
            t = time.perf_counter()
            expected = build(path, args.samples, unit)
            exp.write_text(json.dumps(expected))
            print(f"built {path} in {time.perf_counter() - t:.0f} s", file=sys.stderr)
        runs, floors = [], []
        for _ in range(args.repeats):  # planner and floor alternate, so load changes hit both
            runs.append(run_child(path, exp, False, 600))
            floors.append(run_child(path, exp, False, 600, floor_only=True))
        best = min(runs, key=lambda r: r["open_plus_plan_s"])
        row = {
            "samples": args.samples,
            "specs": len(SPECS),
            "unit_size": unit,
            **best,
            "all_open_plus_plan_s": [r["open_plus_plan_s"] for r in runs],
            "floor_read_files_s": min(f["read_s"] for f in floors),
            "floor_files": floors[0]["files"],
            "plan_s_over_floor": round(best["plan_s"] / max(1e-9, min(f["read_s"] for f in floors)), 2),
            "meets_goal": best["open_plus_plan_s"] < GOAL_S and best["peak_rss_mb"] < GOAL_MB,
        }
        if args.zarr_too:
            z = run_child(path, exp, True, args.zarr_timeout)
            row["zarr_path"] = z
            if "open_plus_plan_s" in z:
                row["speedup_vs_zarr_path"] = round(z["open_plus_plan_s"] / best["open_plus_plan_s"], 1)
        rows.append(row)
    print(
        f"{'samples':>9} {'unit':>5} {'files':>8} {'open s':>7} {'plan s':>7} {'total s':>8} {'peak MB':>8} "
        f"{'floor s':>8} {'zarr s':>8}  goal <{GOAL_S:.0f} s, <{GOAL_MB} MB"
    )
    for r in rows:
        z = r.get("zarr_path", {})
        zs = z.get("open_plus_plan_s", f">{z['timed_out_s']}" if "timed_out_s" in z else "-")
        print(
            f"{r['samples']:>9} {r['unit_size']:>5} {r['floor_files']:>8} {r['open_s']:>7} {r['plan_s']:>7} "
            f"{r['open_plus_plan_s']:>8} {r['peak_rss_mb']:>8} {r['floor_read_files_s']:>8} {zs!s:>8}  "
            f"{'met' if r['meets_goal'] else 'NOT met'}"
        )
    result = {
        "benchmark": "bench_plan",
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{platform.machine()} {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the end",
        "command": "python benchmarks/bench_plan.py " + " ".join(sys.argv[1:]),
        "rows": rows,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
