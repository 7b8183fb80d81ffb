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


def cmd_import_npy(args: argparse.Namespace) -> int:
    from featstore.manifest import load_manifest
    from featstore.npy import import_npy, parse_folder_args

    try:
        folders = parse_folder_args(args.folder)
    except ValueError as e:
        print(f"featstore import-npy: {e}", file=sys.stderr)
        return 2
    manifest = load_manifest(args.dataset, args.format, annotation=args.annotation)
    store = FeatureStore.open_or_create(args.store)
    store.add_manifest(manifest)
    reports = import_npy(store, args.dataset, folders, unit_size=args.unit_size)
    if args.json:
        print(json.dumps([r.to_dict() for r in reports], indent=2))
        return 0
    for p in manifest.problems:
        print(f"not in store: {p.sample_id}: {p.error}")
    for r in reports:
        for f in r.failures:
            print(f"failed {f['sample_id']}: {f['reason']}")
        print(f"{r.folder} -> spec {r.spec.key}: {r.imported} imported, {len(r.failures)} failure record(s)")
    return 0


def cmd_export_npy(args: argparse.Namespace) -> int:
    from featstore.npy import export_npy

    try:
        report = export_npy(FeatureStore.open(args.store), args.out, args.spec or None, shape=args.shape)
    except (KeyError, ValueError) as e:
        print(f"featstore export-npy: {e.args[0] if e.args else e}", file=sys.stderr)
        return 2
    for row in report.left_out:
        print(f"left out {row['sample_id']} ({row['spec']}): {row['reason']}")
    for folder, info in report.folders.items():
        print(f"{args.out.rstrip('/')}/{folder}: {info['files']} files of {info['shape']} from spec {info['spec']}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from featstore.compare import compare_specs

    try:
        report = compare_specs(FeatureStore.open(args.store), args.spec_a, args.spec_b, args.min_cosine)
    except (KeyError, ValueError) as e:
        print(f"featstore compare: {e.args[0] if e.args else e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({**report.summary(), "samples": report.per_sample()}, indent=2))
    else:
        print("\n".join(report.lines()))
    return 0 if report.ok else 1


def cmd_convert_checkpoint(args: argparse.Namespace) -> int:
    from featstore.encoders.original import save_converted
    from featstore.encoders.presets import ENCODERS

    classes = {"global": "Blip2VisionModel", "local": "ViTMAEModel", "temporal": "VideoMAEModel"}
    import transformers

    folder = save_converted(args.slot, getattr(transformers, classes[args.slot]), args.file, args.out)
    enc = ENCODERS[args.slot](str(folder), device="cpu", deterministic=False)
    print(f"{args.slot}: {args.file} -> {folder} ({type(enc.model).__name__}, weights {enc.spec.weights[:23]}...)")
    print(f"  use it as: --checkpoint {args.slot}={folder}  (the same spec id as --checkpoint {args.slot}={args.file})")
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

    imp = sub.add_parser(
        "import-npy",
        help="import original Emotion-LLaMA feature folders (one .npy per clip) as imported specs",
        description="Read DATASET/FOLDER/<sample_id>.npy for every sample of the dataset into a spec named "
        "SPEC_NAME whose provenance says it was imported (encoder and preprocessing unknown; folder name "
        "and file hashes recorded). Files are never unpickled; each must be float16/float32 of shape [D] "
        "or [1, D]. A missing or malformed file gives that sample a failure record (see `featstore failures`).",
    )
    imp.add_argument("store", help=store_help + " (created if missing)")
    imp.add_argument("--dataset", required=True, help="dataset root folder; the feature folders are inside it")
    imp.add_argument(
        "--folder",
        action="append",
        default=[],
        required=True,
        metavar="FOLDER=SPEC_NAME",
        help="a feature folder relative to the dataset root and the spec name it becomes, e.g. "
        "mae_340_UTT=local, maeV_399_UTT=temporal, HL-UTT=audio (repeatable)",
    )
    from featstore.extract.config import FORMATS

    imp.add_argument("--format", default="auto", choices=FORMATS, help="annotation format (default: auto)")
    imp.add_argument("--annotation", help="annotation file (relative to the dataset root) when detection is ambiguous")
    imp.add_argument("--unit-size", type=int, help="samples per unit of the new specs (default: from the shape)")
    imp.add_argument("--json", action="store_true", help="print one JSON report per folder")
    imp.set_defaults(func=cmd_import_npy)

    exp = sub.add_parser(
        "export-npy",
        help="write the original Emotion-LLaMA layout (OUT/mae_340_UTT/<id>.npy, ...) from committed samples",
        description="Write OUT/<folder>/<sample_id>.npy, the layout the original training code reads "
        "beside its annotation file (FeatureFaceDataset.get in first_face.py): local -> mae_340_UTT, "
        "temporal -> maeV_399_UTT, audio -> HL-UTT. Only committed samples are written; the others are "
        "listed with why. Values and dtype are the stored ones.",
    )
    exp.add_argument("store", help=store_help)
    exp.add_argument("out", help="output folder (a local path)")
    exp.add_argument(
        "--spec",
        action="append",
        default=[],
        metavar="SPEC[=FOLDER]",
        help="a spec (name, id or name-id) to export, optionally into FOLDER (repeatable; default: the "
        "store's local, temporal and audio specs into their original folders)",
    )
    exp.add_argument(
        "--shape",
        choices=("as-imported", "flat", "row"),
        default="as-imported",
        help="array shape of each file: flat [D], row [1, D], or as-imported (the files' shape when the "
        "spec was imported, else [D]) (default: as-imported)",
    )
    exp.set_defaults(func=cmd_export_npy)

    compare = sub.add_parser(
        "compare",
        help="per-sample cosine and max abs difference between two specs; exit 1 below --min-cosine",
        description="Compare two specs of the same feature shape (e.g. the original's imported mae_340_UTT "
        "features against our extraction) on every sample committed in both: cosine similarity and largest "
        "absolute difference per sample (float64, flattened feature), their median, 5th percentile and the "
        "worst samples. Exit 0 when every compared sample reaches --min-cosine, 1 when one does not or no "
        "sample is committed in both, 2 on a bad spec name or shapes that differ.",
    )
    compare.add_argument("store", help=store_help)
    compare.add_argument("spec_a", metavar="SPEC_A", help="a spec name, id or name-id key (featstore info)")
    compare.add_argument("spec_b", metavar="SPEC_B", help="the other spec, of the same feature shape")
    compare.add_argument(
        "--min-cosine", type=float, default=0.99, help="lowest cosine similarity a sample may have (default 0.99)"
    )
    compare.add_argument("--json", action="store_true", help="print the summary and every sample's figures as JSON")
    compare.set_defaults(func=cmd_compare)

    conv = sub.add_parser(
        "convert-checkpoint",
        help="convert an original encoder .pth (eva_vit_g.pth, the MAE / VideoMAE checkpoints) to a transformers folder",
        description="Convert one of the original Emotion-LLaMA encoder files into the transformers folder "
        "our encoder loads (save_pretrained), with a featstore_original.json marker so the folder gets the "
        "original's preprocessing as the file does: global = LAVIS eva_vit_g.pth (Blip2VisionModel at 448 px, "
        "block 40 dropped, pos_embed interpolated as the original), local = the MAE ViT checkpoint of "
        "mae_340_UTT (ViTMAEModel), temporal = the VideoMAE checkpoint of maeV_399_UTT (VideoMAEModel). "
        "Files are read with torch.load(weights_only=True). --checkpoint SLOT=FILE.pth does the same "
        "conversion at load time; the folder and the file give the same spec id.",
    )
    conv.add_argument("slot", choices=("global", "local", "temporal"), help="which encoder the file is")
    conv.add_argument("file", help="the original .pth")
    conv.add_argument("out", help="folder to write (config.json, model.safetensors, featstore_original.json)")
    conv.set_defaults(func=cmd_convert_checkpoint)

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
