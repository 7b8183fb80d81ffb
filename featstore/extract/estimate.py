"""What a planned extraction will cost, from measured rates: per slot clips, decode
CPU-seconds, encoder device-seconds and bytes written; in total the wall time on
a cluster's node types and the dollars at on-demand prices.

The model (the job's pipeline, ``featstore.extract.run``):

- Work is per unit: a unit is decoded once for its pending slots, each pending
  encoder runs on every usable clip of the unit, and the unit is written whole.
  A clip costs its measured seconds per clip (``rates.RateTable``); a clip whose
  media the manifest found unusable costs nothing.
- Those units flow through the pipeline as ``featstore.extract.throughput``
  models it: the first unit through every stage, the rest at the busiest
  resource's rate, after the start-up a calibration run measured on that device.
- Dollars: every node of the cluster file at full size (max_workers) for the
  whole wall time, at the price table's on-demand rates or ``--price``.

Nothing is guessed: a figure that needs a rate nobody measured is left out and
the rate is named in ``missing``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from featstore.extract.cluster import NodeGroup
from featstore.extract.rates import RateTable, decode_key, feature_layouts, spec_set_key, write_key
from featstore.extract.throughput import Options, UnitLoad, pipeline_seconds
from featstore.spec import FeatureSpec

__all__ = ["Estimate", "estimate_plan"]

# Bytes a sample adds beside its feature: media hash, failure stage and reason, status (store/layout.py).
ROW_META_BYTES = 32 + 32 + 480 + 1
ONLINE_EPOCHS = 30  # stage 1 of the paper's recipe (DESIGN.md): an online run encodes every clip every epoch


@dataclass
class Estimate:
    """An estimate; a figure is None where a rate it needs is missing (named in ``missing``)."""

    units: int
    slots: dict[str, dict[str, Any]]  # slot -> key, device, units, clips, decode_s, encode_s, bytes
    nodes: list[NodeGroup]
    decode_s: float | None = None  # CPU-seconds, all units
    write_s: float | None = None
    encode_s: float | None = None  # device-seconds, all slots
    startup_s: float | None = None
    fill_s: float | None = None  # the first unit through every stage
    work_s: float | None = None  # all units at the busiest resource's rate
    bound: str | None = None  # that resource
    units_s: float | None = None  # fill + the other units at the work rate
    wall_s: float | None = None  # start-up + units_s
    usd_per_hour: float | None = None  # the whole cluster
    usd: float | None = None
    prices: dict[str, Any] = field(default_factory=dict)  # the price table's region, date and source
    missing: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "nodes": [n.to_dict() for n in self.nodes]}

    def lines(self) -> list[str]:
        """The estimate as a person reads it."""
        nodes = "; ".join(
            f"{n.count} x {n.instance_type or n.name} ({n.cpus:g} CPU, {n.gpus:g} GPU)" for n in self.nodes
        )
        clips = max((s["clips"] for s in self.slots.values()), default=0)
        out = [f"estimate: {clips} clips in {self.units} unit(s) on {nodes}"]
        if self.units:
            out += self._table() + self._totals()
        out += [f"  note: {n}" for n in self.notes]
        if self.missing:
            out.append("  missing (run `featstore calibrate` with the same options on that machine type):")
            out += [f"    {m}" for m in self.missing]
        return out

    def _table(self) -> list[str]:
        out = [
            f"  {'slot':<9} {'spec':<28} {'units':>6} {'clips':>7} {'decode CPU-s':>13} {'encode s':>10}  "
            f"{'written':>9}  device"
        ]
        for slot, s in self.slots.items():
            out.append(
                f"  {slot:<9} {s['key']:<28} {s['units']:>6} {s['clips']:>7} {_num(s['decode_s']):>13} "
                f"{_num(s['encode_s']):>10}  {_bytes(s['bytes']):>9}  {s['device'] or '?'}"
            )
        out.append(
            f"  decode (each clip once for all its unit's slots) {_num(self.decode_s)} CPU-s; "
            f"write {_num(self.write_s)} s"
        )
        return out

    def _totals(self) -> list[str]:
        out = []
        if self.encode_s is not None:
            devices = ", ".join(sorted({str(s["device"]) for s in self.slots.values()}))
            out.append(
                f"  encoders {self.encode_s / 3600:.4g} device-hours on {devices}; "
                f"decode {self.decode_s / 3600:.4g} CPU-hours"
            )
            out.append(
                "  cache vs online: training online encodes every clip every epoch, so stage 1's "
                f"{ONLINE_EPOCHS} epochs "
                f"would spend {ONLINE_EPOCHS * self.encode_s / 3600:.4g} device-hours on these encoders and "
                f"{ONLINE_EPOCHS * self.decode_s / 3600:.4g} CPU-hours decoding; the cache spends them once, so it "
                "pays for itself from the second epoch"
            )
        if self.units_s is not None:
            rest = (
                f"first unit {_dur(self.fill_s)} + the others at the rate of the {self.bound} "
                f"({_dur(self.work_s)} for all units)"
            )
            if self.wall_s is not None:
                out.append(f"  wall time {_dur(self.wall_s)} = start-up {_dur(self.startup_s)} + {rest}")
            else:
                out.append(f"  wall time: start-up not measured, then {_dur(self.units_s)} = {rest}")
        if self.usd is not None:
            p = self.prices
            out.append(
                f"  cost ${self.usd:,.2f}: ${self.usd_per_hour:,.3f}/h for every node of the cluster for the wall time "
                f"({p.get('market', '?')}, {p.get('region', '?')}, prices of {p.get('as_of', '?')})"
            )
        return out


def _num(v: float | None) -> str:
    return "?" if v is None else f"{v:,.2f}"


def _dur(s: float | None) -> str:
    if s is None:
        return "?"
    return f"{s:.1f} s" if s < 120 else f"{s / 60:.1f} min" if s < 7200 else f"{s / 3600:.2f} h"


def _bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:,.1f} TB"


def _device(spec: FeatureSpec, nodes: Sequence[NodeGroup], rates: RateTable, say: Any) -> str | None:
    """The device label whose rates apply to ``spec`` on these nodes: ``cpu``, the GPU
    name of the nodes (most GPUs first), or the one CUDA device with rates for it."""
    if spec.preprocess.get("device_type") != "cuda":
        return "cpu"
    named = sorted((n for n in nodes if n.gpus > 0 and n.gpu_name), key=lambda n: -n.count * n.gpus)
    if named:
        return named[0].gpu_name
    have = [d for d in rates.devices("encode", spec.id) if d != "cpu"]
    if len(have) == 1:
        say(f"{spec.name}: GPU model of the nodes unknown; used the rates measured on {have[0]}")
        return have[0]
    return None


def _unit_rates(
    slots: list[str], specs: Mapping[str, FeatureSpec], devices: Mapping[str, str | None], rates: RateTable, say: Any
) -> tuple[float | None, dict[str, float | None], dict[str, float | None], float | None]:
    """Per clip for a unit whose pending slots are ``slots``: decode, the decode share
    of each slot, each encoder, write (None where nothing was measured)."""
    joined = "+".join(slots)
    shares = {s: rates.per_clip("decode", decode_key(specs, [s]), "cpu") for s in slots}
    decode = rates.per_clip("decode", decode_key(specs, slots), "cpu")
    if decode is None and all(v is not None for v in shares.values()):
        decode = sum(shares.values())
        say(f"decode of {joined}: the sum of each slot's decode (an upper bound: the job decodes a video once)")
    if decode is None:
        say(f"decode of {joined} on cpu ({decode_key(specs, slots)})", True)
    known = [v for v in shares.values() if v is not None]
    total = sum(known)
    split = {
        s: (
            decode * v / total
            if decode is not None and v is not None and total > 0 and len(known) == len(slots)
            else None
        )
        for s, v in shares.items()
    }
    encode = {}
    for s in slots:
        dev = devices[s]
        encode[s] = None if dev is None else rates.per_clip("encode", specs[s].id, dev)
        if encode[s] is None:
            have = ", ".join(rates.devices("encode", specs[s].id)) or "no device"
            say(f"encode {s} ({specs[s].key}) on {dev or 'the cluster GPU (unknown model)'}; measured on: {have}", True)
    write = rates.per_clip("write", write_key(specs, slots), "cpu")
    if write is None:
        sup = rates.superset("write", "features", feature_layouts(specs, slots), "cpu")
        if sup is not None:
            write = sup[0]
            say(f"write of {joined}: measured only with {'+'.join(sup[1])} (an upper bound)")
        else:
            say(f"write of {joined} on cpu ({write_key(specs, slots)})", True)
    return decode, split, encode, write


def estimate_plan(
    plan: Any,
    rates: RateTable,
    nodes: Sequence[NodeGroup],
    opts: Options = Options(),
    prices: Mapping[str, Any] | None = None,
    overrides: Mapping[str, float] | None = None,
) -> Estimate:
    """Estimate a plan (``plan_extraction``'s ``Plan``) on ``nodes`` from ``rates``.

    Args:
        plan: the plan; its units are what the run computes.
        rates: measured rates (a calibration file, the store's job records, or both).
        nodes: the cluster at full size (``parse_cluster``) or this machine (``local_nodes``).
        opts: the job's scheduling options.
        prices: the price table (``load_prices``); None: no dollars.
        overrides: instance type or node group name -> USD per hour (``--price``).

    Raises:
        ValueError: when the plan's specs differ in unit size, an override names no
            node of the cluster, or the nodes cannot run the job.
    """
    overrides = dict(overrides or {})
    names = {n.instance_type for n in nodes if n.instance_type} | {n.name for n in nodes}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise ValueError(f"--price {', '.join(unknown)}: no such node or instance type here; there are {sorted(names)}")
    missing: dict[str, None] = {}  # ordered sets: each line once
    notes: dict[str, None] = {}

    def say(text: str, is_missing: bool = False) -> None:
        (missing if is_missing else notes)[text] = None

    specs = {slot: sp.spec for slot, sp in plan.specs.items()}
    devices = {slot: _device(spec, nodes, rates, say) for slot, spec in specs.items()}
    rows, loads, totals = _tally(plan, specs, devices, rates, say)
    est = Estimate(units=len(plan.units()), slots=rows, nodes=list(nodes), prices=_about(prices))
    est.decode_s, est.write_s = totals["decode"], totals["write"]
    if loads is not None and loads:
        est.encode_s = sum(sum(u.encode.values()) for u in loads)
        gpu = any(spec.preprocess.get("device_type") == "cuda" for spec in specs.values())
        est.fill_s, est.work_s, est.bound = pipeline_seconds(loads, nodes, opts, gpu)
        est.units_s = est.fill_s + est.work_s * (len(loads) - 1) / len(loads)
        est.startup_s = _startup(rates, specs, next(iter(devices.values())) or "cpu", say)
        if est.startup_s is not None:
            est.wall_s = est.startup_s + est.units_s
    est.usd_per_hour = _dollars(nodes, prices, overrides, say)
    if est.wall_s is not None and est.usd_per_hour is not None:
        est.usd = est.wall_s / 3600 * est.usd_per_hour
    est.missing, est.notes = list(missing), list(notes)
    return est


def _about(prices: Mapping[str, Any] | None) -> dict[str, Any]:
    return {k: v for k, v in (prices or {}).items() if k in ("region", "market", "as_of", "source")}


def _tally(
    plan: Any, specs: Mapping[str, FeatureSpec], devices: Mapping[str, str | None], rates: RateTable, say: Any
) -> tuple[dict[str, dict[str, Any]], list[UnitLoad] | None, dict[str, float | None]]:
    """Per slot clips, seconds and bytes; per unit its load (None when a rate is missing);
    the decode and write totals (None where their rate is missing)."""
    sizes = {sp.unit_size for sp in plan.specs.values()}
    if len(sizes) > 1:
        raise ValueError(f"the specs of one run must share a unit size; they have {sorted(sizes)}")
    usize = sizes.pop() if sizes else 1
    n_rows = plan.store_samples + plan.new_samples
    unusable = np.zeros(n_rows, dtype=bool)
    unusable[list(plan.unusable_rows)] = True
    rows = {
        slot: {"key": spec.key, "device": devices[slot], "units": len(plan.specs[slot].units), "clips": 0}
        | {"decode_s": 0.0, "encode_s": 0.0, "bytes": 0}
        for slot, spec in specs.items()
    }
    loads: list[UnitLoad] | None = []
    totals: dict[str, float | None] = {"decode": 0.0, "write": 0.0}
    per_set: dict[tuple[str, ...], Any] = {}
    for unit, slots in plan.units().items():
        a, b = unit * usize, min((unit + 1) * usize, n_rows)
        clips = int((b - a) - unusable[a:b].sum())
        if tuple(slots) not in per_set:
            per_set[tuple(slots)] = _unit_rates(slots, specs, devices, rates, say)
        decode, split, encode, write = per_set[tuple(slots)]
        for s in slots:
            r, spec = rows[s], specs[s]
            r["clips"] += clips
            r["bytes"] += (b - a) * (int(np.prod(spec.shape)) * np.dtype(spec.dtype).itemsize + ROW_META_BYTES)
            r["decode_s"] = None if r["decode_s"] is None or split[s] is None else r["decode_s"] + split[s] * clips
            r["encode_s"] = None if r["encode_s"] is None or encode[s] is None else r["encode_s"] + encode[s] * clips
        for stage, rate in (("decode", decode), ("write", write)):  # known even when an encoder rate is not
            totals[stage] = None if totals[stage] is None or rate is None else totals[stage] + rate * clips
        if loads is None or decode is None or write is None or any(encode[s] is None for s in slots):
            loads = None
            continue
        loads.append(UnitLoad(clips, decode * clips, {s: encode[s] * clips for s in slots}, write * clips))
    if totals["decode"] is not None and any(r["decode_s"] is None for r in rows.values()):
        say("decode per slot: not measured apart (featstore calibrate times each slot alone); only the total is known")
    return rows, loads, totals


def _startup(rates: RateTable, specs: Mapping[str, FeatureSpec], device: str, say: Any) -> float | None:
    """Start-up of a run of these specs on ``device``: measured with the same specs, else with more."""
    key = spec_set_key(specs, list(specs))
    startup = rates.startup(key, device)
    if startup is None:
        sup = rates.superset("startup", "spec_ids", [s.id for s in specs.values()], device)
        if sup is not None:
            say(f"start-up: measured with {'+'.join(sup[1])}")
            return sup[0]
        say(f"start-up of a run of {'+'.join(specs)} on {device} ({key}): featstore calibrate measures it", True)
    return startup


def _dollars(
    nodes: Sequence[NodeGroup], prices: Mapping[str, Any] | None, overrides: Mapping[str, float], say: Any
) -> float | None:
    """USD per hour of the whole cluster, or None when a node has no price."""
    table = (prices or {}).get("instances", {})
    total = 0.0
    for n in nodes:
        price = overrides.get(n.instance_type or "", overrides.get(n.name))
        if price is None and n.instance_type in table:
            price = table[n.instance_type]["usd_per_hour"]
        if price is None:
            if n.instance_type:
                say(
                    f"price of {n.instance_type} (not in the price table): pass --price {n.instance_type}=USD_PER_HOUR",
                    True,
                )
            else:
                say(f"no dollars: {n.name} has no instance type (--price {n.name}=USD_PER_HOUR sets one)")
            return None
        total += n.count * price
    return total
