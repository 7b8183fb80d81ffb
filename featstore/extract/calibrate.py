"""``featstore calibrate``: measure the rates an estimate needs, on the machine at hand.

The extraction job's own pipeline (``run_extract``: Ray, decode tasks, one actor
pool per encoder, the write stage) runs on the first N usable clips of the
dataset into a scratch store, one clip a unit, so that a calibration of N clips
starts as many decode and write workers as a long run would on a machine of up
to N CPUs. From its per-unit records come the decode, encode and write rates
(``rates.run_records``, as every job records them) and the start-up (its wall
time beyond the throughput model of its units). Then, in this process, each
slot's decode is timed alone on the same clips (each slot's share of the joint
decode), and one unit of the run's ``--unit-size`` is written (the write rate:
a one-clip unit's write is nearly all per-unit cost). The records are appended
to a rates file for ``featstore plan --estimate --rates FILE``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from featstore.errors import StoreError
from featstore.extract.config import ExtractConfig
from featstore.extract.console import Console
from featstore.extract.rates import decode_key, feature_layouts, save_rates_file, spec_set_key, write_key
from featstore.extract.run import job_manifest, resolve_dataset, run_extract
from featstore.extract.specs import decode_config
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
    # The pipeline's writes were of one-clip units: their cost is nearly all per unit, so
    # the write rate comes from a whole unit of the run's size, written below instead.
    records = [{**r, "source": "calibrate"} for r in summary["rates"] if r["kind"] != "write"]
    stamp = {k: records[0][k] for k in ("source", "measured_at", "host")} if records else {}
    encode_devices = sorted({r["device"] for r in records if r["kind"] == "encode"})
    slots = list(specs)
    records.append(
        {
            "kind": "startup",
            "key": spec_set_key(specs, slots),
            "device": encode_devices[0] if len(encode_devices) == 1 else "+".join(encode_devices),
            "clips": summary["clips_run"],
            "units": summary["units_run"],
            "seconds": summary["startup_seconds"],
            "slots": sorted(slots),
            "spec_ids": sorted(s.id for s in specs.values()),
            "ray_resources": summary.get("ray_resources"),
            "wall_seconds": summary["wall_seconds"],
            **stamp,
        }
    )
    records += _slot_decodes(run_cfg, usable, specs, root, stamp)
    records.append(_unit_write(specs, features, cfg.unit_size, stamp))
    save_rates_file(out, records)
    return {"records": records, "summary": summary, "file": str(out)}


def _slot_decodes(
    cfg: ExtractConfig, samples: list, specs: dict[str, Any], root: Path, stamp: dict[str, Any]
) -> list[dict[str, Any]]:
    """Each slot's decode timed alone on the calibration clips, in this process."""
    from featstore.media.clip import decode_clip

    decode = decode_config(cfg)
    out = []
    for slot in specs:
        t0 = time.perf_counter()
        for sample in samples:
            decode_clip(sample, root, [slot], decode)
        out.append(
            {
                "kind": "decode",
                "key": decode_key(specs, [slot]),
                "device": "cpu",
                "clips": len(samples),
                "units": 1,
                "seconds": round(time.perf_counter() - t0, 4),
                "slots": [slot],
                "alone": True,  # timed outside the pipeline: gives the slot's share of a joint decode
                **stamp,
            }
        )
    return out


def _unit_write(
    specs: dict[str, Any], features: dict[str, list], unit_size: int, stamp: dict[str, Any]
) -> dict[str, Any]:
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
            slot: np.resize(np.stack(rows), (unit_size, *specs[slot].shape)).astype(specs[slot].dtype)
            if rows
            else np.zeros((unit_size, *specs[slot].shape), specs[slot].dtype)
            for slot, rows in features.items()
        }
        t0 = time.perf_counter()
        for slot, feat in feats.items():
            feat.write_unit(0, data[slot])
        seconds = time.perf_counter() - t0
    slots = list(specs)
    return {
        "kind": "write",
        "key": write_key(specs, slots),
        "device": "cpu",
        "clips": unit_size,
        "units": 1,
        "seconds": round(seconds, 4),
        "slots": sorted(slots),
        "features": feature_layouts(specs, slots),
        "alone": True,  # a whole unit of the run's size, timed outside the pipeline, on a local folder
        **stamp,
    }
