"""Run one extraction: manifest -> store groups -> Ray Data pipeline -> summary (the body of jobs/extract.py)."""

from __future__ import annotations

import dataclasses
import json
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray

from featstore.extract.config import ExtractConfig
from featstore.extract.decode import decode_unit
from featstore.extract.encode import TINY_DIR, EncodeStage, load_one_encoder
from featstore.extract.plan import unit_works
from featstore.extract.sink import StoreSink
from featstore.manifest import Manifest, load_manifest
from featstore.media.clip import DecodeConfig
from featstore.spec import FeatureSpec
from featstore.store import FeatureStore

# Ray retries: a decode task or an encoder actor that dies (segfault, OOM, lost
# node) is retried or restarted; units are idempotent, so a retry never duplicates.
TASK_RETRIES = 4
ACTOR_RESTARTS = 4


@dataclass
class Prepared:
    """What the coordinator set up before any worker runs."""

    store: FeatureStore
    manifest: Manifest
    keys: dict[str, str]
    gpus_per_actor: float


def resolve_dataset(cfg: ExtractConfig) -> Path:
    """The dataset root; makes the demo dataset under work_dir when none is given."""
    if cfg.dataset:
        return Path(cfg.dataset)
    from featstore.demo.dataset import make_demo_dataset

    root = Path(cfg.work_dir) / "data"
    if not (root / "manifest.csv").exists():
        make_demo_dataset(root, progress=print)
    return root


def encoder_options(cfg: ExtractConfig, decode: DecodeConfig, slot: str) -> dict[str, Any]:
    opts: dict[str, Any] = {"upstream": decode.upstream(slot)}
    if slot != "audio":
        opts["clips_per_forward"] = cfg.batch_size
    return opts


def spec_of(slot: str, preset: str, source: str | None, options: dict[str, Any]) -> dict[str, Any]:
    """Load a slot's encoder where its actors will run (same device type) and return its spec."""
    from featstore.encoders.presets import build_tiny_checkpoints

    if preset == "tiny":
        build_tiny_checkpoints(TINY_DIR)
    return load_one_encoder(slot, preset, source, options).spec.to_dict()


_spec_task = ray.remote(max_retries=TASK_RETRIES)(spec_of)


def prepare(cfg: ExtractConfig, decode: DecodeConfig) -> Prepared:
    """Coordinator work: manifest into the store, one spec group per encoder, stale temp files removed."""
    root = resolve_dataset(cfg)
    # The demo dataset has several annotation files; its MERR JSON is the richest.
    fmt = "merr" if cfg.dataset is None and cfg.format == "auto" else cfg.format
    manifest = load_manifest(root, fmt, annotation=cfg.annotation)
    if cfg.limit is not None:
        manifest = dataclasses.replace(manifest, samples=manifest.samples[: cfg.limit])
    store = FeatureStore.open_or_create(cfg.store or str(Path(cfg.work_dir) / "store.zarr"))
    store.cleanup_partials()  # no writer runs yet: leftovers are from killed runs
    added = store.add_manifest(manifest)
    print(f"manifest {root}: {len(manifest)} samples, {len(manifest.problems)} unusable; store {store.url}: {added}")
    gpus = cfg.gpus_per_actor
    if gpus is None:
        gpus = 1.0 if ray.cluster_resources().get("GPU", 0) >= 1 else 0.0
    overrides = cfg.overrides()
    # Specs depend on the device type, so they are made where the actors will run;
    # on CPU-only runs that is any process, this one included (no worker start-up).
    make = _spec_task.options(num_gpus=gpus, num_cpus=cfg.cpus_per_actor).remote if gpus else spec_of
    refs = {slot: make(slot, cfg.preset, overrides.get(slot), encoder_options(cfg, decode, slot))
            for slot in cfg.slots()}
    keys = {}
    for slot, ref in refs.items():
        spec = FeatureSpec.from_dict(ray.get(ref) if gpus else ref)
        keys[slot] = store.add_spec(spec, unit_size=cfg.unit_size).spec.key
    store.set_attr("extract_config", cfg.saved())
    return Prepared(store, manifest, keys, gpus)


def build_dataset(cfg: ExtractConfig, decode: DecodeConfig, prep: Prepared, works: list) -> ray.data.Dataset:
    """units -> decode tasks -> one actor pool per encoder."""
    ds = ray.data.from_items([{"work": w} for w in works], override_num_blocks=max(1, len(works)))
    ds = ds.map(decode_unit, fn_kwargs={"root": str(prep.manifest.root.resolve()), "cfg": decode},
                num_cpus=cfg.decode_cpus, max_retries=TASK_RETRIES)
    overrides = cfg.overrides()
    for slot, key in prep.keys.items():
        spec_id = prep.store.feature(key).spec.id
        ds = ds.map_batches(
            EncodeStage, batch_size=1, concurrency=cfg.actors, num_gpus=prep.gpus_per_actor,
            num_cpus=cfg.cpus_per_actor, max_restarts=ACTOR_RESTARTS, max_task_retries=-1,
            fn_constructor_kwargs={"slot": slot, "preset": cfg.preset, "source": overrides.get(slot),
                                   "options": encoder_options(cfg, decode, slot), "spec_id": spec_id,
                                   "batch_size": cfg.batch_size},
        )
    return ds


def run_extract(cfg: ExtractConfig) -> dict[str, Any]:
    """Extract every pending unit and return the summary (also printed)."""
    t0 = time.perf_counter()
    decode = DecodeConfig(global_frame=cfg.global_frame, local_frames=cfg.local_frames,
                          timeout_s=cfg.decode_timeout)
    ray.init(address=cfg.ray_address, ignore_reinit_error=True)
    prep = prepare(cfg, decode)
    works = unit_works(prep.store, prep.keys, cfg.retry_failed)
    print(f"{len(works)} pending unit(s) of {cfg.unit_size} samples; encoders {list(prep.keys)}, "
          f"{cfg.actors} actor(s) each, {prep.gpus_per_actor} GPU(s) per actor")
    sink = StoreSink(prep.store.url, prep.keys)
    if works:
        build_dataset(cfg, decode, prep, works).write_datasink(sink)
    summary = summarize(FeatureStore.open(prep.store.url), prep, sink.stats, time.perf_counter() - t0)
    if cfg.export_wds or (cfg.export_wds is None and not cfg.dataset):
        from featstore.shards.export import export_wds

        out = cfg.export_wds or str(Path(cfg.work_dir) / "shards")
        summary["shards"] = {"out": out, "samples": export_wds(FeatureStore.open(prep.store.url), out).total_samples}
    print_summary(summary)
    if cfg.summary_json:
        Path(cfg.summary_json).write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    return summary


def summarize(store: FeatureStore, prep: Prepared, stats: list[dict], wall: float) -> dict[str, Any]:
    reasons: Counter = Counter()
    for feat in (store.feature(k) for k in prep.keys.values()):
        for r in feat.failures():
            reasons[f"{feat.spec.name}: {r['stage']}: {r['reason'].split(':')[0]}"] += 1
    seconds: Counter = Counter()
    for s in stats:
        seconds.update(s["seconds"])
    clips = sum(s["clips"] for s in stats)
    faces = [sum(s["faces"][i] for s in stats) for i in (0, 1)]
    return {
        "store": store.url, "samples": store.num_samples, "units_run": len(stats), "clips_run": clips,
        "manifest_problems": [{"sample_id": s.sample_id, "reason": s.error} for s in prep.manifest.problems],
        "specs": {slot: {"key": k, **store.feature(k).counts()} for slot, k in prep.keys.items()},
        "failed_by_reason": dict(reasons), "stage_seconds": {k: round(v, 2) for k, v in seconds.items()},
        "faces_found": faces, "wall_seconds": round(wall, 2),
        "actors": _actors(stats),
        "clips_per_second": round(clips / wall, 3) if wall else None,
    }


def _actors(stats: list[dict]) -> dict[str, list[dict]]:
    """Per slot, the distinct encoder actors that ran units: pid, node, GPU ids, CUDA_VISIBLE_DEVICES."""
    seen: dict[str, dict[tuple, dict]] = {}
    for s in stats:
        for slot, dev in s["devices"].items():
            seen.setdefault(slot, {})[(dev["node"], dev["pid"])] = dev
    return {slot: list(d.values()) for slot, d in seen.items()}


def print_summary(s: dict[str, Any]) -> None:
    print(f"\nstore {s['store']}: {s['samples']} samples; this run: {s['clips_run']} clips in {s['units_run']} "
          f"units, {s['wall_seconds']} s ({s['clips_per_second']} clips/s)")
    for slot, c in s["specs"].items():
        print(f"  {slot:<9} {c['key']:<28} committed {c['committed']:>6}  failed {c['failed']:>5}  "
              f"pending {c['pending']:>5}")
    for reason, n in sorted(s["failed_by_reason"].items()):
        print(f"  failed: {n} x {reason}")
    for p in s["manifest_problems"]:
        print(f"  not in store: {p['sample_id']}: {p['reason']}")
    print(f"  time per stage (summed over workers): {s['stage_seconds']}; faces found in "
          f"{s['faces_found'][0]}/{s['faces_found'][1]} frames")
    if "shards" in s:
        print(f"  shards: {s['shards']['samples']} samples in {s['shards']['out']}")
