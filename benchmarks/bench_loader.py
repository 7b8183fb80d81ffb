"""Can the cache keep a fast accelerator fed? The trainer's loader at real feature size against a fixed step.

Run: python benchmarks/bench_loader.py [--n 64] [--step-ms 27] [--busy 0.3] [--batch-size 1]
     [--workers 0,1,2,4] [--repeats 3] [--out benchmarks/results/loader.json]

Samples are real size: the global EVA feature ``[1025, 1408]`` fp16 (2.9 MB)
and three ``[1024]`` vectors, written to a Zarr store (zstd 3, the default)
and exported to shards, with MERR-like texts. The step is simulated: a fixed
``--step-ms`` a batch of one (27 ms: a LoRA LLaMA-2-7B step of 10.9 TFLOPs at
about 40% of an H100's bf16 peak), of which ``--busy`` is spent holding the
GIL in Python (as a CUDA step's kernel launches do) and the rest asleep with
the GIL released (as a step waiting on the GPU is).

- **floor**: the very batches, collated beforehand, in memory: steps only.
- **cached**: the trainer's path: ``open_cache`` -> ``EpochStream`` (reading
  in the prefetch thread, or in ``W`` DataLoader workers) -> ``Collator`` ->
  ``Prefetcher`` (depth 2, the default) -> ``to_device``; also with no
  prefetch at all (``prefetch 0``: the loader of before, reading between steps).

Every repeat is a round running each mode's epoch once, in turn; a mode's
figure is the median over rounds of floor seconds / its seconds (1.0: the
step never waits for data). ``run()`` is what ``gpu_check.py`` calls with a
measured step time.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_decode import merge_sections  # noqa: E402

GLOBAL_SHAPE = (1025, 1408)
VECTOR = 1024
TASKS = "emotion"  # one example a sample: a step per sample at batch 1, as the original trains


def make_cache(root: Path, n: int, maxcount: int = 8) -> tuple[Path, Path, dict[str, str]]:
    """A real-size store of ``n`` samples (seeded random features) and its shards."""
    from featstore import FeatureSpec, FeatureStore, export_wds

    store = FeatureStore.create(root / "store.zarr")
    ids = [f"clip_{i:05d}" for i in range(n)]
    ann = [
        {
            "label": "worried",
            "transcript": f"I really did not expect this to happen to me, not today, sample {i}",
            "caption": "A person frowns and speaks quickly in a low voice.",
            "video": f"clips/{s}.mp4",
        }
        for i, s in enumerate(ids)
    ]
    store.add_samples(ids, [hashlib.sha256(s.encode()).hexdigest() for s in ids], ann)
    rng = np.random.default_rng(0)
    spec_ids = {}
    for slot, shape in {"global": GLOBAL_SHAPE, "local": (VECTOR,), "temporal": (VECTOR,), "audio": (VECTOR,)}.items():
        spec = FeatureSpec(name=slot, encoder="bench", weights="w", shape=shape, dtype="float16")
        feat = store.add_spec(spec)
        for unit in range(feat.num_units):
            a, b = feat.unit_bounds(unit)
            feat.write_unit(unit, rng.standard_normal((b - a, *shape), dtype=np.float32).astype(np.float16))
        spec_ids[slot] = spec.id
    export_wds(FeatureStore.open(root / "store.zarr"), str(root / "shards"), maxcount=maxcount)
    return root / "store.zarr", root / "shards", spec_ids


class Step:
    """A simulated training step: ``busy`` of ``seconds`` spinning with the GIL held, the rest asleep."""

    def __init__(self, seconds: float, busy: float) -> None:
        self.spin, self.sleep = seconds * busy, seconds * (1 - busy)

    def __call__(self, batch: dict[str, Any]) -> None:
        from trainer.data.loader import to_device

        to_device(batch, ("input_ids", "feature_mask", "attention_mask", "labels"), torch.device("cpu"))
        end = time.perf_counter() + self.spin
        while time.perf_counter() < end:
            pass
        time.sleep(self.sleep)


def _stream(kind: str, cache, tokenizer, batch: int, workers: int):
    from trainer.data.cache import Collator, EpochStream, open_cache
    from trainer.data.tasks import parse_tasks

    store, shards, ids = cache
    ds, _ = open_cache(kind, str(shards if kind == "shards" else store), ids, shuffle=16, seed=0)
    return EpochStream(ds, parse_tasks(TASKS), Collator(tokenizer, 256, 4, 1024), batch, 0, True, workers)


def cached_epoch(stream, step: Step, prefetch: int) -> tuple[float, int]:
    """One epoch as ``TrainRecipe`` runs it (end at the first batch that is not fresh); seconds and batches."""
    from trainer.data.loader import Prefetcher

    t0 = time.perf_counter()
    it = stream.batches(0)
    if prefetch:
        it = Prefetcher(it, prefetch)
    n = 0
    try:
        for fresh, batch in it:
            if not fresh:
                break
            step(batch)
            n += 1
    finally:
        if prefetch:
            it.close()
    return time.perf_counter() - t0, n


def floor_epoch(batches: list, step: Step) -> float:
    t0 = time.perf_counter()
    for b in batches:
        step(b)
    return time.perf_counter() - t0


def run(
    n: int = 64,
    step_ms: float = 27.0,
    busy: float = 0.3,
    batch_size: int = 1,
    workers: tuple[int, ...] = (0, 1, 2, 4),
    repeats: int = 3,
    kinds: tuple[str, ...] = ("shards", "zarr"),
) -> dict[str, Any]:
    """Measure; returns the figures (per mode: ratio to the floor, seconds, samples/s)."""
    from transformers import AutoTokenizer

    from trainer.model.tiny import build_tiny_llm

    step = Step(step_ms * batch_size / 1000, busy)
    with tempfile.TemporaryDirectory(prefix="bench-loader-") as tmp:
        root = Path(tmp)
        cache = make_cache(root, n)
        tokenizer = AutoTokenizer.from_pretrained(build_tiny_llm(root / "tiny-llm"))
        modes: dict[str, tuple[str, int, int]] = {}
        for kind in kinds:
            modes[f"{kind}, prefetch 0"] = (kind, 0, 0)
            for w in workers:
                modes[f"{kind}, prefetch 2, {w} workers"] = (kind, w, 2)
        floor_batches = [b for f, b in _take_pass(_stream("zarr", cache, tokenizer, batch_size, 0))]
        secs: dict[str, list[float]] = {m: [] for m in ["floor", *modes]}
        ratios: dict[str, list[float]] = {m: [] for m in modes}
        for _ in range(repeats):
            floor = floor_epoch(floor_batches, step)
            secs["floor"].append(floor)
            for mode, (kind, w, pf) in modes.items():
                s, count = cached_epoch(_stream(kind, cache, tokenizer, batch_size, w), step, pf)
                if count != len(floor_batches):
                    raise RuntimeError(f"{mode}: {count} batches, the floor had {len(floor_batches)}")
                secs[mode].append(s)
                ratios[mode].append(floor / s)
            floor_s = statistics.median(secs["floor"])
    rows = {
        "floor": {"seconds": floor_s, "samples_per_s": n / floor_s, "ratio": 1.0},
        **{
            m: {
                "seconds": statistics.median(secs[m]),
                "samples_per_s": n / statistics.median(secs[m]),
                "ratio": statistics.median(ratios[m]),
                "ratio_min": min(ratios[m]),
            }
            for m in modes
        },
    }
    return {
        "config": {
            "n": n,
            "step_ms": step_ms,
            "busy": busy,
            "batch_size": batch_size,
            "repeats": repeats,
            "sample_mb": (np.prod(GLOBAL_SHAPE) + 3 * VECTOR) * 2 / 1e6,
        },
        "rows": rows,
    }


def _take_pass(stream):
    for fresh, batch in stream.batches(0):
        if not fresh:
            return
        yield fresh, batch


def table(result: dict[str, Any]) -> str:
    c = result["config"]
    lines = [
        f"{c['n']} samples of {c['sample_mb']:.2f} MB, batch {c['batch_size']}, step {c['step_ms']:.1f} ms a sample "
        f"({c['busy']:.0%} holding the GIL), {c['repeats']} rounds",
        f"{'mode':<32} {'cached/floor':>12} {'worst':>7} {'samples/s':>10} {'epoch s':>8}",
    ]
    for mode, r in result["rows"].items():
        worst = f"{r['ratio_min']:.3f}" if "ratio_min" in r else ""
        lines.append(f"{mode:<32} {r['ratio']:>12.3f} {worst:>7} {r['samples_per_s']:>10.1f} {r['seconds']:>8.2f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=64, help="samples in the cache (default: 64)")
    p.add_argument("--step-ms", type=float, default=27.0, help="simulated step per sample, ms (default: 27)")
    p.add_argument("--busy", type=float, default=0.3, help="fraction of the step holding the GIL (default: 0.3)")
    p.add_argument("--batch-size", type=int, default=1, help="samples a batch (default: 1, as the original)")
    p.add_argument("--workers", default="0,1,2,4", help="DataLoader worker counts to compare (default: 0,1,2,4)")
    p.add_argument("--repeats", type=int, default=3, help="rounds (default: 3)")
    p.add_argument("--out", default=str(REPO / "benchmarks/results/loader.json"), help="JSON results file")
    args = p.parse_args(argv)
    result = run(
        args.n, args.step_ms, args.busy, args.batch_size, tuple(int(w) for w in args.workers.split(",")), args.repeats
    )
    result["machine"] = {"platform": platform.platform(), "cpus": __import__("os").cpu_count(), "gpu": None}
    result["date"] = datetime.date.today().isoformat()
    result["command"] = "python benchmarks/bench_loader.py " + " ".join(argv if argv is not None else sys.argv[1:])
    print(table(result))
    merge_sections(args.out, {"loader": result})
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
