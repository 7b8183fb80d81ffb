"""Several Ray nodes on one machine (ray.cluster_utils.Cluster): the node running a
unit's write is removed mid-run; the job finishes and the store is bitwise the same
as a clean run's."""

from __future__ import annotations

import threading
import time

import psutil
import pytest
import ray
from ray.cluster_utils import Cluster

from featstore.extract.config import parse_config
from featstore.extract.run import run_extract
from tests.featstore.store.test_exactly_once import tree
from tests.jobs.conftest import JOB_ARGS

pytestmark = pytest.mark.slow


def _node_of(pid: int, nodes) -> object:
    """The cluster node whose raylet is an ancestor of process ``pid``."""
    ancestors = {p.pid for p in psutil.Process(pid).parents()}
    for node in nodes:
        if node.all_processes["raylet"][0].process.pid in ancestors:
            return node
    raise AssertionError(f"pid {pid} is under no node's raylet")


def test_node_removed_mid_run(mixed_dataset, reference, tmp_path, monkeypatch):
    marker = tmp_path / "fired"
    # Nodes started from here inherit these: unit 2's write stalls 30 s on its node.
    monkeypatch.setenv("FEATSTORE_FAULT", "sink.before@2:sleep=30")
    monkeypatch.setenv("FEATSTORE_FAULT_MARKER", str(marker))
    ray.shutdown()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})  # like cluster.yaml: no work on the head
    workers = [cluster.add_node(num_cpus=2) for _ in range(2)]
    cluster.wait_for_nodes()
    args = [*JOB_ARGS, "--ray-address", cluster.address]
    cfg = parse_config(
        ["--dataset", str(mixed_dataset), "--store", str(tmp_path / "store.zarr"), "--work-dir", str(tmp_path), *args]
    )
    result: dict = {}
    runner = threading.Thread(target=lambda: result.update(run_extract(cfg)), daemon=True)
    try:
        runner.start()
        deadline = time.time() + 300
        while not marker.exists() and time.time() < deadline:
            time.sleep(0.2)
        assert marker.exists(), "unit 2's write never started"
        time.sleep(0.5)  # let the marker's pid be written
        victim = _node_of(int(marker.read_text()), workers)
        cluster.remove_node(victim)
        runner.join(timeout=400)
        assert not runner.is_alive(), "the job did not finish after the node was removed"
    finally:
        ray.shutdown()
        cluster.shutdown()
    assert result["specs"]["audio"]["pending"] == 0 and result["specs"]["local"]["pending"] == 0
    assert tree(tmp_path / "store.zarr") == tree(reference[0])
