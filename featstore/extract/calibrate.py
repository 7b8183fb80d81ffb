"""``featstore calibrate``: measure the rates an estimate needs, on the machine at hand.

1. The extraction job's own pipeline (``run_extract``: Ray, decode tasks, one actor
   pool per encoder, the write stage) runs on the first N usable clips of the
   dataset into a scratch store, one clip a unit, so that N clips start as many
   decode and write workers as a long run does on up to N CPUs. Its GPU actors'
   per-unit encode seconds are the GPU rates (``rates.run_records``).
2. In one Ray task placed as an encoder actor is (on a cluster, a GPU worker node,
   not the head that runs the driver), one thread as a Ray worker has: the job's decode of the
   same clips (all slots at once, then each slot alone: each slot's share), its
   CPU encoders (``EncodeStage._encode``) after a warm-up call, and the write of
   one unit of ``--unit-size``. These are CPU-seconds a clip without the share of
   the machine that other stages take inside the pipeline (the estimate divides
   the work among the CPUs itself), and a write whose per-unit cost is spread as
   in the run (a one-clip unit's write is nearly all per-unit cost).
3. Start-up: the pipeline run's wall time beyond the estimate of its own units
   from these very records (``throughput.startup_residual``), so that an estimate
   made from the file gives the calibration run's own wall time back.

The records are appended to a rates file for ``featstore plan --estimate --rates FILE``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import shutil
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

import ray

from featstore.errors import StoreError
from featstore.extract.cluster import NodeGroup
from featstore.extract.config import ExtractConfig
from featstore.extract.console import Console
from featstore.extract.rates import RateTable, decode_key, feature_layouts, save_rates_file, spec_set_key, write_key
from featstore.extract.run import job_manifest, resolve_dataset, run_extract
from featstore.extract.specs import decode_config, encoder_options
from featstore.extract.throughput import Options, UnitLoad, startup_residual
from featstore.store import FeatureStore

__all__ = ["calibrate"]


def calibrate(
    cfg: ExtractConfig, clips: int, out: str | Path, scratch: str | None = None, console: Console | None = None
) -> dict[str, Any]:
    """Run the job's pipeline on ``clips`` usable clips and append the rates to ``out``.

    Args:
        cfg: the job's options (those that decide spec ids must match the run to estimate).
        clips: how many clips to time (the first usable ones of the manifest).
        out: the rates file (created, or appended to).
        scratch: where the scratch store goes (a new location; local folder or fsspec
            URL that every Ray node can write); default: a temporary folder, removed after.
        console: the job's console (progress bar, engine log).

    Returns:
        ``records`` (what was appended), ``summary`` (the calibration run's), ``file``.

    Raises:
        ValueError: for clips < 1, no usable clip, or a scratch store that already exists.
    """
    if clips < 1:
        raise ValueError(f"--clips {clips} must be at least 1")
    root = resolve_dataset(cfg)
    manifest = job_manifest(dataclasses.replace(cfg, dataset=str(root), limit=None))
    usable = [s for s in manifest.samples if s.error is None][:clips]
    if not usable:
        raise ValueError(f"no usable clip in {root} ({len(manifest)} samples, all with unusable media)")
    tmp = None if scratch else tempfile.mkdtemp(prefix="featstore-calibrate-")
    url = scratch or str(Path(tmp) / "store.zarr")
    try:
        FeatureStore.open(url)
    except StoreError:
        pass
    else:
        raise ValueError(f"--scratch {url} already holds a store: calibration needs a new location")
    run_cfg = dataclasses.replace(
        cfg, dataset=str(root), store=url, unit_size=1, limit=None, export_wds=None, summary_json=None
    )
    try:
        summary = run_extract(run_cfg, console, manifest=dataclasses.replace(manifest, samples=usable))
        store = FeatureStore.open(url)
        specs = {slot: store.feature(c["key"]).spec for slot, c in summary["specs"].items()}
        features = {slot: [x for _, x in store.feature(spec.key).iter_committed()] for slot, spec in specs.items()}
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    pipeline = {r["slot"]: r for r in summary["rates"] if r["kind"] == "encode"}
    cpu_slots = [slot for slot, r in pipeline.items() if r["device"] == "cpu"]
    # The in-process timings run in a Ray task placed as an encoder actor is (on a GPU
    # worker of a cluster, not on the head that runs this driver).
    gpus = 0.0 if len(cpu_slots) == len(pipeline) else (cfg.gpus_per_actor or 1.0)
    task = ray.remote(_time_here).options(num_cpus=1, num_gpus=gpus, max_retries=0)
    here = ray.get(task.remote(run_cfg, [s.to_dict() for s in usable], specs, str(root), cpu_slots, features))
    stamp = {"source": "calibrate", "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "host": here["host"]}
    records = [{**r, **stamp} for slot, r in pipeline.items() if slot not in cpu_slots]
    records += [{**r, **stamp, "alone": True} for r in here["records"]]
    records.append(_startup(run_cfg, summary, specs, records, stamp))
    save_rates_file(out, records)
    return {"records": records, "summary": summary, "file": str(out)}


def _record(kind: str, key: str, device: str, clips: int, seconds: float, slots: list[str], **kw: Any) -> dict:
    return {
        "kind": kind,
        "key": key,
        "device": device,
        "clips": clips,
        "units": 1,
        "seconds": round(seconds, 4),
        "slots": sorted(slots),
        **kw,
    }


def _time_here(
    cfg: ExtractConfig, rows: list[dict], specs: dict[str, Any], root: str, cpu_slots: list[str], features: dict
) -> dict[str, Any]:
    """Ray task: the in-process timings (``_alone``, ``_unit_write``) on the node it runs on."""
    records = _alone(cfg, rows, specs, root, cpu_slots)
    records.append(_unit_write(specs, features, cfg.unit_size))
    return {"records": records, "host": socket.gethostname()}


def _alone(cfg: ExtractConfig, rows: list[dict], specs: dict[str, Any], root: str, cpu_slots: list[str]) -> list[dict]:
    """The job's decode (all slots at once, then each slot alone) and its CPU encoders,
    timed in this process on the calibration clips, one thread each as a Ray worker
    has: CPU-seconds a clip, without the other stages' share of the machine that the
    pipeline's own timings include (the estimate divides the work among the CPUs)."""
    import torch

    from featstore.extract.decode import decode_unit
    from featstore.extract.encode import EncodeStage
    from featstore.extract.plan import UnitWork

    decode = decode_config(cfg)
    out = []
    for slots in [list(specs), *([s] for s in specs)] if len(specs) > 1 else [list(specs)]:
        work = decode_unit({"work": UnitWork(0, rows, slots)}, root, decode)["work"]
        out.append(_record("decode", decode_key(specs, slots), "cpu", len(rows), work.seconds["decode"], slots))
    work = decode_unit({"work": UnitWork(0, rows, list(specs))}, root, decode)["work"]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # Ray gives a worker OMP_NUM_THREADS=1
    try:
        for slot in cpu_slots:
            opts = encoder_options(cfg, decode, slot)
            stage = EncodeStage(slot, cfg.preset, cfg.overrides().get(slot), opts, specs[slot].id, cfg.batch_size)
            stage._encode(UnitWork(0, rows[:1], [slot], clips=work.clips[:1]))  # warm-up: the first call's set-up
            t0 = time.perf_counter()
            stage._encode(work)
            seconds = time.perf_counter() - t0
            encoded = len(rows) - len(work.failures.get(slot, {}))
            out.append(_record("encode", specs[slot].id, "cpu", encoded, seconds, [slot], slot=slot))
    finally:
        torch.set_num_threads(threads)
    return out


def _startup(cfg: ExtractConfig, summary: dict, specs: dict[str, Any], records: list, stamp: dict) -> dict[str, Any]:
    """The calibration run's wall time beyond the estimate of its own units from these
    records, on the Ray cluster it ran on: Ray, planning, worker and model start-up."""
    table = RateTable(records)
    devices = {r["slot"]: r["device"] for r in records if r["kind"] == "encode"}
    slots = list(specs)
    decode = table.per_clip("decode", decode_key(specs, slots), "cpu") or 0.0
    encode = {s: table.per_clip("encode", specs[s].id, devices.get(s, "cpu")) or 0.0 for s in slots}
    write = table.per_clip("write", write_key(specs, slots), "cpu") or 0.0
    loads = [UnitLoad(1, decode, dict(encode), write) for _ in range(summary["units_run"])]  # one clip a unit
    res = summary["ray_resources"]
    nodes = [NodeGroup("ray", 1, res["cpus"], res["gpus"])]
    gpu = any(d != "cpu" for d in devices.values())
    opts = Options(cfg.actors, cfg.gpus_per_actor, cfg.decode_cpus, cfg.write_tasks)
    startup = startup_residual(summary["wall_seconds"], loads, nodes, opts, gpu)
    device = "+".join(sorted(set(devices.values()))) or "cpu"
    ids = sorted(s.id for s in specs.values())
    extra = {"spec_ids": ids, "ray_resources": res, "wall_seconds": summary["wall_seconds"], **stamp}
    return _record("startup", spec_set_key(specs, slots), device, summary["clips_run"], startup, slots, **extra)


def _unit_write(specs: dict[str, Any], features: dict[str, list], unit_size: int) -> dict[str, Any]:
    """One unit of the run's unit size written as the write stage writes it (every slot's
    features, commit flags last) into a temporary local store: the calibration clips'
    features repeated to fill the unit."""
    import numpy as np

    with tempfile.TemporaryDirectory(prefix="featstore-calibrate-write-") as tmp:
        store = FeatureStore.create(Path(tmp) / "unit.zarr")
        ids = [f"w{i}" for i in range(unit_size)]
        store.add_samples(ids, [hashlib.sha256(i.encode()).hexdigest() for i in ids])
        feats = {slot: store.add_spec(spec, unit_size=unit_size) for slot, spec in specs.items()}
        data = {
            slot: np.resize(
                np.stack(rows) if rows else np.zeros((1, *specs[slot].shape)), (unit_size, *specs[slot].shape)
            )
            for slot, rows in features.items()
        }
        t0 = time.perf_counter()
        for slot, feat in feats.items():
            feat.write_unit(0, data[slot].astype(specs[slot].dtype))
        seconds = time.perf_counter() - t0
    slots = list(specs)
    layouts = feature_layouts(specs, slots)
    return _record("write", write_key(specs, slots), "cpu", unit_size, seconds, slots, features=layouts)
