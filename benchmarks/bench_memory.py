"""Memory over a long extraction: driver and Ray worker RSS sampled while jobs/extract.py runs.

Run: python benchmarks/bench_memory.py [--n 1000] [--distinct 40] [--seconds 1] [--time-limit 900]

Makes ``--distinct`` short demo clips and a dataset of ``--n`` samples whose clips
are hard links to them in turn (so making the dataset costs seconds, not the
half hour that 1000 freshly rendered clips take here), then runs the real job,
``jobs/extract.py --preset tiny`` with its default options, on a fresh local Ray,
as a subprocess. Every ``--interval`` seconds it records the driver's RSS, the
RSS and USS of every Ray worker process (descendants of the driver whose command
line is a Ray worker: tasks, actors, idle workers), the Ray system processes
(raylet, GCS, dashboard...) together, and the samples committed so far (read from
the store). If the job runs past ``--time-limit`` seconds it is stopped with
SIGINT, and the curve covers the samples committed by then (the JSON says so).

Flatness: after warm-up (the first ``--warmup`` fraction of committed samples),
the slope of a least-squares line of each series against samples committed, in
MB per 100 samples, and the range (max - min) after warm-up.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil

REPO = Path(__file__).resolve().parents[1]
MB = 1 << 20


def make_dataset(root: Path, n: int, distinct: int, seconds: float) -> Path:
    """A csv dataset of ``n`` samples over ``distinct`` rendered demo clips (hard links)."""
    from featstore.demo.dataset import make_demo_dataset

    src = make_demo_dataset(root / "src", n=distinct, seconds=seconds, audio_source="synth")
    with open(src / "manifest.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    ds = root / "ds"
    (ds / "clips").mkdir(parents=True)
    with open(ds / "manifest.csv", "w", newline="") as f:
        out = csv.DictWriter(f, fieldnames=["sample_id", "video", "audio", "transcript", "label"])
        out.writeheader()
        for i in range(n):
            row = rows[i % distinct]
            video = f"clips/clip_{i:05d}.mp4"
            os.link(src / row["video"], ds / video)
            out.writerow({**row, "sample_id": f"clip_{i:05d}", "video": video, "audio": ""})
    return ds


def is_worker(p: psutil.Process) -> bool:
    cmd = " ".join(p.cmdline())
    return cmd.startswith("ray::") or "default_worker.py" in cmd


def committed(store: Path) -> int | None:
    """Samples committed in every spec so far (the minimum over specs), or None before the specs exist."""
    from featstore.store import FeatureStore

    try:
        feats = FeatureStore.open(str(store)).features()
        return min(f.counts()["committed"] + f.counts()["failed"] for f in feats) if feats else None
    except Exception:
        return None


def sample(driver: psutil.Process, store: Path, t0: float) -> dict[str, Any]:
    """One reading: driver RSS, each worker's RSS and USS, Ray's system processes, samples done."""
    workers, system = [], 0
    try:
        kids = driver.children(recursive=True)
    except psutil.Error:
        kids = []
    for p in kids:
        try:
            if is_worker(p):
                info = p.memory_full_info()
                name = p.cmdline()[0].split(" ")[0] if p.cmdline() else p.name()
                workers.append({"pid": p.pid, "name": name, "rss_mb": info.rss / MB, "uss_mb": info.uss / MB})
            else:
                system += p.memory_info().rss
        except psutil.Error:
            continue
    try:
        drv = driver.memory_info().rss / MB
    except psutil.Error:
        drv = None
    return {
        "t": round(time.time() - t0, 1),
        "done": committed(store),
        "driver_rss_mb": None if drv is None else round(drv, 1),
        # None while no worker runs (Ray starting or shutting down), so the series hold running states only
        "workers_rss_mb": round(sum(w["rss_mb"] for w in workers), 1) if workers else None,
        "workers_uss_mb": round(sum(w["uss_mb"] for w in workers), 1) if workers else None,
        "workers": [{**w, "rss_mb": round(w["rss_mb"], 1), "uss_mb": round(w["uss_mb"], 1)} for w in workers],
        "ray_system_rss_mb": round(system / MB, 1) if system else None,
        "load_1min": round(os.getloadavg()[0], 2),
    }


def flatness(samples: list[dict], key: str, warmup: float) -> dict[str, Any]:
    """Slope (MB per 100 samples committed) and range after warm-up of one series."""
    pts = [(s["done"], s[key]) for s in samples if s["done"] is not None and s[key] is not None]
    if len(pts) < 3:
        return {"points": len(pts)}
    last = max(d for d, _ in pts)
    after = [(d, v) for d, v in pts if d >= warmup * last]
    x = np.array([d for d, _ in after], float)
    y = np.array([v for _, v in after], float)
    slope = float(np.polyfit(x, y, 1)[0]) * 100 if len(set(x.tolist())) > 1 else 0.0
    return {
        "points": len(after),
        "from_sample": int(x.min()),
        "to_sample": int(x.max()),
        "min_mb": round(float(y.min()), 1),
        "max_mb": round(float(y.max()), 1),
        "first_mb": round(float(y[0]), 1),
        "last_mb": round(float(y[-1]), 1),
        "slope_mb_per_100_samples": round(slope, 2),
    }


def per_worker_flatness(samples: list[dict], warmup: float) -> list[dict]:
    """Per worker process (by pid): RSS at the first and last reading after warm-up."""
    last = max((s["done"] or 0) for s in samples)
    series: dict[int, list[tuple[int, float, str]]] = {}
    for s in samples:
        if s["done"] is None or s["done"] < warmup * last:
            continue
        for w in s["workers"]:
            series.setdefault(w["pid"], []).append((s["done"], w["rss_mb"], w["name"]))
    out = []
    for pid, pts in sorted(series.items()):
        if len(pts) < 2:
            continue
        out.append(
            {
                "pid": pid,
                "name": pts[-1][2],
                "readings": len(pts),
                "first_rss_mb": pts[0][1],
                "last_rss_mb": pts[-1][1],
                "max_rss_mb": max(p[1] for p in pts),
            }
        )
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=1000, help="samples in the dataset (default 1000)")
    p.add_argument("--distinct", type=int, default=40, help="distinct rendered clips the samples link to")
    p.add_argument("--seconds", type=float, default=1.0, help="seconds per clip (default 1)")
    p.add_argument("--interval", type=float, default=2.0, help="seconds between readings (default 2)")
    p.add_argument("--time-limit", type=float, default=900.0, help="stop the job (SIGINT) after this many seconds")
    p.add_argument("--warmup", type=float, default=0.2, help="fraction of the samples done counted as warm-up")
    p.add_argument("--out", default="benchmarks/results/memory.json", help="where to write the JSON figures")
    args = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench_memory_"))
    try:
        t_make = time.perf_counter()
        ds = make_dataset(tmp, args.n, args.distinct, args.seconds)
        t_make = time.perf_counter() - t_make
        store = tmp / "store.zarr"
        cmd = [sys.executable, str(REPO / "jobs" / "extract.py"), "--dataset", str(ds), "--format", "csv"]
        cmd += ["--store", str(store), "--work-dir", str(tmp / "work"), "--ray-address", "local"]
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        t0 = time.time()
        job = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        driver = psutil.Process(job.pid)
        samples, stopped = [], False
        while job.poll() is None:
            samples.append(sample(driver, store, t0))
            s = samples[-1]
            print(
                f"t={s['t']:7.1f}s done={s['done']} driver={s['driver_rss_mb']} MB "
                f"workers={s['workers_rss_mb']} MB ({len(s['workers'])}) uss={s['workers_uss_mb']} MB "
                f"load={s['load_1min']}",
                flush=True,
            )
            if time.time() - t0 > args.time_limit and not stopped:
                job.send_signal(signal.SIGINT)
                stopped = True
            time.sleep(args.interval)
        output = job.stdout.read() if job.stdout else ""
        wall = time.time() - t0
        done = committed(store)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    keys = ("driver_rss_mb", "workers_rss_mb", "workers_uss_mb", "ray_system_rss_mb")
    result = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
        f"{psutil.virtual_memory().total / (1 << 30):.0f} GiB, no GPU",
        "date": datetime.date.today().isoformat(),
        "command": f"python benchmarks/bench_memory.py --n {args.n} --distinct {args.distinct} "
        f"--seconds {args.seconds:g} --interval {args.interval:g} --time-limit {args.time_limit:g}",
        "job": " ".join(["jobs/extract.py", *cmd[2:]]).replace(str(tmp), "TMP"),
        "dataset_seconds": round(t_make, 1),
        "samples": args.n,
        "done": done,
        "stopped_at_time_limit": stopped,
        "exit_code": job.returncode,
        "wall_s": round(wall, 1),
        "job_output_tail": output[-2000:],
        "flatness": {k: flatness(samples, k, args.warmup) for k in keys},
        "per_worker": per_worker_flatness(samples, args.warmup),
        "samples_series": [{k: v for k, v in s.items() if k != "workers"} for s in samples],
        "workers_series": [{"t": s["t"], "workers": s["workers"]} for s in samples],
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k not in ("samples_series", "workers_series")}, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
