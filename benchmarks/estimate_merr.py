"""A worked cost estimate for MERR (28,618 clips) on cluster.yaml's instance types, from
rates measured on this machine.

1. ``featstore calibrate`` on ``--clips`` clips of the demo dataset (2 s clips, the
   ``tiny`` preset, all four encoders, default job options, this machine's CPUs).
2. A MERR-sized dataset: 28,618 hard links to the demo clips, with a MERR
   annotation file naming each of them (so planning hashes 28,618 files, as on MERR).
3. ``featstore plan --estimate --cluster cluster.yaml`` on it: (a) as the job would run
   on that cluster by default (one A10G per encoder actor: no rate was measured on an
   A10G, so the estimate names what is missing), and (b) with ``--gpus-per-actor 0
   --actors 8``: the tiny encoders on the CPUs of the g5.2xlarge workers, with the
   rates measured here.

The figures are this machine's CPU rates for tiny models on 2 s demo clips, not MERR's
clips through the real encoders on A10G GPUs: for those, run ``featstore calibrate
--preset emotion-llama`` on a g5.2xlarge (``ray job submit ... -- featstore calibrate
...``) and plan with its rates file.

Run: ``python benchmarks/estimate_merr.py [--clips 8] [--out benchmarks/results/estimate_merr.json]``
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

MERR_CLIPS = 28_618  # MERR's coarse-grained set (DESIGN.md)


def featstore(*argv: str) -> str:
    cmd = [sys.executable, "-m", "featstore.cli", *argv]
    env = {**os.environ, "TRANSFORMERS_VERBOSITY": "error"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv[:2])} failed:\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}")
    return proc.stdout


def merr_sized(demo: Path, out: Path, n: int) -> Path:
    """``n`` samples named merr_00000..., each a hard link to a demo clip, with MERR annotations."""
    clips = sorted((demo / "clips").glob("*.mp4"))
    entries = json.loads((demo / "MERR_demo.json").read_text())
    (out / "clips").mkdir(parents=True)
    merr = {}
    for i in range(n):
        src = clips[i % len(clips)]
        name = f"merr_{i:05d}"
        os.link(src, out / "clips" / f"{name}.mp4")
        merr[name] = entries[src.stem]
    (out / "MERR_coarse.json").write_text(json.dumps(merr))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--clips", type=int, default=8, help="clips to calibrate on (default 8)")
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "estimate_merr.json"))
    args = p.parse_args()
    from featstore.demo.dataset import make_demo_dataset

    with tempfile.TemporaryDirectory(prefix="estimate-merr-") as tmp:
        tmp = Path(tmp)
        demo = make_demo_dataset(tmp / "demo", n=8)
        rates = tmp / "rates.json"
        load = [os.getloadavg()[0]]
        t0 = time.perf_counter()
        cal = featstore("calibrate", "--dataset", str(demo), "--format", "merr", "--clips", str(args.clips),
                        "--out", str(rates), "--work-dir", str(tmp / "work"), "--ray-address", "local")  # fmt: skip
        cal_s = time.perf_counter() - t0
        load.append(os.getloadavg()[0])
        merr = merr_sized(demo, tmp / "merr", MERR_CLIPS)
        base = ["plan", str(tmp / "merr.zarr"), "--dataset", str(merr), "--format", "merr", "--estimate",
                "--cluster", str(REPO / "cluster.yaml"), "--rates", str(rates)]  # fmt: skip
        gpu = featstore(*base)
        cpu = featstore(*base, "--gpus-per-actor", "0", "--actors", "8")
        cpu_json = json.loads(featstore(*base, "--gpus-per-actor", "0", "--actors", "8", "--json"))["estimate"]
        result = {
            "date": datetime.date.today().isoformat(),
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.python_version()}, no GPU",
            "load_average_before_after_calibration": [round(x, 2) for x in load],
            "calibration": {"clips": args.clips, "seconds": round(cal_s, 1), "output": cal.strip().splitlines()},
            "rates": json.loads(rates.read_text())["records"],
            "plan_default_gpu": gpu.splitlines(),
            "plan_cpu_actors_8": cpu.splitlines(),
            "estimate_cpu_actors_8": cpu_json,
        }
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(cal)
    print(gpu)
    print(cpu)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
