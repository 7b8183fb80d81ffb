"""Find and stop the processes of one test Ray cluster (by its temp dir and GCS port),
leaving every other Ray on the machine alone (`ray stop` would end them all)."""

from __future__ import annotations

import re

import psutil


def cluster_processes(temp_dir: str, gcs_port: int) -> list[psutil.Process]:
    """Processes of a test cluster: those that name its temp dir or its GCS as the
    cluster to join (the Ray client server names nothing else), and their children
    (agents and workers rename themselves, e.g. ray::DashboardAgent)."""
    gcs = re.compile(rf"^--(address|gcs[-_]address)=\S+:{gcs_port}$")
    found = {}
    for p in psutil.process_iter(["cmdline"]):
        try:
            if any(temp_dir in a or gcs.match(a) for a in p.info["cmdline"] or []):
                found[p.pid] = p
                found.update((c.pid, c) for c in p.children(recursive=True))
        except psutil.Error:
            pass
    return list(found.values())


def stop_cluster_processes(temp_dir: str, gcs_port: int) -> int:
    """SIGTERM a test cluster's processes (raylet first, GCS last, as `ray stop`
    does), SIGKILL what is left after 5 s (the GCS can take longer than that to
    exit on SIGTERM); returns how many there were."""
    procs = cluster_processes(temp_dir, gcs_port)

    def rank(p: psutil.Process) -> int:
        try:
            return {"raylet": 0, "gcs_server": 2}.get(p.name(), 1)
        except psutil.Error:
            return 1

    for p in sorted(procs, key=rank):
        try:
            p.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(procs, timeout=5)
    for p in alive:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=5)
    return len(procs)
