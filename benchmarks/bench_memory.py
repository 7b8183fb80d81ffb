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


SYSTEM_NAMES = ("ray::DashboardAgent", "ray::RuntimeEnvAgent")  # Ray's per-node agents, not workers


def worker_name(p: psutil.Process) -> str | None:
    """The process title of a Ray worker (task, actor or idle worker), else None."""
    cmd = p.cmdline()
    title = cmd[0].split(" ")[0] if cmd else ""
    if title.startswith("ray::") and title not in SYSTEM_NAMES:
        return title
    if len(cmd) > 1 and cmd[1].endswith("default_worker.py"):
        return "default_worker.py"
    return None


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
            name = worker_name(p)
            if name is not None:
                info = p.memory_full_info()
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


def flatness(points: list[tuple[float, float]], warmup_s: float) -> dict[str, Any]:
    """Slope (MB per minute) and range of one series ``(t, MB)`` after ``warmup_s``."""
    after = [(t, v) for t, v in points if t >= warmup_s and v is not None]
    if len(after) < 3:
        return {"points": len(after)}
    x = np.array([t for t, _ in after], float)
    y = np.array([v for _, v in after], float)
    return {
        "points": len(after),
        "from_s": round(float(x.min()), 1),
        "to_s": round(float(x.max()), 1),
        "min_mb": round(float(y.min()), 1),
        "max_mb": round(float(y.max()), 1),
        "first_mb": round(float(y[0]), 1),
        "last_mb": round(float(y[-1]), 1),
        "slope_mb_per_min": round(float(np.polyfit(x, y, 1)[0]) * 60, 1),
    }


def analyse(series: list[dict], workers: list[dict], warmup: float) -> dict[str, Any]:
    """Flatness of driver, workers (RSS, USS) and each worker after warm-up.

    Warm-up ends when the number of worker processes last changed in the first
    ``warmup`` fraction of the run (actors and task workers started), and the
    window ends at the first commit: from then on the sink's writes and Ray's
    shutdown free memory, which would hide growth. The x axis is time, since
    commits come late (see ``first_commit_s``)."""
    t_first_commit = next((s["t"] for s in series if s["done"]), None)
    end = t_first_commit if t_first_commit is not None else series[-1]["t"]
    counts = [(w["t"], len(w["workers"])) for w in workers if w["t"] <= end]
    full = max(c for _, c in counts)
    warm = max(next(t for t, c in counts if c == full), warmup * end)
    win = [w for w in workers if warm <= w["t"] <= end]
    drv = [(s["t"], s["driver_rss_mb"]) for s in series if warm <= s["t"] <= end]
    rss = [(w["t"], sum(x["rss_mb"] for x in w["workers"])) for w in win]
    uss = [(w["t"], sum(x["uss_mb"] for x in w["workers"])) for w in win]
    per: dict[int, list] = {}
    for w in win:
        for x in w["workers"]:
            per.setdefault(x["pid"], []).append((w["t"], x["rss_mb"], x["uss_mb"], x["name"]))
    per_worker = [
        {
            "pid": pid,
            "name": pts[-1][3],
            "readings": len(pts),
            "first_rss_mb": pts[0][1],
            "last_rss_mb": pts[-1][1],
            "first_uss_mb": pts[0][2],
            "last_uss_mb": pts[-1][2],
            "uss_slope_mb_per_min": flatness([(t, u) for t, _, u, _ in pts], warm).get("slope_mb_per_min"),
        }
        for pid, pts in sorted(per.items())
        if len(pts) >= 3
    ]
    return {
        "first_commit_s": t_first_commit,
        "window_s": [round(warm, 1), round(end, 1)],
        "workers_at_full": full,
        "flatness": {
            "driver_rss_mb": flatness(drv, warm),
            "workers_rss_mb": flatness(rss, warm),
            "workers_uss_mb": flatness(uss, warm),
        },
        "per_worker": per_worker,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=1000, help="samples in the dataset (default 1000)")
    p.add_argument("--distinct", type=int, default=40, help="distinct rendered clips the samples link to")
    p.add_argument("--seconds", type=float, default=1.0, help="seconds per clip (default 1)")
    p.add_argument("--interval", type=float, default=2.0, help="seconds between readings (default 2)")
    p.add_argument("--time-limit", type=float, default=900.0, help="stop the job (SIGINT) after this many seconds")
    p.add_argument(
        "--warmup", type=float, default=0.3, help="fraction of the time before the first commit counted as warm-up"
    )
    p.add_argument("--analyse", metavar="JSON", help="only redo the analysis of a saved run and rewrite it in place")
    p.add_argument("--out", default="benchmarks/results/memory.json", help="where to write the JSON figures")
    args = p.parse_args()
    if args.analyse:
        saved = json.loads(Path(args.analyse).read_text())
        for w in saved["workers_series"]:  # classify again (older runs counted Ray's agents as workers)
            w["workers"] = [x for x in w["workers"] if x["name"] not in SYSTEM_NAMES and "raylet" not in x["name"]]
        saved.update(analyse(saved["samples_series"], saved["workers_series"], args.warmup))
        Path(args.analyse).write_text(json.dumps(saved, indent=1) + "\n")
        print(json.dumps({k: saved[k] for k in ("first_commit_s", "window_s", "flatness")}, indent=1))
        return
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
        **analyse(samples, [{"t": s["t"], "workers": s["workers"]} for s in samples], args.warmup),
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
