"""Encoder-only throughput (clips/s) of the four real-size encoders, random weights, on the CPU and any GPU.

Run: python benchmarks/bench_encoders.py [--quick] [--out benchmarks/results/decode.json]

Each real-size model is built from the real config's numbers (no download)
with weights from a fixed seed, saved to a temporary folder and loaded back
through the encoder classes, so load time includes reading and fingerprinting
the weights. Inputs are synthetic decoded arrays of the real shapes. On the CPU
the batch is small (EVA ViT-g at 1025 tokens is ~2 TFLOP a clip); on a GPU the
encoders run in float16, after warm-up, timed between ``cuda.synchronize``
calls, with one clip per forward (the bitwise-safe default) and with the whole
batch in one forward. The figures are merged under the key "encoders" into the
results file, leaving its other keys as they are.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import transformers
from transformers import Blip2VisionModel, HubertModel, VideoMAEModel, ViTMAEModel

from featstore.encoders.presets import ENCODERS, SLOTS, real_config

MODELS = {"global": Blip2VisionModel, "local": ViTMAEModel, "temporal": VideoMAEModel, "audio": HubertModel}
SEED = 0
# Blip2VisionConfig's initializer_range (1e-10) gives weights so small that CPU
# kernels may hit denormals and run at another speed than real weights would.
INIT_RANGE = 0.02
LOCAL_FRAMES = 8  # face crops per clip for the local slot
AUDIO_SECONDS = 6.0  # MER2023 / DFEW clips are a few seconds long


def machine() -> str:
    """CPU model and cores, and the GPU if torch sees one."""
    model = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), "?")
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{model}, {os.cpu_count()} cores, {platform.system()} {platform.machine()}, {gpu}"


def save_random_checkpoint(slot: str, folder: Path) -> int:
    """Build the real-size model of ``slot`` with seeded random weights and save it; returns its parameter count."""
    config = real_config(slot)
    config.initializer_range = INIT_RANGE
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        model = MODELS[slot](config)
    model.save_pretrained(folder)
    return sum(p.numel() for p in model.parameters())


def make_batch(slot: str, n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Synthetic decoded inputs of the real shapes for ``n`` clips."""
    if slot == "global":
        return {"frame": rng.integers(0, 256, (n, 360, 640, 3), dtype=np.uint8)}
    if slot == "local":
        return {"faces": rng.integers(0, 256, (n, LOCAL_FRAMES, 224, 224, 3), dtype=np.uint8)}
    if slot == "temporal":
        return {"face_frames": rng.integers(0, 256, (n, 16, 224, 224, 3), dtype=np.uint8)}
    length = int(AUDIO_SECONDS * 16000)
    audio = (rng.standard_normal((n, length)) * 0.1).astype(np.float32)
    return {"audio": audio, "audio_len": np.full(n, length, dtype=np.int64)}


def preprocess_seconds(encoder: Any, slot: str, batch: dict[str, np.ndarray]) -> float:
    """CPU seconds per clip of the encoder's own preprocessing (resize/normalise), apart from the model."""
    t0 = time.perf_counter()
    if slot == "audio":
        for row, n in zip(batch["audio"], batch["audio_len"]):
            encoder.preprocess(row[:n])
    else:
        x = next(iter(batch.values()))
        encoder.preprocess(x.reshape(-1, *x.shape[2:]) if slot == "local" else x)
    return (time.perf_counter() - t0) / len(next(iter(batch.values())))


def time_calls(encoder: Any, batch: dict[str, np.ndarray], iters: int, warmup: int, cuda: bool) -> float:
    """Seconds per call of ``encoder(batch)``, mean over ``iters`` after ``warmup`` calls."""
    for _ in range(warmup):
        encoder(dict(batch))
    if cuda:
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(iters):
        encoder(dict(batch))
    if cuda:
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / iters


def runs_for(slot: str, quick: bool) -> list[dict[str, Any]]:
    """Which (device, batch, clips per forward, iterations, warm-up) to time for ``slot``."""
    heavy = slot == "global"
    cpu = {
        "device": "cpu",
        "batch": 1 if heavy else 2,
        "clips_per_forward": 1,
        "iters": 1 if quick or heavy else 2,
        "warmup": 0 if quick or heavy else 1,
    }
    runs = [cpu]
    if torch.cuda.is_available():
        gpu = {"device": "cuda", "batch": 8, "iters": 3 if quick else 10, "warmup": 2}
        runs += [{**gpu, "clips_per_forward": 1}]
        if slot != "audio":  # audio always runs clip by clip
            runs += [{**gpu, "clips_per_forward": 8}]
    return runs


def bench_slot(slot: str, folder: Path, params: int, quick: bool, rng: np.random.Generator) -> list[dict[str, Any]]:
    """Load the encoder of ``slot`` on each device and time it; one row per run."""
    rows = []
    for run in runs_for(slot, quick):
        kwargs = {} if slot == "audio" else {"clips_per_forward": run["clips_per_forward"]}
        t0 = time.perf_counter()
        encoder = ENCODERS[slot](str(folder), device=run["device"], **kwargs)
        load_s = time.perf_counter() - t0
        batch = make_batch(slot, run["batch"], rng)
        pre_s = preprocess_seconds(encoder, slot, batch)
        per_call = time_calls(encoder, batch, run["iters"], run["warmup"], run["device"] == "cuda")
        rows.append(
            {
                "slot": slot,
                "model": MODELS[slot].__name__,
                "params_m": round(params / 1e6, 1),
                "device": run["device"],
                "compute_dtype": encoder.spec.preprocess["compute_dtype"],
                "batch": run["batch"],
                "clips_per_forward": run["clips_per_forward"],
                "iters": run["iters"],
                "warmup": run["warmup"],
                "input": {k: list(v.shape) for k, v in batch.items()},
                "output": list(encoder.spec.shape),
                "load_s": round(load_s, 1),
                "preprocess_s_per_clip": round(pre_s, 4),
                "s_per_clip": round(per_call / run["batch"], 4),
                "clips_per_s": round(run["batch"] / per_call, 3),
            }
        )
        print_row(rows[-1])
        del encoder
        if run["device"] == "cuda":
            torch.cuda.empty_cache()
    return rows


def print_row(row: dict[str, Any]) -> None:
    """One line of the table."""
    print(
        f"{row['slot']:<9}{row['model']:<18}{row['params_m']:>8.1f}M  {row['device']:<5}{row['compute_dtype']:<9}"
        f"{row['batch']:>3}{row['clips_per_forward']:>4}{row['load_s']:>8.1f}{row['preprocess_s_per_clip']:>9.3f}"
        f"{row['s_per_clip']:>10.3f}{row['clips_per_s']:>10.3f}",
        flush=True,
    )


def merge_into(path: Path, key: str, value: Any) -> None:
    """Replace ``key`` in the JSON file at ``path`` (created if missing), keeping every other key."""
    path.parent.mkdir(parents=True, exist_ok=True)
    old = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps({**old, key: value}, indent=2) + "\n", encoding="utf-8")
    os.replace(partial, path)  # a reader never sees half a file


def main(argv: list[str] | None = None) -> None:
    """Parse arguments, time every slot, print the table and merge the figures into the results file."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="one timed call per CPU run, no CPU warm-up, fewer GPU calls")
    p.add_argument("--slots", nargs="+", default=list(SLOTS), choices=SLOTS, help="which encoders to time")
    p.add_argument("--out", default="benchmarks/results/decode.json", help="JSON file to merge the figures into")
    args = p.parse_args(argv)
    rng = np.random.default_rng(SEED)
    print(
        f"{'slot':<9}{'model':<18}{'params':>9}  {'dev':<5}{'dtype':<9}{'B':>3}{'cpf':>4}{'load_s':>8}"
        f"{'pre_s/c':>9}{'s/clip':>10}{'clips/s':>10}"
    )
    rows = []
    tmp = Path(tempfile.mkdtemp(prefix="bench-encoders-"))
    try:
        for slot in args.slots:
            params = save_random_checkpoint(slot, tmp / slot)
            rows += bench_slot(slot, tmp / slot, params, args.quick, rng)
            shutil.rmtree(tmp / slot)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    command = " ".join(["python benchmarks/bench_encoders.py", *(sys.argv[1:] if argv is None else argv)])
    merge_into(
        Path(args.out),
        "encoders",
        {
            "machine": machine(),
            "torch_threads": torch.get_num_threads(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "date": datetime.date.today().isoformat(),
            "command": command,
            "weights": f"random (seed {SEED}, initializer_range {INIT_RANGE}), real-size configs from presets.REAL_*",
            "local_frames": LOCAL_FRAMES,
            "audio_seconds": AUDIO_SECONDS,
            "runs": rows,
        },
    )


if __name__ == "__main__":
    main()
