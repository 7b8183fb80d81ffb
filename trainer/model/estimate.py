"""What a training epoch will cost, from the cache and online: GPU time and dollars from FLOPs at a stated MFU,
and beside them the encoder and decode seconds that extraction runs measured, where there are any.

The FLOPs are counted at real size on the meta device (``trainer.model.flops``): the
step of the projectors and LoRA LLaMA-2-7B (forward and backward), and the four frozen
encoders' forward pass that an online step adds. Time = FLOPs / (peak x MFU). The
peak is the card's dense fp16/bf16 tensor-core figure from its data sheet
(``GPU_PEAK_TFLOPS``, or ``--peak-tflops``); the MFU is a stated assumption, not a
measurement. The measured rates are seconds per clip that ``featstore calibrate`` or
an extraction job recorded on that device (``featstore.extract.rates``): they replace
the FLOP figure for the encoders and add the decoding an online step needs.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["DEFAULT_MFU", "GPU_PEAK_TFLOPS", "estimate_epoch", "estimate_text", "gpu_price", "resolve_gpu"]

# Dense fp16/bf16 tensor-core peak, TFLOP/s, from the vendor data sheets (no sparsity),
# keyed by the name torch.cuda.get_device_name gives (the device key of measured rates).
GPU_PEAK_TFLOPS = {
    "Tesla T4": 65.0,
    "Tesla V100-SXM2-16GB": 125.0,
    "NVIDIA A10G": 70.0,  # AWS's A10 variant: fewer tensor FLOPs than the A10's 125 (Baseten's A10 vs A10G table)
    "NVIDIA L4": 121.0,
    "NVIDIA A100-SXM4-80GB": 312.0,
    "NVIDIA H100 80GB HBM3": 989.0,
    "NVIDIA H200": 989.0,
}
GPU_ALIASES = {
    "t4": "Tesla T4",
    "v100": "Tesla V100-SXM2-16GB",
    "a10g": "NVIDIA A10G",
    "l4": "NVIDIA L4",
    "a100": "NVIDIA A100-SXM4-80GB",
    "h100": "NVIDIA H100 80GB HBM3",
    "h200": "NVIDIA H200",
}
# Model FLOPs utilisation assumed for both the training step and the encoders: LoRA
# fine-tuning of a 7B model in bf16 commonly reaches 30-45% on one card; 0.35 is a
# middle figure, stated with every estimate and overridable (--mfu).
DEFAULT_MFU = 0.35
HOUR = 3600.0


def resolve_gpu(name: str) -> str:
    """The full device name for ``name`` (an alias such as ``a10g``, or a full name).

    Raises:
        ValueError: naming ``name`` and the known cards.
    """
    if name in GPU_PEAK_TFLOPS:
        return name
    full = GPU_ALIASES.get(name.lower())
    if full is None:
        known = sorted(GPU_ALIASES) + sorted(GPU_PEAK_TFLOPS)
        raise ValueError(f"unknown GPU {name!r}; known: {known} (or give --peak-tflops for another card)")
    return full


def gpu_price(gpu: str, prices: Mapping[str, Any]) -> tuple[float, str] | None:
    """USD per GPU-hour of the cheapest one-GPU instance with ``gpu`` in featstore's price
    table, and that instance's name; None when the table has none."""
    found = [
        (float(v["usd_per_hour"]), name)
        for name, v in prices.get("instances", {}).items()
        if v.get("gpus") == 1 and v.get("gpu") == gpu
    ]
    return min(found) if found else None


def _measured(records: Iterable[Mapping[str, Any]], gpu: str) -> dict[str, Any]:
    """Seconds per clip measured on ``gpu`` for each encoder slot (pooled over its records),
    and decoding on the CPU (the largest set of slots' decode rate)."""
    enc: dict[str, list[float]] = {}
    decode: tuple[int, float] | None = None
    for r in records:
        if r.get("kind") == "encode" and r.get("device") == gpu and r.get("clips"):
            acc = enc.setdefault(str(r.get("slot", r["key"])), [0.0, 0.0])
            acc[0] += float(r["seconds"])
            acc[1] += float(r["clips"])
        elif r.get("kind") == "decode" and r.get("clips"):
            slots = len(r.get("slots", ()))
            if decode is None or slots > decode[0]:
                decode = (slots, float(r["seconds"]) / float(r["clips"]))
    return {
        "encode_s_per_clip": {s: a / c for s, (a, c) in sorted(enc.items()) if c},
        "decode_s_per_clip": None if decode is None else decode[1],
    }


def estimate_epoch(
    samples: int,
    gpu: str,
    *,
    mfu: float = DEFAULT_MFU,
    peak_tflops: float | None = None,
    usd_per_gpu_hour: float | None = None,
    prices: Mapping[str, Any] | None = None,
    epochs: int = 30,
    seq_len: int = 400,
    local_frames: int = 16,
    audio_seconds: float = 5.0,
    rates: Iterable[Mapping[str, Any]] = (),
    figures: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """One epoch of ``samples`` on one ``gpu``, from the cache and online, and ``epochs`` of each.

    Args:
        samples: training samples an epoch.
        gpu: a card of ``GPU_PEAK_TFLOPS`` (or an alias); any name with ``peak_tflops``.
        mfu: model FLOPs utilisation assumed, in (0, 1].
        peak_tflops: the card's dense tensor peak, overriding the table.
        usd_per_gpu_hour: price, overriding the price table's cheapest one-GPU instance.
        prices: featstore's price table (``featstore.extract.cluster.load_prices()``).
        epochs: epochs of a whole run (30: stage 1 of the paper's recipe).
        seq_len, local_frames, audio_seconds: the sizes the FLOPs are counted at.
        rates: rate records (``featstore.extract.rates``) measured on this GPU, if any.
        figures: ``trainer.model.flops.real_figures`` output, when already counted.

    Returns:
        Plain data: FLOPs a sample, seconds and dollars an epoch and a run, both paths,
        the extraction that the cache costs once, and the measured rates used.

    Raises:
        ValueError: naming a bad number or an unknown GPU without ``peak_tflops``.
    """
    if samples < 1 or epochs < 1:
        raise ValueError(f"samples ({samples}) and epochs ({epochs}) must be positive")
    if not 0 < mfu <= 1:
        raise ValueError(f"mfu {mfu} must be in (0, 1]")
    if peak_tflops is None:
        gpu = resolve_gpu(gpu)
        peak_tflops = GPU_PEAK_TFLOPS[gpu]
    elif peak_tflops <= 0:
        raise ValueError(f"peak_tflops {peak_tflops} must be positive")
    else:
        gpu = GPU_ALIASES.get(gpu.lower(), gpu)
    if figures is None:
        from trainer.model.flops import real_figures

        figures = real_figures(seq_len, local_frames, audio_seconds)
    rate = peak_tflops * 1e12 * mfu  # FLOP/s achieved
    step_s = figures["train_step"]["step"] / rate
    enc_flop_s = figures["encoders_total"] / rate
    measured = _measured(rates, gpu)
    enc_measured = sum(measured["encode_s_per_clip"].values()) if len(measured["encode_s_per_clip"]) == 4 else None
    enc_s = enc_measured if enc_measured is not None else enc_flop_s
    price = None if usd_per_gpu_hour is None else (float(usd_per_gpu_hour), "--price")
    if price is None and prices is not None:
        price = gpu_price(gpu, prices)

    def cost(seconds: float) -> dict[str, Any]:
        hours = seconds / HOUR
        return {"gpu_hours": hours, "usd": None if price is None else hours * price[0]}

    cached, online, extraction = samples * step_s, samples * (step_s + enc_s), samples * enc_s
    return {
        "samples": samples,
        "gpu": gpu,
        "peak_tflops": peak_tflops,
        "mfu": mfu,
        "usd_per_gpu_hour": None if price is None else price[0],
        "price_from": None if price is None else price[1],
        "tflops_per_sample": {
            "cached": figures["train_step"]["step"] / 1e12,
            "encoders": figures["encoders_total"] / 1e12,
        },
        "encoder_seconds_from": "measured" if enc_measured is not None else "flops",
        "measured": measured,
        "epoch": {"cached": cost(cached), "online": cost(online)},
        "run": {
            "epochs": epochs,
            "cached": cost(extraction + epochs * cached),  # extraction once, then every epoch from the cache
            "online": cost(epochs * online),
            "extraction": cost(extraction),
        },
        "online_over_cached_epoch": online / cached,
        "sizes": {"seq_len": seq_len, "local_frames": local_frames, "audio_seconds": audio_seconds},
    }


def _money(d: Mapping[str, Any]) -> str:
    usd = "" if d["usd"] is None else f", ${d['usd']:,.2f}"
    return f"{d['gpu_hours']:,.2f} GPU-h{usd}"


def estimate_text(d: Mapping[str, Any]) -> str:
    """The estimate as a person reads it."""
    m = d["measured"]
    lines = [
        f"{d['samples']:,} samples on {d['gpu']} ({d['peak_tflops']:g} dense TFLOP/s) at an assumed MFU of {d['mfu']:g}"
        + ("" if d["usd_per_gpu_hour"] is None else f", ${d['usd_per_gpu_hour']:.3f}/GPU-h ({d['price_from']})"),
        f"  FLOPs a sample: {d['tflops_per_sample']['cached']:.2f} TFLOPs a training step from the cache, "
        f"+{d['tflops_per_sample']['encoders']:.2f} TFLOPs of frozen encoders online "
        f"(seq_len {d['sizes']['seq_len']}, {d['sizes']['local_frames']} face crops, {d['sizes']['audio_seconds']:g} s audio)",
        f"  one epoch: cached {_money(d['epoch']['cached'])}; online {_money(d['epoch']['online'])} "
        f"({d['online_over_cached_epoch']:.2f}x; encoders from {d['encoder_seconds_from']})",
        f"  {d['run']['epochs']} epochs: cached {_money(d['run']['cached'])} (extraction once: "
        f"{_money(d['run']['extraction'])}); online {_money(d['run']['online'])}",
    ]
    if m["encode_s_per_clip"]:
        per = ", ".join(f"{s} {v:.4f}" for s, v in m["encode_s_per_clip"].items())
        lines.append(f"  measured on {d['gpu']}, s/clip: {per}")
    else:
        lines.append(f"  no measured encoder rates on {d['gpu']} (featstore calibrate there, or --rates/--store)")
    if m["decode_s_per_clip"] is not None:
        lines.append(
            f"  measured decoding {m['decode_s_per_clip']:.3f} CPU-s a clip: an online epoch also needs "
            f"{d['samples'] * m['decode_s_per_clip'] / HOUR:,.2f} CPU-h of it beside the GPU"
        )
    lines.append("  time = FLOPs / (peak x MFU): an assumption, not a measurement; no training rate is measured here")
    return "\n".join(lines)
