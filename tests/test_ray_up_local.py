"""`ray up` through cluster.local.yaml's local provider on this machine, a job, `ray down`.

Needs sshd on 127.0.0.1:22 that accepts KEY for the current user (root in CI,
which runs `.ci/setup-sshd.sh` first); without sshd there the test is skipped.
`ray up` writes ~/ray_bootstrap_config.yaml and ~/ray_bootstrap_key.pem, as on
any head node; the test removes them afterwards.

The test cluster keeps off Ray's default ports and uses its own temp dir, so
another local Ray in the same session is left alone. It never runs `ray stop`
itself: that ends every Ray process on the machine. (`ray down` does run
`ray stop` on the head, through the ssh user's login shell, so it stops Ray
only where `ray` is on that PATH; what the cluster leaves running is then
stopped here, by process id.) Ray turns a node address of 127.0.0.1 into the
host's own address and its GCS listens on every interface, so the cluster
asks for its own token (RAY_AUTH_MODE=token); the test itself talks to
127.0.0.1 only.
"""

from __future__ import annotations

import getpass
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import psutil
import pytest
import yaml

from tests.ray_processes import cluster_processes, stop_cluster_processes

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = REPO / ".venv" / "bin"
KEY = Path("~/.ssh/featstore_test_ed25519").expanduser()  # made by .ci/setup-sshd.sh

# Off Ray's defaults (6379, 8265, 10001, 52365) so this cluster cannot clash with
# another local Ray; the client port also stays out of Ray's worker range 10002-19999.
GCS_PORT = 6390
DASHBOARD_PORT = 8275
CLIENT_PORT = 20011
AGENT_PORT = 52375
PORTS = (GCS_PORT, DASHBOARD_PORT, CLIENT_PORT, AGENT_PORT)

# The submitted job, run in the repository (--working-dir). The venv's python by
# path: processes that descend from an ssh session re-read ~/.bashrc in every
# `bash -c` on Debian and Ubuntu, so a bare `python` depends on that file.
# The demo job (demo clips, tiny encoders; two of the four keep it short), with its
# outputs in the test's folder: the argument after --work-dir is added per run.
JOB_ARGS = [str(VENV_BIN / "python"), "jobs/extract.py", "--encoders", "local,audio", "--work-dir"]
JOB_EXPECT = "shards: 8 samples in"  # the summary's last line
# --working-dir uploads the repository without .git and .venv (Ray 2.60 skips
# them by default) and without what .gitignore names (demo_out, caches).

UP_TIMEOUT_S = 120
JOB_TIMEOUT_S = 300
DOWN_TIMEOUT_S = 60


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def listeners(ports) -> list[str]:
    """Who listens on these ports (for error messages; needs root to see other users')."""
    found = []
    try:
        for c in psutil.net_connections("tcp"):
            if c.status == psutil.CONN_LISTEN and c.laddr.port in ports and c.pid:
                found.append(f"{c.laddr.port}: {' '.join(psutil.Process(c.pid).cmdline())[:200]}")
    except psutil.Error:
        pass
    return found


def run(args: list[str], timeout: float, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run a command; stdout and stderr together in .stdout."""
    return subprocess.run(
        [str(a) for a in args], cwd=REPO, env=env, timeout=timeout,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )


def local_cluster_yaml(tmp_path: Path, name: str, temp_dir: str, token: Path) -> Path:
    """cluster.local.yaml made to run here: this machine, the test key, the repo's venv."""
    cfg = yaml.safe_load((REPO / "cluster.local.yaml").read_text())
    cfg["cluster_name"] = name
    cfg["provider"].update(head_ip="127.0.0.1", worker_ips=[])
    cfg["auth"] = {"ssh_user": getpass.getuser(), "ssh_private_key": str(KEY)}
    cfg["file_mounts"] = {}  # the repo is already here, and the token comes by path
    cfg["setup_commands"] = [f"test -x {VENV_BIN}/ray"]  # nothing to install: the venv must exist
    env = f"export PATH={VENV_BIN}:$PATH RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH={token}"
    # No `ray stop` first: it would end every Ray process on this machine.
    cfg["head_start_ray_commands"] = [
        f"{env}; ulimit -n 65536; {VENV_BIN}/ray start --head"
        f" --port={GCS_PORT} --dashboard-host=127.0.0.1 --dashboard-port={DASHBOARD_PORT}"
        f" --ray-client-server-port={CLIENT_PORT} --dashboard-agent-listen-port={AGENT_PORT}"
        f" --num-cpus=2 --num-gpus=2 --temp-dir={temp_dir}"  # fake GPUs for the job's GPU actors
        " --autoscaling-config=~/ray_bootstrap_config.yaml"
    ]
    cfg["worker_start_ray_commands"] = []
    path = tmp_path / "cluster.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def remove_bootstrap_files(name: str) -> None:
    """Remove the head's copies of the cluster config and key if `ray up` put ours there."""
    config, key = Path("~/ray_bootstrap_config.yaml").expanduser(), Path("~/ray_bootstrap_key.pem").expanduser()
    if config.exists() and yaml.safe_load(config.read_text()).get("cluster_name") == name:
        config.unlink()
        if key.exists() and key.read_bytes() == KEY.read_bytes():
            key.unlink()


def tear_down(config: Path, name: str, temp_dir: str, env: dict) -> tuple[subprocess.CompletedProcess, int, str]:
    """`ray down`, then stop by process id what it left; returns (ray down, how many
    cluster processes it left, the cluster state file's last content)."""
    down = run([VENV_BIN / "ray", "down", "-y", config], DOWN_TIMEOUT_S, env)
    left = stop_cluster_processes(temp_dir, GCS_PORT)
    state = Path(tempfile.gettempdir()) / "ray" / f"cluster-{name}.state"
    state_text = state.read_text() if state.exists() else ""
    for leftover in (state, state.with_suffix(".lock")):
        leftover.unlink(missing_ok=True)
    shutil.rmtree(temp_dir, ignore_errors=True)
    remove_bootstrap_files(name)
    return down, left, state_text


@pytest.fixture()
def local_cluster(tmp_path):
    """A one-node cluster from cluster.local.yaml via `ray up`: (job API address, env for
    `ray job` commands). Torn down with `ray down`, checked to leave nothing running."""
    if not port_open(22):
        pytest.skip("no sshd on 127.0.0.1:22 (Ray's local provider reaches nodes over ssh); "
                    "run .ci/setup-sshd.sh as root to enable this test")
    assert KEY.exists(), f"sshd is up but {KEY} is missing: run .ci/setup-sshd.sh as root"
    assert (VENV_BIN / "ray").exists(), f"no {VENV_BIN / 'ray'}: install the project into .venv first"
    busy = [p for p in PORTS if port_open(p)]
    assert not busy, f"ports {busy} on 127.0.0.1 are taken: {listeners(busy)}"

    name = f"featstore-test-{uuid.uuid4().hex[:8]}"
    # Its own temp dir: `ray start` writes the cluster's address there, not to
    # /tmp/ray/ray_current_cluster, which a bare ray.init() anywhere on this
    # machine would join. Short, so Ray's unix socket paths stay under 108 bytes.
    temp_dir = tempfile.mkdtemp(prefix="rft-", dir="/tmp")
    token = tmp_path / "auth_token"
    token.write_text(secrets.token_hex(32))
    config = local_cluster_yaml(tmp_path, name, temp_dir, token)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env["RAY_USAGE_STATS_ENABLED"] = "0"  # ray up passes it to the head: no reports home
    t0 = time.monotonic()
    try:
        up = run([VENV_BIN / "ray", "up", "-y", config, "--no-config-cache"], UP_TIMEOUT_S, env)
        assert up.returncode == 0, f"ray up failed:\n{up.stdout[-4000:]}"
        assert port_open(DASHBOARD_PORT), f"ray up succeeded but nothing listens on {DASHBOARD_PORT}"
        print(f"ray up: {time.monotonic() - t0:.0f} s")
        yield f"http://127.0.0.1:{DASHBOARD_PORT}", dict(env, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token))
    finally:
        t1 = time.monotonic()
        down, left, state = tear_down(config, name, temp_dir, env)
        print(f"ray down + cleanup: {time.monotonic() - t1:.0f} s; `ray down` left {left} cluster processes")
    assert down.returncode == 0, f"ray down failed:\n{down.stdout[-4000:]}"
    assert '"state": "terminated"' in state, f"ray down did not mark the head terminated: {state!r}"
    assert cluster_processes(temp_dir, GCS_PORT) == []
    still_open = [p for p in PORTS if port_open(p)]
    assert not still_open, f"ports {still_open} still open after ray down: {listeners(still_open)}"


@pytest.mark.slow
def test_ray_up_job_down(local_cluster, tmp_path):
    address, job_env = local_cluster
    work_dir = tmp_path / "demo"
    script = REPO / next(a for a in JOB_ARGS if a.endswith(".py"))
    assert script.exists(), f"the job script {script} does not exist"
    submission_id = f"featstore-test-{uuid.uuid4().hex[:8]}"
    t0 = time.monotonic()
    job = run([VENV_BIN / "ray", "job", "submit", "--address", address, "--submission-id", submission_id,
               "--working-dir", REPO, "--", *JOB_ARGS, str(work_dir)], JOB_TIMEOUT_S, job_env)
    status = run([VENV_BIN / "ray", "job", "status", "--address", address, submission_id], 30, job_env)
    print(f"job: {time.monotonic() - t0:.0f} s")
    assert f"Job '{submission_id}' succeeded" in status.stdout, (
        f"job did not succeed:\n{status.stdout[-2000:]}\n{job.stdout[-4000:]}")
    assert job.returncode == 0, job.stdout[-4000:]
    assert JOB_EXPECT in job.stdout, f"{JOB_EXPECT!r} not in the job's output:\n{job.stdout[-4000:]}"
