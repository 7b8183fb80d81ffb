"""Turn the original Emotion-LLaMA (or MiniGPT-v2) ``.pth`` into one of our checkpoints.

    python -m trainer.train.import_original Emotion_LLaMA.pth runs/emotion-llama \\
        --llm /models/Llama-2-7b-chat-hf --store mer2023.zarr
    python -m trainer.train.import_original minigptv2_checkpoint.pth runs/minigptv2-base --base \\
        --llm /models/Llama-2-7b-chat-hf --store merr.zarr

The folder written holds the LoRA adapter in peft's format, the projectors and
a ``state.json`` (step 0, the cache's spec ids, the config, and where the weights
came from); ``jobs/evaluate.py --checkpoint``, ``jobs/predict.py --checkpoint``
and ``jobs/train.py --init-from`` take it. It holds no optimizer state, so it
starts runs and is never resumed. The key map and its checks are in
``trainer.model.original``. The spec ids come from the cache given (``--store`` or
``--shards``, optionally pinned with ``--expect``): the features the published
projectors expect are those of the original's encoders; check yours with
``featstore compare`` before trusting a score.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from trainer.model.original import (
    FEATURE_PROJECTORS,
    OriginalCheckpointError,
    load_original_into,
    original_lora_settings,
)
from trainer.train import checkpoint as ckpt

__all__ = ["import_original", "main"]

ORIGINAL_LORA_ALPHA = 16  # minigpt_v2.py's default; the released config does not override it
ORIGINAL_LORA_DROPOUT = 0.05


def _kv(items: Sequence[str] | None) -> dict[str, str]:
    out = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        if not sep or not key or not value:
            raise ValueError(f"--expect {item!r} must be SLOT=ID")
        out[key] = value
    return out


def import_original(
    original: str | Path,
    out_dir: str | Path,
    llm: str,
    cache: str = "zarr",
    store: str = "demo_out/store.zarr",
    shards: str = "demo_out/shards",
    expect: dict[str, str] | None = None,
    base: bool = False,
    lora_alpha: int | None = None,
    seed: int = 42,
    llm_dtype: str = "bfloat16",
    tiny_dir: str | None = None,
) -> tuple[Path, dict[str, Any]]:
    """Import ``original`` into a checkpoint folder ``out_dir``.

    Args:
        original: the original ``.pth``.
        out_dir: the checkpoint folder to write (replaced if it exists).
        llm: the LLaMA the original was tuned on (a folder or hub name, or ``tiny``).
        cache, store, shards, expect: the feature cache whose spec ids and shapes the checkpoint takes.
        base: the file is MiniGPT-v2's base checkpoint: the four feature projectors stay at initialisation.
        lora_alpha: LoRA alpha (default: the file's config, else the original's 16).
        seed: seeds the initialisation of projectors the file lacks.
        llm_dtype: dtype of the frozen LLM while importing (bfloat16 halves memory; weights saved are float32).
        tiny_dir: where the tiny LLaMA is built (``llm="tiny"``).

    Returns:
        ``(folder, state)``.

    Raises:
        OriginalCheckpointError: the file does not fit (keys or shapes named).
        CacheError: the cache cannot be opened or lacks a slot.
    """
    from trainer.data.cache import open_cache
    from trainer.model.emotion_llama import LoraSettings, build_model
    from trainer.model.tiny import DEFAULT_TINY_DIR, build_tiny_llm
    from trainer.train.config import TrainConfig

    lora_file = original_lora_settings(original)
    if lora_file["r"] is None:
        raise OriginalCheckpointError(f"{original}: no LoRA matrices of one rank found")
    alpha = lora_alpha if lora_alpha is not None else int(lora_file["alpha"] or ORIGINAL_LORA_ALPHA)
    cfg = TrainConfig(
        cache=cache,
        store=str(store),
        shards=str(shards),
        expect=dict(expect or {}),
        llm=llm,
        tiny_dir=tiny_dir or DEFAULT_TINY_DIR,
        lora_r=int(lora_file["r"]),
        lora_alpha=alpha,
        lora_dropout=ORIGINAL_LORA_DROPOUT,
        lora_targets=",".join(lora_file["targets"]),
        seed=seed,
        resume="never",
    )
    _, info = open_cache(cfg.cache, cfg.source(), cfg.expect)
    llm_path = str(build_tiny_llm(cfg.tiny_dir)) if llm == "tiny" else llm
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[llm_dtype]
    torch.manual_seed(seed)
    lora = LoraSettings(cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout, cfg.lora_target_list())
    model = build_model(llm_path, info.shapes, lora, dtype)
    report = load_original_into(model, original, allow_missing=FEATURE_PROJECTORS if base else ())
    kind = "minigpt-v2 base" if base else "emotion-llama"
    state = {
        "step": 0,
        "world_size": 1,
        "spec_ids": info.spec_ids,
        "data": {"epoch": 0, "batches_in_epoch": 0, "samples_in_epoch": 0, "source": info.source},
        "config": cfg.to_dict(),
        "imported_from": {"kind": kind, **report.to_dict()},
    }
    folder = ckpt.save_checkpoint(out_dir, model, None, None, state, weights_only=True)
    return folder, state


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m trainer.train.import_original",
        description=__doc__.split("\n\n")[0] + " Reads only tensors (torch.load weights_only=True).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("original", help="the original .pth (the MiniGPT-v2 runner's {'model': ...} or a state dict)")
    p.add_argument("out_dir", help="the checkpoint folder to write (replaced if it exists)")
    p.add_argument(
        "--llm",
        required=True,
        help="the LLaMA the file was tuned on, a folder or hub name for from_pretrained "
        "(Llama-2-7b-chat-hf for Emotion-LLaMA), or 'tiny' (the built-in tiny LLaMA)",
    )
    p.add_argument("--cache", default="zarr", choices=("zarr", "shards"), help="where the spec ids come from")
    p.add_argument(
        "--store", default="demo_out/store.zarr", help="feature store, for --cache zarr (default: %(default)s)"
    )
    p.add_argument(
        "--shards", default="demo_out/shards", help="shard folder, for --cache shards (default: %(default)s)"
    )
    p.add_argument(
        "--expect",
        action="append",
        metavar="SLOT=ID",
        help="the spec id a slot must have (repeatable; needed when the store holds several specs of a slot)",
    )
    p.add_argument(
        "--base",
        action="store_true",
        help="the file is MiniGPT-v2's minigptv2_checkpoint.pth: its llama_proj and LoRA are loaded, the four "
        "feature projectors (cls_tk_llama_proj, feats_llama_proj1-3) keep their initialisation and are reported",
    )
    p.add_argument(
        "--lora-alpha", type=int, help=f"LoRA alpha (default: the file's config, else {ORIGINAL_LORA_ALPHA})"
    )
    p.add_argument("--seed", type=int, default=42, help="seed of projectors left at initialisation (default: 42)")
    p.add_argument(
        "--llm-dtype",
        default="bfloat16",
        choices=("bfloat16", "float32"),
        help="dtype of the frozen LLM while importing (default: bfloat16, 13.5 GB for 7B; the saved weights are float32)",
    )
    p.add_argument("--tiny-dir", help="where the tiny LLaMA is built (--llm tiny)")
    p.add_argument("--json", action="store_true", help="print the import report as JSON")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: import, print what was loaded and how to use the folder."""
    from trainer.data.cache import CacheError

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        expect = _kv(args.expect)
        folder, state = import_original(
            args.original,
            args.out_dir,
            args.llm,
            cache=args.cache,
            store=args.store,
            shards=args.shards,
            expect=expect,
            base=args.base,
            lora_alpha=args.lora_alpha,
            seed=args.seed,
            llm_dtype=args.llm_dtype,
            tiny_dir=args.tiny_dir,
        )
    except (OriginalCheckpointError, CacheError, FileNotFoundError, ValueError) as e:
        print(f"import_original: {e}", file=sys.stderr)
        return 2
    imp = state["imported_from"]
    if args.json:
        print(json.dumps({"checkpoint": str(folder), "spec_ids": state["spec_ids"], **imp}, indent=2))
        return 0
    print(f"imported {imp['kind']} checkpoint {imp['path']} (sha256 {imp['sha256'][:16]}...)")
    print(f"  projectors loaded: {', '.join(imp['projectors'])}")
    if imp["left_at_init"]:
        print(f"  left at initialisation (not in the file): {', '.join(imp['left_at_init'])}")
    print(f"  LoRA: {imp['lora_tensors']} tensors, rank {imp['lora_rank']}, {imp['lora_naming']}")
    print(f"  spec ids: {state['spec_ids']}")
    print(f"checkpoint {folder}")
    print(f"  evaluate:  python jobs/evaluate.py --checkpoint {folder} --store STORE --labels mer2023")
    print(f"  fine-tune: python jobs/train.py --init-from {folder} ...")
    return 0


if __name__ == "__main__":
    sys.exit(main())
