"""The machines an estimate runs on: a Ray cluster launcher file's node types, or
this machine, and the shipped on-demand price table (``prices.json``)."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["NodeGroup", "load_prices", "local_nodes", "parse_cluster", "parse_price_overrides"]

PRICES_FILE = Path(__file__).with_name("prices.json")
# Ray's default for a cluster file without max_workers (python/ray/autoscaler/ray-schema.json).
RAY_DEFAULT_MAX_WORKERS = 2


@dataclass
class NodeGroup:
    """Nodes of one type at the cluster's full size (the head counts once)."""

    name: str
    count: int
    cpus: float
    gpus: float
    instance_type: str | None = None
    gpu_name: str | None = None  # the CUDA device name its GPUs report, when known
    notes: list[str] = field(default_factory=list)  # assumptions made about it

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def load_prices(path: str | Path = PRICES_FILE) -> dict[str, Any]:
    """The price table: ``region``, ``as_of``, ``source`` and ``instances`` (type -> usd_per_hour, vcpus, gpus, gpu)."""
    return json.loads(Path(path).read_text())


def parse_price_overrides(items: Sequence[str]) -> dict[str, float]:
    """``--price TYPE=USD_PER_HOUR`` values as a dict.

    Raises:
        ValueError: naming the item when it is not TYPE=a finite number >= 0.
    """
    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        try:
            usd = float(value)
        except ValueError:
            usd = math.nan
        if not sep or not name.strip() or not math.isfinite(usd) or usd < 0:
            raise ValueError(f"--price {item!r}: expected TYPE=USD_PER_HOUR with a number >= 0, e.g. g5.2xlarge=1.212")
        out[name.strip()] = usd
    return out


def local_nodes() -> list[NodeGroup]:
    """This machine as a one-node cluster: its CPU count, its CUDA GPUs (counted
    only when torch is already loaded, so that planning a CPU run stays light)."""
    import sys

    gpus, name = 0, None
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        gpus, name = torch.cuda.device_count(), torch.cuda.get_device_name(0)
    return [NodeGroup("local", 1, float(os.cpu_count() or 1), float(gpus), gpu_name=name)]


def _resources(name: str, spec: Mapping[str, Any], prices: Mapping[str, Any]) -> tuple[float, float, list[str]]:
    """CPUs and GPUs a node type offers Ray: declared ``resources``, else the instance's hardware."""
    declared = spec.get("resources") or {}
    itype = (spec.get("node_config") or {}).get("InstanceType")
    hw = prices.get("instances", {}).get(itype, {}) if itype else {}
    notes = []
    cpus, gpus = declared.get("CPU"), declared.get("GPU")
    if cpus is None:
        cpus = hw.get("vcpus")
        if cpus is None:
            raise ValueError(
                f"node type {name!r}: no resources.CPU and instance type {itype!r} is not in the price table; "
                "declare resources: {CPU: N, GPU: M} in the cluster file"
            )
        notes.append(f"CPU {cpus} from {itype}'s vCPUs (not declared)")
    if gpus is None:
        gpus = hw.get("gpus", 0)
        if gpus:
            notes.append(f"GPU {gpus} from {itype}'s hardware (not declared)")
    return float(cpus), float(gpus), notes


def parse_cluster(path: str | Path, prices: Mapping[str, Any] | None = None) -> list[NodeGroup]:
    """The node groups of a Ray cluster launcher file at full size.

    ``available_node_types``: the head type counts one node (plus its own
    ``max_workers``, if any), every other type its ``max_workers`` (default: the
    file's ``max_workers``), all capped by the file's ``max_workers`` in the
    order they are listed. Resources are the declared ``resources`` (``CPU: 0``
    on a head that takes no work), else the instance type's hardware from the
    price table. A local-provider file without node types is its head plus
    ``worker_ips``, each assumed to be like this machine (CPUs counted here, no GPU).

    Raises:
        ValueError: naming what is missing or malformed.
    """
    import yaml

    prices = load_prices() if prices is None else prices
    try:
        doc = yaml.safe_load(Path(path).read_text())
    except yaml.YAMLError as e:
        raise ValueError(f"{path}: not YAML ({e})") from e
    if not isinstance(doc, dict):
        raise ValueError(f"{path}: not a Ray cluster file (a mapping with available_node_types or provider)")
    cap = int(doc.get("max_workers", RAY_DEFAULT_MAX_WORKERS))
    types = doc.get("available_node_types")
    if not types:
        provider = doc.get("provider") or {}
        if provider.get("type") != "local":
            raise ValueError(f"{path}: no available_node_types (and not a local-provider file)")
        workers = len(provider.get("worker_ips") or [])
        cpus = float(os.cpu_count() or 1)
        note = f"resources not declared: each machine assumed like this one ({cpus:g} CPUs, no GPU)"
        return [NodeGroup("local", 1 + workers, cpus, 0.0, notes=[note])]
    head = doc.get("head_node_type")
    if head not in types:
        raise ValueError(f"{path}: head_node_type {head!r} is not one of available_node_types {sorted(types)}")
    groups, left = [], cap
    for name, spec in types.items():
        spec = spec or {}
        cpus, gpus, notes = _resources(name, spec, prices)
        workers = int(spec.get("max_workers", 0 if name == head else cap))
        if workers > left:
            notes.append(f"max_workers {workers} capped to {left} by the cluster's max_workers {cap}")
            workers = left
        left -= workers
        count = workers + (1 if name == head else 0)
        if count == 0:
            continue
        itype = (spec.get("node_config") or {}).get("InstanceType")
        gpu_name = prices.get("instances", {}).get(itype, {}).get("gpu") if gpus else None
        groups.append(NodeGroup(name, count, cpus, gpus, itype, gpu_name, notes))
    return groups
