"""The ``featstore`` command: inspect, verify and list failures of a feature store
(``plan`` and ``calibrate`` live in ``featstore.cli_plan``)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

import numpy as np

from featstore.errors import FeatstoreError
from featstore.store import FeatureStore
from featstore.store.chunks import chunk_exists
from featstore.store.repair import repair_store
from featstore.store.verify import verify_store


def _rows_written(feat) -> int:
    """Sample rows inside initialised data chunks (the last chunk may be short)."""
    data = feat.raw("data")
    chunk = data.chunks[0]
    rows = data.nchunks_initialized * chunk
    last = -(-feat.num_samples // chunk) - 1
    if rows and last >= 0 and chunk_exists(data, last):
        rows -= (last + 1) * chunk - feat.num_samples
    return rows


def store_info(store: FeatureStore) -> dict:
    """Summary of a store as plain data (what ``featstore info --json`` prints)."""
    specs = []
    for feat in store.features():
        counts = feat.counts()
        data = feat.raw("data")
        stored = feat.nbytes_stored()
        raw = _rows_written(feat) * int(np.prod(feat.spec.shape)) * data.dtype.itemsize
        specs.append(
            {
                "name": feat.spec.name,
                "id": feat.spec.id,
                "key": feat.spec.key,
                "encoder": feat.spec.encoder,
                "shape": list(feat.spec.shape),
                "dtype": feat.spec.dtype,
                "unit_size": feat.unit_size,
                "chunk_size": feat.chunk_size,
                "units": feat.num_units,
                "codec": feat.codec,
                **counts,
                "bytes_stored": stored,
                "compression_ratio": round(raw / stored, 3) if stored else None,
                "spec": feat.spec.to_dict(),
            }
        )
    return {"store": store.url, "samples": store.num_samples, "specs": specs}


def _print_info(info: dict) -> None:
    print(f"store   {info['store']}")
    print(f"samples {info['samples']}")
    cols = ("name", "id", "shape", "dtype", "committed", "failed", "pending", "bytes_stored", "compression_ratio")
    rows = [[str(s[c] if c != "shape" else "x".join(map(str, s[c]))) for c in cols] for s in info["specs"]]
    heads = ["name", "id", "shape", "dtype", "committed", "failed", "pending", "stored", "ratio"]
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(heads)]
    print("  ".join(h.ljust(w) for h, w in zip(heads, widths)))
    for r in rows:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths)))
    if not rows:
        print("(no specs yet)")


def cmd_info(args: argparse.Namespace) -> int:
    info = store_info(FeatureStore.open(args.store))
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        _print_info(info)
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    store = FeatureStore.open(args.store, "r+" if args.repair else "r")
    report = verify_store(store)
    _print_report(report)
    if not args.repair or report.ok:
        return 0 if report.ok else 1
    for w in repair_store(store, report):
        dropped = f"; dropped unreadable chunk(s) {list(w.dropped)}" if w.dropped else ""
        print(
            f"withdrew spec {w.bad.spec} unit {w.bad.unit} (samples {w.samples[0]}-{w.samples[1] - 1}, now pending): "
            f"{'; '.join(w.bad.reasons)}{dropped}"
        )
    after = verify_store(FeatureStore.open(args.store))
    print(f"repair: withdrew {len(report.bad_units)} unit(s); run extraction again to recompute them")
    if not after.ok:
        _print_report(after)
    return 0 if after.ok else 1


def _print_report(report) -> None:
    for note in report.notes:
        print(f"note: {note}")
    for problem in report.problems:
        print(f"PROBLEM: {problem}", file=sys.stderr)
    verdict = "ok" if report.ok else f"{len(report.problems)} problem(s)"
    print(f"{verdict}: checked {report.checked_units} units, {report.checked_samples} committed samples")


def cmd_failures(args: argparse.Namespace) -> int:
    store = FeatureStore.open(args.store)
    rows = [{"spec": f.spec.name, "spec_id": f.spec.id, **r} for f in store.features() for r in f.failures()]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for r in rows:
        print(f"{r['sample_id']}\t{r['spec']}\t{r['stage']}\t{r['reason']}")
    print(f"{len(rows)} failure record(s)", file=sys.stderr)
    return 0


def cmd_export_wds(args: argparse.Namespace) -> int:
    from featstore.shards.export import export_wds

    specs = [s for s in args.specs.split(",") if s] if args.specs else None
    maxcount = None if args.maxsize is not None and args.maxcount is None else (args.maxcount or 1000)
    summary = export_wds(
        FeatureStore.open(args.store),
        args.out,
        specs=specs,
        maxcount=maxcount,
        maxsize_mb=args.maxsize,
        split=args.split,
        prefix=args.prefix,
        progress=print,
    )
    for row in summary.excluded:
        print(f"left out {row['sample_id']}: {row['reason']}")
    print(
        f"exported {summary.total_samples} samples in {len(summary.shards)} shard(s) to {args.out}; "
        f"{len(summary.excluded)} left out; index {args.out.rstrip('/')}/shards.json"
    )
    return 0


def cmd_gc(args: argparse.Namespace) -> int:
    from featstore.store.gc import gc_store

    ids = None
    if args.dataset:
        from featstore.manifest import load_manifest

        manifest = load_manifest(args.dataset, args.format, annotation=args.annotation, hash_media=False)
        ids = [s.sample_id for s in manifest.samples]
    keep = [k for k in args.keep.split(",") if k] if args.keep is not None else None
    try:
        report = gc_store(args.store, keep=keep, dataset_ids=ids, dry_run=args.dry_run)
    except KeyError as e:
        print(f"featstore gc: {e.args[0] if e.args else e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
        return 0
    verb = "would remove" if args.dry_run else "removed"
    for line in report.recovered:
        print(f"interrupted gc: {line}")
    for key in report.removed_specs:
        print(f"{verb} spec {key}")
    print(
        f"{verb} {len(report.removed_samples)} sample(s) that left the dataset "
        f"({report.samples_before} -> {report.samples_after}); kept specs {', '.join(report.kept_specs) or 'none'}"
    )
    about = "about " if args.dry_run else ""
    print(
        f"{'would free' if args.dry_run else 'freed'} {about}{report.bytes_freed} bytes ({report.bytes_before} -> {report.bytes_after})"
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="featstore",
        description="Inspect a featstore: a Zarr v3 cache of frozen-encoder features for emotion LLMs.",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    store_help = (
        "store location: a local path or an fsspec URL (s3://bucket/store.zarr; endpoint and credentials "
        "from AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION or AWS_PROFILE)"
    )

    info = sub.add_parser("info", help="samples, and per spec: id, shape, dtype, committed/failed/pending, size")
    info.add_argument("store", help=store_help)
    info.add_argument("--json", action="store_true", help="print machine-readable JSON instead of a table")
    info.set_defaults(func=cmd_info)

    verify = sub.add_parser("verify", help="read back every committed unit; exit 1 naming any missing or corrupt chunk")
    verify.add_argument("store", help=store_help)
    verify.add_argument(
        "--repair",
        action="store_true",
        help="withdraw the commit of every broken unit (its samples become pending, so the next "
        "extraction run recomputes them) and print what was withdrawn and why",
    )
    verify.set_defaults(func=cmd_verify)

    failures = sub.add_parser("failures", help="list failure records: sample, spec, stage, reason")
    failures.add_argument("store", help=store_help)
    failures.add_argument("--json", action="store_true", help="print a JSON list instead of tab-separated lines")
    failures.set_defaults(func=cmd_failures)
    export = sub.add_parser(
        "export-wds",
        help="write WebDataset tar shards + shards.json from committed samples",
        description="Write OUT/{prefix}-%06d.tar shards (one SPEC.npy per feature and a .json per sample) "
        "and OUT/shards.json. Only samples committed for every chosen spec go in; the rest are "
        "listed with why. The same store gives byte-identical shards.",
    )
    export.add_argument("store", help=store_help)
    export.add_argument(
        "out", help="output folder: a local path or an fsspec URL (s3://bucket/shards; the bucket must exist)"
    )
    export.add_argument("--specs", help="comma-separated spec names (or ids) to include (default: all)")
    size = export.add_mutually_exclusive_group()
    size.add_argument("--maxcount", type=int, help="at most N samples a shard (default 1000)")
    size.add_argument("--maxsize", type=float, metavar="MB", help="at most about MB megabytes a shard")
    export.add_argument(
        "--split",
        choices=("train", "val", "test"),
        help="only this split: the sample's 'split' annotation, else a stable hash of its id (90/5/5)",
    )
    export.add_argument("--prefix", help="shard name prefix (default: the split, else 'shard')")
    export.set_defaults(func=cmd_export_wds)

    from featstore.cli_plan import add_plan_commands

    add_plan_commands(sub, store_help)  # plan (--estimate) and calibrate

    from featstore.cli_original import add_original_commands

    add_original_commands(sub, store_help)  # import-npy, export-npy, compare, convert-checkpoint

    gc = sub.add_parser(
        "gc",
        help="remove spec groups not kept and rows of samples that left the dataset; report bytes freed",
        description="Remove every spec not named in --keep and, with --dataset, the rows of samples the "
        "dataset no longer has (the index is compacted: the kept specs are copied beside the store and "
        "switched in by a rename). Kept features of samples that stay keep their exact bytes. Safe to "
        "kill at any point: run it again to finish (or discard) what was interrupted. Local stores only; "
        "run it while no extraction job writes the store.",
    )
    gc.add_argument("store", help="store location: a local path")
    gc.add_argument(
        "--keep",
        metavar="SPEC,...",
        help="comma-separated specs to keep (names, ids or name-id keys); every other spec is removed "
        "(default: keep every spec)",
    )
    gc.add_argument(
        "--dataset",
        help="dataset root: store samples not in its manifest are removed (default: remove no sample; "
        "the store does not record which samples left)",
    )
    from featstore.extract.config import FORMATS as JOB_FORMATS

    gc.add_argument("--format", default="auto", choices=JOB_FORMATS, help="annotation format of --dataset")
    gc.add_argument("--annotation", help="annotation file of --dataset when detection is ambiguous")
    gc.add_argument("--dry-run", action="store_true", help="say what would be removed and about how many bytes freed")
    gc.add_argument("--json", action="store_true", help="print the report as JSON")
    gc.set_defaults(func=cmd_gc)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``featstore`` console script."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except FeatstoreError as e:
        print(f"featstore {args.command}: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
