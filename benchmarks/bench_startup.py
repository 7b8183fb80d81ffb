"""What a fresh Ray worker pays in imports, and the demo job's wall time, before and after a change.

Run: python benchmarks/bench_startup.py [--repeats 5] [--demo] [--before OLD_CHECKOUT] [--out benchmarks/results/startup.json]

Each figure is the median over ``--repeats`` fresh interpreters of the time to
import the module a worker of that stage loads (a decode task, an encoder
actor, a write task) and ``featstore`` itself, measured with the interpreter's
own clock around the import. With ``--before DIR`` the same stages are timed
in another checkout (the modules had other names there: ``featstore.pipeline``
held the decode, encode and write stages), in the same run, alternating, so
the machine's load affects both alike. ``--demo`` also times the README's main
command (``jobs/extract.py`` on the demo data, a fresh local Ray) in each
checkout, side by side.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# stage -> module a worker of that stage imports, in this layout and in the flat one before it.
STAGES = {
    "featstore": ("featstore", "featstore"),
    "decode task": ("featstore.extract.decode", "featstore.pipeline"),
    "write task": ("featstore.extract.sink", "featstore.pipeline"),
    "encoder actor": ("featstore.extract.encode", "featstore.pipeline"),
}
CODE = (
    "import sys, time\nsys.path.insert(0, {root!r})\nt = time.perf_counter()\nimport {module}\n"
    "print(time.perf_counter() - t)\n"
)


def import_seconds(root: Path, module: str) -> float:
    out = subprocess.run(
        [sys.executable, "-c", CODE.format(root=str(root), module=module)],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    return float(out.stdout.strip().splitlines()[-1])


def demo_seconds(root: Path) -> float:
    with tempfile.TemporaryDirectory() as work:
        t = time.perf_counter()
        subprocess.run(
            [sys.executable, str(root / "jobs" / "extract.py"), "--work-dir", work, "--ray-address", "local"],
            cwd=root,
            capture_output=True,
            timeout=900,
            check=True,
        )
        return time.perf_counter() - t


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=5, help="fresh interpreters per figure (median)")
    p.add_argument("--before", type=Path, help="a checkout of the flat layout to time side by side")
    p.add_argument("--demo", action="store_true", help="also time the demo job in each checkout")
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "startup.json")
    args = p.parse_args()
    roots = {"after": REPO, **({"before": args.before.resolve()} if args.before else {})}
    times: dict[str, dict[str, list[float]]] = {k: {s: [] for s in STAGES} for k in roots}
    for _ in range(args.repeats):
        for which, root in roots.items():
            for stage, (new, old) in STAGES.items():
                times[which][stage].append(import_seconds(root, new if which == "after" else old))
    figures = {k: {s: round(statistics.median(v), 3) for s, v in st.items()} for k, st in times.items()}
    demo = {which: round(demo_seconds(root), 1) for which, root in roots.items()} if args.demo else {}
    print(f"{'stage':<14}" + "".join(f"{k:>10}" for k in roots) + "   (import seconds, median)")
    for stage in STAGES:
        print(f"{stage:<14}" + "".join(f"{figures[k][stage]:>10.2f}" for k in roots))
    if demo:
        print(f"{'demo job':<14}" + "".join(f"{demo[k]:>10.1f}" for k in roots) + "   (wall seconds)")
    result = {
        "startup": {
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.python_version()}",
            "command": "python benchmarks/bench_startup.py " + " ".join(sys.argv[1:]),
            "date": datetime.date.today().isoformat(),
            "repeats": args.repeats,
            "import_seconds": figures,
            "demo_wall_seconds": demo,
        }
    }
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
