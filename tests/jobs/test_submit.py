"""The user's path on a real Ray head: `ray start --head` with fake GPUs, then
`ray job submit --working-dir . -- python jobs/extract.py ...`. Each encoder actor
gets its own GPU, and the store is complete."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from featstore.store import FeatureStore
from tests.jobs.conftest import GOOD, JOB_ARGS, REPO

pytestmark = pytest.mark.slow
PORT, DASHBOARD = 6392, 8277  # not Ray's defaults: never clash with a cluster a developer runs
RAY = str(Path(sys.executable).parent / "ray")
EXCLUDES = json.dumps({"excludes": [".git", ".venv", "demo_out", "*.zarr", "__pycache__"]})


@pytest.fixture()
def ray_head(tmp_path):
    # The job's driver runs `python` from the head's PATH: make it this venv's. Ray 2.60
    # turns token auth on for clusters on a machine that has ~/.ray/auth_token, but its
    # job CLI only sends the token when told: say so on both sides.
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "RAY_AUTH_MODE": "token"}
    subprocess.run([RAY, "get-auth-token", "--generate"], check=True, env=env, capture_output=True, timeout=60)
    subprocess.run([RAY, "start", "--head", f"--port={PORT}", f"--dashboard-port={DASHBOARD}",
                    "--dashboard-host=127.0.0.1", "--num-cpus=2", "--num-gpus=2", "--include-dashboard=true",
                    "--disable-usage-stats"], check=True, env=env, capture_output=True, timeout=120)
    try:
        yield f"http://127.0.0.1:{DASHBOARD}", env
    finally:
        subprocess.run([RAY, "stop", "--force"], env=env, capture_output=True, timeout=120)


def test_job_submit_pins_each_actor_to_its_own_gpu(ray_head, mixed_dataset, tmp_path):
    address, env = ray_head
    summary = tmp_path / "summary.json"
    cmd = [RAY, "job", "submit", "--address", address, "--working-dir", str(REPO), "--runtime-env-json", EXCLUDES,
           "--", "python", "jobs/extract.py", "--dataset", str(mixed_dataset), "--store", str(tmp_path / "store.zarr"),
           "--work-dir", str(tmp_path), "--summary-json", str(summary), *JOB_ARGS]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "succeeded" in proc.stdout
    result = json.loads(summary.read_text())
    actors = result["actors"]
    gpu_ids = {slot: [a["gpu_ids"] for a in found] for slot, found in actors.items()}
    # One actor per encoder, one fake GPU each, and not the same one.
    assert all(len(ids) == 1 and len(ids[0]) == 1 for ids in gpu_ids.values()), gpu_ids
    assert gpu_ids["local"][0] != gpu_ids["audio"][0]
    for found in actors.values():
        assert found[0]["cuda_visible_devices"] == found[0]["gpu_ids"][0]
    store = FeatureStore.open(tmp_path / "store.zarr")
    counts = {f.spec.name: f.counts() for f in store.features()}
    assert counts["local"] == {"committed": GOOD + 1, "failed": 2, "pending": 0}
    assert counts["audio"] == {"committed": GOOD, "failed": 3, "pending": 0}
