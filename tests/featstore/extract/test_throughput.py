"""The pipeline's throughput model, by hand: the first unit through every stage, the rest
at the busiest resource's rate, and the start-up as what a measured run had beyond it."""

from __future__ import annotations

import pytest

from featstore.extract.cluster import NodeGroup
from featstore.extract.throughput import Options, UnitLoad, pipeline_seconds, startup_residual, wall_seconds

TWO_CPUS = [NodeGroup("local", 1, 2.0, 0.0)]
GPU_CLUSTER = [NodeGroup("head", 1, 0.0, 0.0), NodeGroup("gpu", 2, 8.0, 1.0)]


def loads(n: int = 3) -> list[UnitLoad]:
    # Per unit: decode 2 s, encoders local 0.8 s and audio 0.4 s, write 0.2 s.
    return [UnitLoad(4, 2.0, {"local": 0.8, "audio": 0.4}, 0.2) for _ in range(n)]


def test_cpu_run_shares_the_cpus():
    fill, work, bound = pipeline_seconds(loads(), TWO_CPUS, Options(), gpu=False)
    # decode tasks 6/2 = 3, write tasks 0.6/2, one actor per slot 2.4; all of it (6 + 3.6 + 0.6) on 2 CPUs: 5.1
    assert (fill, work, bound) == (pytest.approx(3.4), pytest.approx(5.1), "shared CPUs")
    assert wall_seconds(loads(), TWO_CPUS, Options(), gpu=False) == pytest.approx(3.4 + 5.1 * 2 / 3)


def test_gpu_run_bound_by_actors_then_by_gpus():
    # 2 GPUs, 16 decode tasks (8 CPUs / 0.9 on each of 2 nodes; the head has none).
    _, work, bound = pipeline_seconds(loads(), GPU_CLUSTER, Options(actors=1, gpus_per_actor=1), gpu=True)
    assert (work, bound) == (pytest.approx(2.4), "encoder actors")  # local's 2.4 s on its one actor
    _, work, bound = pipeline_seconds(loads(), GPU_CLUSTER, Options(actors=2, gpus_per_actor=1), gpu=True)
    assert (work, bound) == (pytest.approx(3.6 / 2), "GPUs")  # 4 actors, but 2 GPUs for 3.6 device-s
    slow_decode = [UnitLoad(4, 40.0, {"local": 0.8}, 0.2)] * 3
    _, work, bound = pipeline_seconds(slow_decode, GPU_CLUSTER, Options(), gpu=True)
    assert (work, bound) == (pytest.approx(120 / 16), "decode tasks")
    slow_write = [UnitLoad(4, 1.0, {"local": 0.8}, 5.0)] * 3
    _, work, bound = pipeline_seconds(slow_write, GPU_CLUSTER, Options(write_tasks=3), gpu=True)
    assert (work, bound) == (pytest.approx(15 / 3), "write tasks")


def test_startup_is_the_wall_time_beyond_the_model():
    units = wall_seconds(loads(2), TWO_CPUS, Options(), gpu=False)
    assert startup_residual(20.0, loads(2), TWO_CPUS, Options(), gpu=False) == pytest.approx(20.0 - units)
    assert startup_residual(1.0, loads(2), TWO_CPUS, Options(), gpu=False) == 0.0  # never negative
    assert pipeline_seconds([], TWO_CPUS, Options(), gpu=False) == (0.0, 0.0, "nothing to do")


def test_nodes_that_cannot_run_the_job_are_refused():
    with pytest.raises(ValueError, match="no GPU"):
        pipeline_seconds(loads(), TWO_CPUS, Options(), gpu=True)
    with pytest.raises(ValueError, match="0.9 CPUs for a decode task"):
        pipeline_seconds(loads(), [NodeGroup("head", 1, 0.0, 0.0)], Options(), gpu=False)
