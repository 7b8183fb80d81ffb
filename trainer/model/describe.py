"""Describe the model of a preset without loading weights: parameter counts and feature tokens.

    python -m trainer.model.describe --preset emotion-llama [--json]
    python -m trainer.model.describe --preset tiny
    python -m trainer.model.describe --memory --batch-size 1 --dtype bf16 [--tokens 400] [--grad-checkpointing]
    python -m trainer.model.describe --estimate-epoch --samples 28618 --gpu a10g [--mfu 0.35] [--store STORE]

The model is built on the meta device (shapes only), so the 7B preset costs
nothing to describe. Real size: 33,554,432 LoRA and 41,439,232 projector
parameters, 260 feature tokens.
"""

from __future__ import annotations

import argparse
import json
from typing import Any, Sequence

from trainer.model.emotion_llama import LoraSettings, count_parameters
from trainer.model.meta import PRESET_SHAPES, meta_model

__all__ = ["describe", "main"]


def describe(preset: str, lora: LoraSettings = LoraSettings()) -> dict[str, Any]:
    """Counts of the preset's model: LoRA, projector, frozen parameters, and feature tokens."""
    model = meta_model(preset, lora)
    config = model.llm.get_base_model().config
    return {
        "preset": preset,
        "llm": {
            "hidden_size": config.hidden_size,
            "layers": config.num_hidden_layers,
            "heads": config.num_attention_heads,
            "vocab_size": config.vocab_size,
        },
        "lora": {"r": lora.r, "alpha": lora.alpha, "dropout": lora.dropout, "targets": list(lora.targets)},
        "feature_shapes": {k: list(v) for k, v in PRESET_SHAPES[preset].items()},
        "feature_tokens": model.projector.num_tokens,
        "video_tokens": model.num_video_tokens,
        "parameters": count_parameters(model),
    }


def _text(d: dict[str, Any]) -> str:
    p = d["parameters"]
    llm = d["llm"]
    return "\n".join(
        [
            f"preset {d['preset']}: LLaMA hidden {llm['hidden_size']}, {llm['layers']} layers, {llm['heads']} heads, "
            f"vocabulary {llm['vocab_size']}",
            f"  trainable LoRA parameters   {p['lora']:>15,}  (r={d['lora']['r']}, alpha={d['lora']['alpha']}, "
            f"{', '.join(d['lora']['targets'])})",
            f"  projector parameters        {p['projector']:>15,}",
            f"  frozen LLM parameters       {p['frozen']:>15,}",
            f"  feature tokens              {d['feature_tokens']:>15}  ({d['video_tokens']} at <VideoHere>, "
            f"{d['feature_tokens'] - d['video_tokens']} at <FeatureHere>)",
        ]
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: print the description as text or JSON."""
    parser = argparse.ArgumentParser(prog="python -m trainer.model.describe", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--preset", choices=sorted(PRESET_SHAPES), default="emotion-llama", help="model preset (default: emotion-llama)"
    )
    parser.add_argument("--lora-r", type=int, default=64, help="LoRA rank (default: 64)")
    parser.add_argument(
        "--memory",
        action="store_true",
        help="estimate the peak GPU memory of one training worker (trainer.model.memory: weights, optimizer state, "
        "activations measured at real width on this CPU, logits) and the largest batch on 24, 40 and 80 GB cards",
    )
    parser.add_argument("--batch-size", type=int, default=1, help="--memory: examples a micro-batch (default: 1)")
    parser.add_argument(
        "--tokens",
        type=int,
        default=400,
        help="--memory and --estimate-epoch: sequence length: 260 feature tokens + prompt + answer (default: 400; "
        "up to about 1344 for reasoning answers at max_txt_len 1024)",
    )
    parser.add_argument(
        "--dtype", choices=("bf16", "fp32"), default="bf16", help="--memory: the frozen LLaMA's dtype (default: bf16)"
    )
    parser.add_argument(
        "--grad-checkpointing", action="store_true", help="--memory: with the trainer's --grad-checkpointing"
    )
    _estimate_options(parser)
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    args = parser.parse_args(argv)
    lora = LoraSettings(r=args.lora_r)
    if args.estimate_epoch:
        return _estimate(args, parser)
    if args.memory:
        from trainer.model.memory import CARDS_GB, estimate_memory, largest_batch, memory_text

        try:
            d = estimate_memory(args.preset, args.batch_size, args.tokens, args.dtype, args.grad_checkpointing, lora)
        except ValueError as e:
            parser.error(str(e))
        d["largest_batch"] = (
            {
                f"{gb} GB": {
                    ck: largest_batch(args.tokens, gb, ck == "checkpointing", args.preset, lora)
                    for ck in ("no checkpointing", "checkpointing")
                }
                for gb in CARDS_GB
            }
            if args.dtype == "bf16"
            else {}
        )
        if args.json:
            print(json.dumps(d, indent=2))
        else:
            print(memory_text(d))
            for card, fit in d["largest_batch"].items():
                print(
                    f"  largest batch on a {card} card at {args.tokens} tokens: "
                    + ", ".join(f"{k} {v}" for k, v in fit.items())
                )
        return 0
    d = describe(args.preset, lora)
    print(json.dumps(d, indent=2) if args.json else _text(d))
    return 0


def _estimate_options(parser: argparse.ArgumentParser) -> None:
    from trainer.model.estimate import DEFAULT_MFU, GPU_ALIASES

    parser.add_argument(
        "--estimate-epoch",
        action="store_true",
        help="estimate an epoch's GPU time and cost, cached against online, from FLOPs at real size "
        "(--tokens is the sequence length) and an assumed MFU, beside measured encoder rates if any",
    )
    options = (  # flag, type, default, help (all for --estimate-epoch)
        ("--samples", int, 28618, "samples an epoch (default: MERR's coarse set)"),
        ("--gpu", str, "a10g", f"the card: {sorted(GPU_ALIASES)} or its full name"),
        ("--mfu", float, DEFAULT_MFU, "assumed model FLOPs utilisation"),
        ("--peak-tflops", float, None, "the card's dense fp16/bf16 peak (default: the card table's)"),
        ("--price", float, None, "USD per GPU-hour (default: featstore's on-demand table)"),
        ("--epochs", int, 30, "epochs of a run"),
        ("--rates", str, None, "a rates file from `featstore calibrate` on that card"),
        ("--store", str, None, "a store whose extraction jobs recorded rates beside it"),
    )
    for flag, kind, default, text in options:
        shown = "" if default is None or "default" in text else f" (default: {default})"
        parser.add_argument(flag, type=kind, default=default, help=f"--estimate-epoch: {text}{shown}")


def _estimate(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from featstore.extract.cluster import load_prices
    from featstore.extract.rates import load_rates_file, store_rates
    from trainer.model.estimate import estimate_epoch, estimate_text

    try:
        rates = [*(load_rates_file(args.rates) if args.rates else []), *(store_rates(args.store) if args.store else [])]
        d = estimate_epoch(
            args.samples,
            args.gpu,
            mfu=args.mfu,
            peak_tflops=args.peak_tflops,
            usd_per_gpu_hour=args.price,
            prices=load_prices(),
            epochs=args.epochs,
            seq_len=args.tokens,
            rates=rates,
        )
    except (OSError, ValueError) as e:
        parser.error(str(e))
    print(json.dumps(d, indent=2) if args.json else estimate_text(d))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
