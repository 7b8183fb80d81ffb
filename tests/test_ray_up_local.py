"""`ray up` through cluster.local.yaml's local provider on this machine, a job, `ray down`.

cluster.local.yaml's own setup and start commands run, with only what a test
must change: the SSH user and key, the mount source (the repository by path),
the cluster name, and for the head's `ray start` its ports and temp dir; the
shipped `ray stop` before it is left out. Prerequisites, else the test is
skipped with the reason: sshd on 127.0.0.1:22 that accepts KEY for the current
user (root in CI, which runs `.ci/setup-sshd.sh` first), and that user's
~/featstore-venv with the project's pins (the shipped setup would otherwise pip
install torch and the rest, several GB; on one machine
`ln -s "$PWD/.venv" ~/featstore-venv` gives it one).

`ray up` writes ~/ray_bootstrap_config.yaml and ~/ray_bootstrap_key.pem, as on
any head node, rsyncs the repository to ~/featstore, and its setup puts the
venv first on PATH in ~/.bashrc; the test undoes what it created. It never runs
`ray stop`: that ends every Ray process on the machine. `ray down` does run
`ray stop` on the head through the ssh user's login shell, so ~/.bashrc is
restored before it (then `ray` is on no PATH there and that step does
nothing), and what the cluster leaves running is stopped here, by process id.
The cluster keeps off Ray's default ports and uses its own temp dir, so another
local Ray is left alone. Ray turns a node address of 127.0.0.1 into the host's
own address and its GCS listens on every interface, so the cluster runs with
token auth (RAY_AUTH_MODE=token, the token at Ray's default path, as shipped);
the test itself talks to 127.0.0.1 only.
"""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psutil
import pytest
import yaml

from tests.ray_processes import cluster_processes, stop_cluster_processes

REPO = Path(__file__).resolve().parents[1]
KEY = Path("~/.ssh/featstore_test_ed25519").expanduser()  # made by .ci/setup-sshd.sh
VENV = "~/featstore-venv"  # cluster.local.yaml's venv for the ssh user (the current user here)
MOUNT = "~/featstore"  # where cluster.local.yaml puts the project on every machine
SHIPPED_STOP = f"{VENV}/bin/ray stop"
RAY = Path(sys.executable).parent / "ray"  # this side's ray: ray up, ray job, ray down

# Off Ray's defaults (6379, 8265, 10001, 52365) so this cluster cannot clash with
# another local Ray; the client port also stays out of Ray's worker range 10002-19999.
GCS_PORT = 6390
DASHBOARD_PORT = 8275
CLIENT_PORT = 20011
AGENT_PORT = 52375
PORTS = (GCS_PORT, DASHBOARD_PORT, CLIENT_PORT, AGENT_PORT)

# The demo job (demo clips, tiny encoders; two of the four keep it short) as the
# README submits it, with a bare `python`: the shipped setup put the venv first on
# PATH. Its outputs go in the test's folder: the argument after --work-dir is added per run.
JOB_ARGS = ["python", "jobs/extract.py", "--encoders", "local,audio", "--work-dir"]
JOB_EXPECT = "shards: 8 samples in"  # the summary's last line
# --working-dir uploads the repository without .git and .venv (Ray 2.60 skips
# them by default) and without what .gitignore names (demo_out, caches).

UP_TIMEOUT_S = 240  # rsync, the pins check, `ray start`, on a loaded 2-core machine
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
        [str(a) for a in args],
        cwd=REPO,
        env=env,
        timeout=timeout,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def ray_on_login_path() -> str:
    """Where the ssh user's login shell finds `ray` ('' if nowhere): where `ray down` runs `ray stop`."""
    found = subprocess.run(
        ["bash", "--login", "-i", "-c", "command -v ray"],
        capture_output=True,
        text=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
    )
    return found.stdout.strip()


def missing_prerequisite() -> str | None:
    """Why this machine cannot run the test, or None."""
    if not port_open(22):
        return (
            "no sshd on 127.0.0.1:22 (Ray's local provider reaches nodes over ssh); "
            "run .ci/setup-sshd.sh as root to enable this test"
        )
    if not KEY.exists():
        return f"sshd is up but {KEY} is missing: run .ci/setup-sshd.sh as root"
    python = Path(VENV).expanduser() / "bin" / "python"
    if not python.exists():
        return (
            f"no {python}: cluster.local.yaml's setup would make it and pip install the project "
            f"(torch and the rest, several GB); make it once, or on one machine `ln -s <repo>/.venv {VENV}`"
        )
    pins = run([python, "cluster/venv_has_pins.py", "pyproject.toml"], 60)
    if pins.returncode != 0:
        return f"{VENV} lacks the project's pins (the setup would pip install them): {pins.stdout.strip()}"
    if ray_on_login_path():
        return (
            f"`ray` is on the login PATH of {getpass.getuser()} ({ray_on_login_path()}): `ray down` would "
            "run `ray stop` there and end every Ray process on this machine"
        )
    return None


def local_cluster_yaml(tmp_path: Path, name: str, temp_dir: str) -> Path:
    """cluster.local.yaml as shipped, but for this test's user, key, ports and temp dir."""
    cfg = yaml.safe_load((REPO / "cluster.local.yaml").read_text())
    cfg["cluster_name"] = name
    cfg["auth"] = {"ssh_user": getpass.getuser(), "ssh_private_key": str(KEY)}
    assert cfg["file_mounts"][MOUNT] == ".", cfg["file_mounts"]
    cfg["file_mounts"][MOUNT] = str(REPO)  # the mount source: this repository, wherever pytest runs from
    stop, start = cfg["head_start_ray_commands"]
    # No `ray stop` first: it would end every Ray process on this machine.
    assert stop == SHIPPED_STOP, f"the head's first start command is no longer {SHIPPED_STOP!r}: {stop!r}"
    assert start.count(" --port=6379 ") == 1, start
    start = start.replace(" --port=6379 ", f" --port={GCS_PORT} ")
    cfg["head_start_ray_commands"] = [
        f"{start} --dashboard-port={DASHBOARD_PORT} --ray-client-server-port={CLIENT_PORT}"
        f" --dashboard-agent-listen-port={AGENT_PORT} --num-cpus=2 --temp-dir={temp_dir}"
    ]
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
    found = ray_on_login_path()
    if found:  # never let `ray down` run `ray stop` where it would find it
        down = subprocess.CompletedProcess([], 1, f"not run: `ray` is on the login PATH ({found})")
    else:
        down = run([RAY, "down", "-y", config], DOWN_TIMEOUT_S, env)
    left = stop_cluster_processes(temp_dir, GCS_PORT)
    state = Path(tempfile.gettempdir()) / "ray" / f"cluster-{name}.state"
    state_text = state.read_text() if state.exists() else ""
    for leftover in (state, state.with_suffix(".lock")):
        leftover.unlink(missing_ok=True)
    shutil.rmtree(temp_dir, ignore_errors=True)
    remove_bootstrap_files(name)
    return down, left, state_text


@pytest.fixture()
def machine_state():
    """Undo what cluster.local.yaml's setup leaves on this machine: the ~/.bashrc line
    and the ~/featstore copy (each only if the test made it)."""
    bashrc, mount = Path("~/.bashrc").expanduser(), Path(MOUNT).expanduser()
    before = bashrc.read_bytes() if bashrc.exists() else None
    had_mount = mount.exists()

    def restore() -> None:
        if before is None:
            bashrc.unlink(missing_ok=True)
        elif bashrc.read_bytes() != before:
            bashrc.write_bytes(before)

    try:
        yield restore
    finally:
        restore()
        if not had_mount:
            shutil.rmtree(mount, ignore_errors=True)


@pytest.fixture()
def local_cluster(tmp_path, machine_state):
    """A one-node cluster from cluster.local.yaml via `ray up`: (job API address, env for
    `ray job` commands). Torn down with `ray down`, checked to leave nothing running."""
    why = missing_prerequisite()
    if why:
        pytest.skip(why)
    busy = [p for p in PORTS if port_open(p)]
    assert not busy, f"ports {busy} on 127.0.0.1 are taken: {listeners(busy)}"

    name = f"featstore-test-{uuid.uuid4().hex[:8]}"
    # Its own temp dir: `ray start` writes the cluster's address there, not to
    # /tmp/ray/ray_current_cluster, which a bare ray.init() anywhere on this
    # machine would join. Short, so Ray's unix socket paths stay under 108 bytes.
    temp_dir = tempfile.mkdtemp(prefix="rft-", dir="/tmp")
    config = local_cluster_yaml(tmp_path, name, temp_dir)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env["RAY_USAGE_STATS_ENABLED"] = "0"  # ray up passes it to the head: no reports home
    # The token the shipped file_mounts copy and the shipped start commands use (Ray's default path).
    token = run([RAY, "get-auth-token", "--generate"], 60, env)
    assert token.returncode == 0, token.stdout[-2000:]
    t0 = time.monotonic()
    try:
        up = run([RAY, "up", "-y", config, "--no-config-cache"], UP_TIMEOUT_S, env)
        assert up.returncode == 0, f"ray up failed:\n{up.stdout[-4000:]}"
        assert port_open(DASHBOARD_PORT), f"ray up succeeded but nothing listens on {DASHBOARD_PORT}"
        print(f"ray up: {time.monotonic() - t0:.0f} s")
        yield f"http://127.0.0.1:{DASHBOARD_PORT}", dict(env, RAY_AUTH_MODE="token")
    finally:
        machine_state()  # before `ray down`: the venv off the login PATH, so its `ray stop` finds no ray
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
    job = run(
        [
            RAY,
            "job",
            "submit",
            "--address",
            address,
            "--submission-id",
            submission_id,
            "--working-dir",
            REPO,
            "--",
            *JOB_ARGS,
            str(work_dir),
        ],
        JOB_TIMEOUT_S,
        job_env,
    )
    status = run([RAY, "job", "status", "--address", address, submission_id], 30, job_env)
    print(f"job: {time.monotonic() - t0:.0f} s")
    assert f"Job '{submission_id}' succeeded" in status.stdout, (
        f"job did not succeed:\n{status.stdout[-2000:]}\n{job.stdout[-4000:]}"
    )
    assert job.returncode == 0, job.stdout[-4000:]
    assert JOB_EXPECT in job.stdout, f"{JOB_EXPECT!r} not in the job's output:\n{job.stdout[-4000:]}"
