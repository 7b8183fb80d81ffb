"""The throughput model of the extraction pipeline (``featstore.extract.run``):
how long a sequence of units takes on a set of nodes, given each unit's seconds
per stage.

- The first unit passes every stage in turn (``fill``); the others flow at the
  rate of the busiest resource (``work``): decode tasks (one per
  ``--decode-cpus`` of each node), encoder actors (``--actors`` per slot; on a
  GPU run never more devices than the cluster has, nor than the actors hold),
  write tasks (``--write-tasks`` at once), and, when the encoders run on CPUs,
  all of it sharing the cluster's CPUs.
- Start-up (Ray, planning, worker processes, model loading) is what a measured
  run's wall time had beyond this model of its own units (``startup_residual``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from featstore.extract.cluster import NodeGroup

__all__ = ["Options", "UnitLoad", "pipeline_seconds", "startup_residual", "wall_seconds"]


@dataclass(frozen=True)
class Options:
    """The job's scheduling options that decide its throughput (ExtractConfig's fields)."""

    actors: int = 1
    gpus_per_actor: float | None = None
    decode_cpus: float = 0.9
    write_tasks: int = 2


@dataclass
class UnitLoad:
    """Seconds one unit spends in each stage."""

    clips: int
    decode: float
    encode: dict[str, float]
    write: float


def pipeline_seconds(
    loads: Sequence[UnitLoad], nodes: Sequence[NodeGroup], opts: Options, gpu: bool
) -> tuple[float, float, str]:
    """(fill, work, bound): the first unit's latency through every stage, the time of
    all units at the busiest resource's rate, and which resource that is.

    Raises:
        ValueError: when the nodes cannot run the job (no CPU to decode on, no GPU for a GPU run).
    """
    if not loads:
        return 0.0, 0.0, "nothing to do"
    cpus = sum(n.count * n.cpus for n in nodes)
    gpus = sum(n.count * n.gpus for n in nodes)
    decoders = sum(n.count * int(n.cpus // opts.decode_cpus) for n in nodes)
    if decoders < 1:
        raise ValueError(f"no node offers {opts.decode_cpus} CPUs for a decode task (CPUs per node: {_cpus(nodes)})")
    decode = sum(u.decode for u in loads)
    write = sum(u.write for u in loads)
    per_slot: dict[str, float] = {}
    for u in loads:
        for slot, s in u.encode.items():
            per_slot[slot] = per_slot.get(slot, 0.0) + s
    bounds = {
        "decode tasks": decode / decoders,
        "write tasks": write / opts.write_tasks,
        "encoder actors": max(per_slot.values(), default=0.0) / opts.actors,
    }
    if gpu:
        if gpus <= 0:
            raise ValueError("the specs are for CUDA actors but the cluster has no GPU")
        usable = min(gpus, len(per_slot) * opts.actors * (opts.gpus_per_actor or 1.0))
        bounds["GPUs"] = sum(per_slot.values()) / usable
    else:
        bounds["shared CPUs"] = (decode + write + sum(per_slot.values())) / cpus
    bound = max(bounds, key=lambda k: bounds[k])
    first = loads[0]
    fill = first.decode + sum(first.encode.values()) + first.write
    return fill, bounds[bound], bound


def wall_seconds(loads: Sequence[UnitLoad], nodes: Sequence[NodeGroup], opts: Options, gpu: bool) -> float:
    """Wall time of the units alone: the first unit's fill, the others at the work rate."""
    fill, work, _ = pipeline_seconds(loads, nodes, opts, gpu)
    return fill + work * (len(loads) - 1) / len(loads) if loads else 0.0


def startup_residual(
    wall: float, loads: Sequence[UnitLoad], nodes: Sequence[NodeGroup], opts: Options, gpu: bool
) -> float:
    """Start-up of a measured run: its wall time beyond the model of its own units."""
    return max(0.0, wall - wall_seconds(loads, nodes, opts, gpu))


def _cpus(nodes: Sequence[NodeGroup]) -> str:
    return ", ".join(f"{n.name} {n.cpus:g}" for n in nodes)
