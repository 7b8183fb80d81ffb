"""benchmarks/gpu_check.py in its --cpu mode: every check runs and passes, and the JSON holds their figures
(on a lent GPU the same script runs at real size; see BENCHMARKS.md)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_gpu_check_runs_in_cpu_mode(tmp_path):
    out = tmp_path / "gpu_check.json"
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "gpu_check.py"), "--cpu", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    r = json.loads(out.read_text())
    assert r["mode"] == "cpu" and r["failed"] == []
    for slot in ("global", "local", "temporal", "audio"):
        e = r["encoders"][slot]
        assert 0 <= e["max_rel_diff"] < 0.5 and e["cosine"] > 0.9 and e["clips_per_s"] > 0
    assert r["actors"]["ok"] and r["actors"]["torch_device"] == "cpu"
    t = r["training"]
    assert t["finite"] and t["steps"] == 5 and t["last_loss"] < t["first_loss"] and t["samples_per_s"] > 0
    rows = r["loader"]["rows"]
    assert {"floor", "shards, prefetch 2, 0 workers", "zarr, prefetch 2, 2 workers"} <= set(rows)
    assert all(0 < row["ratio"] <= 1.05 for row in rows.values())
