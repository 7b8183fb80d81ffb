"""The ``featstore plan`` (with ``--estimate``) and ``featstore calibrate`` commands:
what an extraction run will compute, what it will cost, and the rates the cost rests on."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from featstore.errors import StoreError
from featstore.extract.config import SAVED_FIELDS
from featstore.store import FeatureStore

__all__ = ["CALIBRATE_OPTIONS", "ESTIMATE_OPTIONS", "PLAN_OPTIONS", "add_plan_commands", "cmd_calibrate", "cmd_plan"]

# ExtractConfig options that decide what a run computes (the spec ids and the samples): those
# the store saves, and which samples and on what device.
PLAN_OPTIONS = (*SAVED_FIELDS, "limit", "retry_failed", "gpus_per_actor")
# ExtractConfig options that decide how fast it runs (used by --estimate only).
ESTIMATE_OPTIONS = ("actors", "decode_cpus", "write_tasks")
# The job's options a calibration takes: all but the outputs and the sample selection
# (it writes a scratch store, one clip a unit, from the first usable clips; --unit-size
# is the size of the unit whose write it times).
CALIBRATE_OPTIONS = (
    "dataset",
    "work_dir",
    *(o for o in PLAN_OPTIONS if o not in ("limit", "retry_failed")),
    *ESTIMATE_OPTIONS,
    "cpus_per_actor",
    "write_cpus",
    "verbose",
    "ray_address",
)


def _job_config(args: argparse.Namespace, names: tuple[str, ...], **extra: Any) -> Any:
    from featstore.extract.config import ExtractConfig

    return ExtractConfig(**{k: getattr(args, k) for k in names}, **extra)


def cmd_plan(args: argparse.Namespace) -> int:
    from featstore.extract.plan import plan_extraction
    from featstore.extract.run import job_manifest
    from featstore.extract.specs import planned_specs

    try:
        cfg = _job_config(args, PLAN_OPTIONS + ESTIMATE_OPTIONS, dataset=args.dataset, store=args.store)
        overrides = _price_args(args) if args.estimate else None
        nodes = _cluster(args) if args.estimate and args.cluster else None
    except ValueError as e:
        print(f"featstore plan: {e}", file=sys.stderr)
        return 2
    if nodes is not None and cfg.gpus_per_actor is None:
        # As the job does on that cluster: one GPU an actor when it has GPUs (specs for cuda), else the CPU.
        cfg.gpus_per_actor = 1.0 if sum(n.count * n.gpus for n in nodes) >= 1 else 0.0
    manifest = job_manifest(cfg)
    try:
        store: FeatureStore | None = FeatureStore.open(args.store)
    except StoreError:
        store = None  # a first run creates it
    specs = planned_specs(cfg, store)
    plan = plan_extraction(store, specs, manifest, cfg.retry_failed, cfg.unit_size, store_url=args.store)
    out = plan.to_dict()
    lines = plan.lines()
    if args.estimate:
        from featstore.extract.cluster import local_nodes

        try:  # this machine's GPUs are counted once planning has loaded torch
            est = _estimate(args, cfg, plan, nodes or local_nodes(), overrides)
        except ValueError as e:
            print(f"featstore plan: {e}", file=sys.stderr)
            return 2
        out["estimate"] = est.to_dict()
        lines += est.lines()
    print(json.dumps(out, indent=2) if args.json else "\n".join(lines))
    return 0


def _price_args(args: argparse.Namespace) -> dict[str, float]:
    from featstore.extract.cluster import parse_price_overrides

    return parse_price_overrides(args.price)


def _cluster(args: argparse.Namespace) -> list[Any]:
    """The --cluster file's nodes at full size."""
    from featstore.extract.cluster import parse_cluster

    try:
        return parse_cluster(args.cluster)
    except OSError as e:
        raise ValueError(f"--cluster {args.cluster}: {e.strerror or e}") from e


def _estimate(args: argparse.Namespace, cfg: Any, plan: Any, nodes: list, overrides: Any) -> Any:
    """The plan's estimate from the store's job rates (``<store>.rates.json``) and the --rates files."""
    from featstore.extract.cluster import load_prices
    from featstore.extract.estimate import estimate_plan
    from featstore.extract.rates import RateTable, load_rates_file, store_rates
    from featstore.extract.throughput import Options

    records = store_rates(args.store)
    for path in args.rates:
        try:
            records += load_rates_file(path)
        except FileNotFoundError as e:
            raise ValueError(f"--rates {path}: no such file (featstore calibrate writes one)") from e
    opts = Options(cfg.actors, cfg.gpus_per_actor, cfg.decode_cpus, cfg.write_tasks)
    return estimate_plan(plan, RateTable(records), nodes, opts, load_prices(), overrides)


def cmd_calibrate(args: argparse.Namespace) -> int:
    import logging

    from featstore.extract.calibrate import calibrate
    from featstore.extract.console import quiet_console
    from featstore.extract.summary import rates_line

    try:
        cfg = _job_config(args, CALIBRATE_OPTIONS)
    except ValueError as e:
        print(f"featstore calibrate: {e}", file=sys.stderr)
        return 2
    with quiet_console(cfg.verbose) as console:
        logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s: %(message)s")
        try:
            result = calibrate(cfg, args.clips, args.out, args.scratch, console)
        except ValueError as e:
            console.error(f"featstore calibrate: {e}")
            return 2
        s, records = result["summary"], result["records"]
        startup = next(round(r["seconds"], 2) for r in records if r["kind"] == "startup")
        rates = [r for r in records if r["kind"] != "startup"]
        console.print(
            f"calibrated on {s['clips_run']} clip(s) in {s['units_run']} unit(s), {s['wall_seconds']} s; "
            + rates_line(rates, startup, where=result["file"])
        )
        console.print(f"appended {len(records)} record(s) to {result['file']}")
    return 0


def add_plan_commands(sub: Any, store_help: str) -> None:
    """The ``plan`` and ``calibrate`` subcommands of the ``featstore`` parser."""
    from featstore.extract.config import add_config_options

    plan = sub.add_parser(
        "plan",
        help="what an extraction run would compute, per spec, and why; with --estimate, what it will cost",
        description="Say, per encoder slot, how many samples are done and how many an extraction "
        "run with the same options would compute, and why: new clip, edited clip (media hash "
        "changed), new spec id (encoder weights or a preprocessing parameter changed; the "
        "difference is named), failed and --retry-failed, or not computed yet. Spec ids are "
        "computed by loading each checkpoint on the CPU to fingerprint its weights; no "
        "encoder runs. The device type in the spec is the one the job's actors would use: "
        "cuda with --gpus-per-actor > 0, cpu with 0, else that of the store's spec of the same "
        "name, else this machine's. The extraction job runs the same planning code. "
        "--estimate adds, from measured rates (the store's, recorded by earlier jobs, and --rates "
        "files from featstore calibrate), per slot the clips, decode CPU-seconds, encoder "
        "device-seconds and bytes written, and in total the wall time on --cluster's node types "
        "(else this machine) and the dollars at on-demand prices; a rate nobody measured is named, "
        "never guessed.",
    )
    plan.add_argument("store", help=store_help + " (need not exist yet)")
    plan.add_argument("--dataset", required=True, help="dataset root folder (as jobs/extract.py --dataset)")
    add_config_options(plan, PLAN_OPTIONS)
    plan.add_argument("--json", action="store_true", help="print the plan as JSON (per spec: counts, reasons, units)")
    est = plan.add_argument_group("estimate")
    est.add_argument("--estimate", action="store_true", help="add what the run will cost, from measured rates")
    est.add_argument(
        "--cluster",
        metavar="FILE",
        help="Ray cluster launcher file (cluster.yaml): its available_node_types at max_workers; default: this machine",
    )
    est.add_argument(
        "--rates",
        metavar="FILE",
        action="append",
        default=[],
        help="rates file written by featstore calibrate, a local path or an fsspec URL (repeatable), besides "
        "the rates the extraction jobs "
        "recorded beside the store (STORE.rates.json)",
    )
    est.add_argument(
        "--price",
        metavar="TYPE=USD_PER_HOUR",
        action="append",
        default=[],
        help="price of an instance type or node type, instead of the shipped table "
        "(featstore/extract/prices.json: us-east-1 on-demand) (repeatable)",
    )
    add_config_options(est, ESTIMATE_OPTIONS)
    plan.set_defaults(func=cmd_plan)

    cal = sub.add_parser(
        "calibrate",
        help="time the decode stage and each encoder on a few clips here; save the rates for plan --estimate",
        description="Run the extraction job's pipeline (Ray, decode tasks, one actor pool per encoder, the "
        "write stage) on the first --clips usable clips of the dataset, one clip a unit, into a scratch "
        "store, and append the measured rates to --out: seconds per clip of the decode stage, of each "
        "encoder (keyed by spec id and device: cpu or the CUDA device name) and of the write stage, "
        "the run's start-up, each slot's decode timed alone, and the write of one unit of --unit-size. "
        "Take the options of the run you will "
        "estimate (they decide the spec ids), on the machine type it will run on: on a cluster, submit "
        "it as a job (ray job submit ... -- featstore calibrate ... --scratch s3://bucket/scratch.zarr "
        "--out s3://bucket/rates.json).",
    )
    cal.add_argument("--clips", type=int, default=2, help="clips to time (default: 2)")
    cal.add_argument(
        "--out",
        default="rates.json",
        help="rates file to create or append to: a local path or an fsspec URL (default: rates.json)",
    )
    cal.add_argument(
        "--scratch",
        help="scratch store location, new, that every Ray node can write (default: a temporary local folder, "
        "removed after)",
    )
    add_config_options(cal, CALIBRATE_OPTIONS)
    cal.set_defaults(func=cmd_calibrate)
