"""Run one extraction: manifest -> store groups -> Ray Data pipeline -> summary (the body of jobs/extract.py)."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray

from featstore.errors import StorageAccessError, StoreError
from featstore.extract.cluster import NodeGroup
from featstore.extract.config import ExtractConfig
from featstore.extract.console import Console, ProgressBar, ProgressCounter
from featstore.extract.decode import decode_unit
from featstore.extract.encode import TINY_DIR, EncodeStage, load_one_encoder, quiet_transformers
from featstore.extract.plan import Plan, check_plan_matches_store, plan_extraction, unit_works
from featstore.extract.rates import append_store_rates, run_records
from featstore.extract.sink import StoreSink
from featstore.extract.specs import decode_config, encoder_options
from featstore.extract.summary import plan_summary, summarize
from featstore.extract.throughput import Options, UnitLoad, startup_residual
from featstore.manifest import Manifest, load_manifest
from featstore.media.clip import DecodeConfig
from featstore.spec import FeatureSpec
from featstore.store import FeatureStore
from featstore.store.remote import probe_bucket

# Ray retries: a decode task or an encoder actor that dies (segfault, OOM, lost
# node) is retried or restarted; units are idempotent, so a retry never duplicates.
# Decode tasks keep Ray's default of 3 retries (they read the raw bytes, so a
# clip that crashes its decoder every time must not loop forever); encoder
# actors keep Ray Data's defaults (restarted without limit, tasks retried):
# Ray 2.60 takes max_restarts only through the deprecated ``ray_remote_args``.
TASK_RETRIES = 3

# Ray Data's per-operator resource reservation (DataContext.op_resource_reservation_enabled)
# is off for the job: on a 2-CPU node it let one decode task run at a time and gave
# the write stage nothing until decoding ended (BENCHMARKS.md, "Extraction pipeline").
# Without it, the stages share the node by their own requests (decode_cpus,
# cpus_per_actor, write_cpus), and Ray Data still backs off on object store memory.
RESERVATION = False

log = logging.getLogger(__name__)


@dataclass
class Prepared:
    """What the coordinator set up before any worker runs."""

    store: FeatureStore
    manifest: Manifest
    keys: dict[str, str]
    gpus_per_actor: float
    plan: Plan


def resolve_dataset(cfg: ExtractConfig) -> Path:
    """The dataset root; makes the demo dataset under work_dir when none is given."""
    if cfg.dataset:
        return Path(cfg.dataset)
    from featstore.demo.dataset import make_demo_dataset

    root = Path(cfg.work_dir) / "data"
    if not (root / "manifest.csv").exists():
        make_demo_dataset(root, progress=log.info)
    return root


def spec_of(slot: str, preset: str, source: str | None, options: dict[str, Any]) -> dict[str, Any]:
    """Load a slot's encoder where its actors will run (same device type) and return its spec."""
    from featstore.encoders.presets import build_tiny_checkpoints

    quiet_transformers()
    if preset == "tiny":
        build_tiny_checkpoints(TINY_DIR)
    return load_one_encoder(slot, preset, source, options).spec.to_dict()


_spec_task = ray.remote(max_retries=TASK_RETRIES)(spec_of)


def job_manifest(cfg: ExtractConfig) -> Manifest:
    """The manifest a job config names (the demo dataset's MERR JSON when none is given), cut to --limit."""
    root = resolve_dataset(cfg)
    # The demo dataset has several annotation files; its MERR JSON is the richest.
    fmt = "merr" if cfg.dataset is None and cfg.format == "auto" else cfg.format
    manifest = load_manifest(root, fmt, annotation=cfg.annotation)
    if cfg.limit is not None:
        manifest = dataclasses.replace(manifest, samples=manifest.samples[: cfg.limit])
    return manifest


def store_url(cfg: ExtractConfig) -> str:
    return cfg.store or str(Path(cfg.work_dir) / "store.zarr")


def prepare(cfg: ExtractConfig, decode: DecodeConfig, manifest: Manifest | None = None) -> Prepared:
    """Coordinator work: the plan (``plan_extraction``, the code ``featstore plan``
    runs), then the manifest into the store, one spec group per encoder, stale
    temp files removed, and a check that the store's pending units are the plan's.
    ``manifest``: these samples instead of the config's (``featstore calibrate``)."""
    manifest = job_manifest(cfg) if manifest is None else manifest
    url = store_url(cfg)
    try:
        before: FeatureStore | None = FeatureStore.open(url)
    except StorageAccessError:
        raise
    except StoreError:  # no store there yet
        before = None
    gpus = cfg.gpus_per_actor
    if gpus is None:
        gpus = 1.0 if ray.cluster_resources().get("GPU", 0) >= 1 else 0.0
    overrides = cfg.overrides()
    # Specs depend on the device type, so they are made where the actors will run;
    # on CPU-only runs that is any process, this one included (no worker start-up).
    make = _spec_task.options(num_gpus=gpus, num_cpus=cfg.cpus_per_actor).remote if gpus else spec_of
    refs = {
        slot: make(slot, cfg.preset, overrides.get(slot), encoder_options(cfg, decode, slot)) for slot in cfg.slots()
    }
    specs = {slot: FeatureSpec.from_dict(ray.get(ref) if gpus else ref) for slot, ref in refs.items()}
    plan = plan_extraction(before, specs, manifest, cfg.retry_failed, cfg.unit_size, store_url=url)
    store = FeatureStore.open(url, "r+") if before is not None else FeatureStore.create(url)
    store.cleanup_partials()  # no writer runs yet: leftovers are from killed runs
    added = store.add_manifest(manifest)
    log.info(
        "manifest %s: %d samples, %d unusable; store %s: %s",
        manifest.root,
        len(manifest),
        len(manifest.problems),
        store.url,
        added,
    )
    keys = {slot: store.add_spec(spec, unit_size=cfg.unit_size).spec.key for slot, spec in specs.items()}
    store.set_attr("extract_config", cfg.saved())
    check_plan_matches_store(plan, store, keys)
    return Prepared(store, manifest, keys, gpus, plan)


def build_dataset(cfg: ExtractConfig, decode: DecodeConfig, prep: Prepared, works: list) -> ray.data.Dataset:
    """units -> decode tasks -> one actor pool per encoder (``commit_units`` writes them)."""
    ds = ray.data.from_items([{"work": w} for w in works], override_num_blocks=max(1, len(works)))
    ds = ds.map(
        decode_unit, fn_kwargs={"root": str(prep.manifest.root.resolve()), "cfg": decode}, num_cpus=cfg.decode_cpus
    )
    overrides = cfg.overrides()
    for slot, key in prep.keys.items():
        spec_id = prep.store.feature(key).spec.id
        ds = ds.map_batches(
            EncodeStage,
            batch_size=1,
            compute=ray.data.ActorPoolStrategy(size=cfg.actors),
            num_gpus=prep.gpus_per_actor,
            num_cpus=cfg.cpus_per_actor,
            fn_constructor_kwargs={
                "slot": slot,
                "preset": cfg.preset,
                "source": overrides.get(slot),
                "options": encoder_options(cfg, decode, slot),
                "spec_id": spec_id,
                "batch_size": cfg.batch_size,
            },
        )
    return ds


def configure_ray_data() -> None:
    """The job's Ray Data settings; call before ``build_dataset`` (a dataset keeps the
    context it was made in)."""
    ray.data.DataContext.get_current().op_resource_reservation_enabled = RESERVATION


def commit_units(ds: ray.data.Dataset, sink: StoreSink, cfg: ExtractConfig) -> list[dict[str, Any]]:
    """Write each unit into the store as soon as it is encoded, and return the units' records.

    One small write task a unit (``write_cpus`` CPUs, so that it is never queued
    behind decoding; at most ``write_tasks`` at once) commits it; the driver only
    pulls the tiny rows that say so.
    Write tasks are retried like any Ray Data task, and a rewrite of a unit
    changes nothing, so a unit is committed exactly once.
    """
    written = ds.map_batches(sink.commit_batch, batch_size=1, num_cpus=cfg.write_cpus, concurrency=cfg.write_tasks)
    sink.stats = [json.loads(row["stats"]) for row in written.iter_rows()]
    return sink.stats


def record_rates(cfg: ExtractConfig, prep: Prepared, stats: list[dict[str, Any]], wall: float) -> dict[str, Any]:
    """The rates this run measured (``rates.run_records``), appended to the store's
    rates file (``<store>.rates.json``) by the coordinator once every worker is done, and the run's
    start-up: its wall time beyond the throughput model of its own units on this
    Ray cluster (what ``featstore calibrate`` records)."""
    if not stats:
        return {"rates": [], "startup_seconds": None}
    specs = {slot: prep.store.feature(key).spec for slot, key in prep.keys.items()}
    records = run_records(stats, specs)
    try:
        append_store_rates(prep.store.url, records)
    except (OSError, ValueError, StoreError) as e:  # the features are committed; a lost figure is not worth failing for
        log.warning("rates not recorded in the store %s: %s", prep.store.url, e)
    loads = [
        UnitLoad(
            s["clips"],
            s["seconds"].get("decode", 0.0),
            {slot: s["seconds"].get(f"encode.{slot}", 0.0) for slot in s["slots"]},
            s["seconds"].get("write", 0.0),
        )
        for s in stats
    ]
    res = ray.cluster_resources()
    nodes = [NodeGroup("ray", 1, float(res.get("CPU", 1.0)), float(res.get("GPU", 0.0)))]
    opts = Options(cfg.actors, prep.gpus_per_actor, cfg.decode_cpus, cfg.write_tasks)
    startup = startup_residual(wall, loads, nodes, opts, gpu=prep.gpus_per_actor > 0)
    return {"rates": records, "startup_seconds": round(startup, 2), "ray_resources": nodes[0].to_dict()}


def run_extract(cfg: ExtractConfig, console: Console | None = None, manifest: Manifest | None = None) -> dict[str, Any]:
    """Extract every pending unit and return the summary.

    Args:
        cfg: the job's options.
        console: where the progress bar goes and whose engine log moves into the
            Ray session's folder once Ray is up; default: no bar, nothing moved.
        manifest: these samples instead of the config's dataset (``featstore calibrate``).
    """
    t0 = time.perf_counter()
    for url in (cfg.store, cfg.export_wds):  # a missing bucket or refused credentials: say so before Ray starts
        problem = probe_bucket(url) if url else None
        if problem:
            raise StorageAccessError(problem)
    decode = decode_config(cfg)
    ctx = ray.init(address=cfg.ray_address, ignore_reinit_error=True, log_to_driver=cfg.verbose)
    ray.data.DataContext.get_current().enable_progress_bars = cfg.verbose
    configure_ray_data()
    if console is not None:
        console.move_log(Path(ctx.address_info["session_dir"]) / "logs")
    prep = prepare(cfg, decode, manifest)
    works = unit_works(prep.store, prep.plan)
    for line in prep.plan.lines():
        log.info("plan: %s", line)
    log.info(
        "%d pending unit(s) of %d samples; encoders %s, %d actor(s) each, %s GPU(s) per actor",
        len(works),
        cfg.unit_size,
        list(prep.keys),
        cfg.actors,
        prep.gpus_per_actor,
    )
    counter = ProgressCounter.remote() if console is not None and works else None
    sink = StoreSink(prep.store.url, prep.keys, counter)
    if works:
        with (
            ProgressBar(counter, len(works), sum(len(w.samples) for w in works), console.out)
            if counter
            else contextlib.nullcontext()
        ):
            commit_units(build_dataset(cfg, decode, prep, works), sink, cfg)
    summary = summarize(FeatureStore.open(prep.store.url), prep, sink.stats, time.perf_counter() - t0)
    summary["plan"] = plan_summary(prep.plan)
    summary.update(record_rates(cfg, prep, sink.stats, summary["wall_seconds"]))
    if cfg.export_wds or (cfg.export_wds is None and not cfg.dataset):
        from featstore.shards.export import export_wds

        out = cfg.export_wds or str(Path(cfg.work_dir) / "shards")
        summary["shards"] = {"out": out, "samples": export_wds(FeatureStore.open(prep.store.url), out).total_samples}
    if console is not None and console.log_path is not None:
        summary["engine_log"] = str(console.log_path)
    if cfg.summary_json:
        Path(cfg.summary_json).write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    return summary
