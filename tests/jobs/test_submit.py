"""The user's path on a real Ray head: `ray start --head` with fake GPUs, then
`ray job submit --working-dir . -- python jobs/extract.py ...`. Each encoder actor
gets its own GPU, and the store is complete."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from featstore.store import FeatureStore
from tests.jobs.conftest import GOOD, JOB_ARGS, REPO
from tests.ray_processes import cluster_processes, stop_cluster_processes

pytestmark = pytest.mark.slow
# Not Ray's defaults (6379, 8265, 52365, 10001): never clash with a cluster a developer
# runs. The dashboard agent's port matters as much as the others: when another Ray on
# the machine holds 52365, this head's agent cannot bind and job submission fails.
PORT, DASHBOARD, AGENT, CLIENT = 6392, 8277, 52377, 20013
RAY = str(Path(sys.executable).parent / "ray")
EXCLUDES = json.dumps({"excludes": [".git", ".venv", "demo_out", "*.zarr", "__pycache__"]})


@pytest.fixture()
def ray_head(tmp_path):
    # The job's driver runs `python` from the head's PATH: make it this venv's. Ray 2.60
    # turns token auth on for clusters on a machine that has ~/.ray/auth_token, but its
    # job CLI only sends the token when told: say so on both sides.
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "RAY_AUTH_MODE": "token"}
    subprocess.run([RAY, "get-auth-token", "--generate"], check=True, env=env, capture_output=True, timeout=60)
    # Its own temp dir, so that its processes (and only they) can be found and stopped
    # afterwards: `ray stop` would end every Ray on the machine. Short: Ray puts unix
    # sockets under it (session_<date>_<pid>/sockets/raylet), and a socket path over
    # 107 bytes (pytest's tmp_path is long) fails to bind.
    temp_dir = tempfile.mkdtemp(prefix="rfs-", dir="/tmp")
    try:
        start = subprocess.run(
            [
                RAY,
                "start",
                "--head",
                f"--port={PORT}",
                f"--dashboard-port={DASHBOARD}",
                f"--dashboard-agent-listen-port={AGENT}",
                f"--ray-client-server-port={CLIENT}",
                f"--temp-dir={temp_dir}",
                "--dashboard-host=127.0.0.1",
                "--num-cpus=2",
                "--num-gpus=2",
                "--include-dashboard=true",
                "--disable-usage-stats",
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert start.returncode == 0, start.stdout[-2000:] + start.stderr[-2000:]
        yield f"http://127.0.0.1:{DASHBOARD}", env
    finally:
        stop_cluster_processes(temp_dir, PORT)
        shutil.rmtree(temp_dir, ignore_errors=True)
    assert cluster_processes(temp_dir, PORT) == [], "processes of the test's head survived"


def test_job_submit_pins_each_actor_to_its_own_gpu(ray_head, mixed_dataset, tmp_path):
    address, env = ray_head
    summary = tmp_path / "summary.json"
    cmd = [
        RAY,
        "job",
        "submit",
        "--address",
        address,
        "--working-dir",
        str(REPO),
        "--runtime-env-json",
        EXCLUDES,
        "--",
        "python",
        "jobs/extract.py",
        "--dataset",
        str(mixed_dataset),
        "--store",
        str(tmp_path / "store.zarr"),
        "--work-dir",
        str(tmp_path),
        "--summary-json",
        str(summary),
        *JOB_ARGS,
    ]
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
