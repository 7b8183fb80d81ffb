"""``featstore`` commands for the original Emotion-LLaMA files: its feature folders (``import-npy``,
``export-npy``), a comparison of two specs (``compare``, e.g. imported against extracted), and its
encoder checkpoints turned into transformers folders (``convert-checkpoint``)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from featstore.store import FeatureStore

__all__ = ["add_original_commands"]


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


def add_original_commands(sub: Any, store_help: str) -> None:
    """Add the four commands to the ``featstore`` parser's subparsers ``sub``."""
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
