"""One training epoch fed from the cache, online (encoders on raw clips each step) and from memory, in one run.

Run: python benchmarks/bench_epoch.py [--n 32] [--repeats 5] [--online-repeats 2] [--out benchmarks/results/epoch.json]

Same clips, same model, same batches, same process. Every repeat is a round
in which the fed-by modes run their epochs in lockstep, one optimizer step of
each in turn (cached, floor, memory, online), so that load on this shared
machine (other engineers' jobs) falls on all of them alike; figures are
medians over rounds, and ratios are taken within the run.

- **cached**: the trainer's own data path, ``open_cache("shards")`` ->
  ``EpochStream`` -> ``Collator`` -> ``TrainRecipe._optimizer_step``, the loop
  ``TrainRecipe.train`` runs (end of epoch seen as ``train`` sees it).
- **online**: ``trainer.data.online.OnlineFeatures`` (decode the clip, face crops,
  the four encoders) in the same ``EpochStream``, at every step.
- **floor**: the very batches of the cached epoch, already collated in memory:
  only projectors and LoRA LLaMA.
- **memory**: the samples in memory, collated at each step (separates
  collation from reading).

Model scale. The real encoders cost 5.60 TFLOPs a clip against 10.93 for a
LoRA LLaMA-2-7B step at 400 tokens (``flops.py``): 0.51. Here each encoder
keeps its real input and token counts (448 px and 1025 tokens, 16 face crops,
16 frames, 5 s of audio) and the LLaMA its 260 feature tokens, but widths and
depths shrink (``SCALED_*``) so that a CPU epoch takes seconds while every
slot's share of the step stays near the real one; the script counts both on
the meta device and prints them side by side. One task (emotion) makes one
example per sample, so the online path runs the encoders once per step, as
the FLOP ratio assumes.

Also measured in the same run (the speed-of-light rows): decode frames/s
inside the online epoch against decode alone, encoder clips/s inside it
against the encoders alone on pre-decoded clips, shard read MB/s against a
raw sequential read of the same tar bytes, store write MB/s against a raw
sequential write of the same bytes, and training samples/s cached against
from memory.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench_decode import merge_sections  # noqa: E402
from flops import encoder_flops, llama_step_flops, real_figures  # noqa: E402

SEED = 0
INIT_RANGE = 0.02  # Blip2VisionConfig's 1e-10 default would make the random tower all but constant
LOCAL_FRAMES = 16  # face crops per clip for MAE, as flops.py counts them
AUDIO_SECONDS = 5.0  # clip length: HuBERT's input as flops.py counts it
TASKS = "emotion"  # one example per sample: the encoders run once per training example
BATCH = 2  # the trainer's default micro-batch
_BLOCK = dict(layer_norm_eps=1e-6, qkv_bias=True, initializer_range=INIT_RANGE)
# Scaled encoders: the real patch grids, frame counts and conv strides; narrow and shallow.
SCALED_EVA = dict(
    hidden_size=128,
    intermediate_size=512,
    num_hidden_layers=3,
    num_attention_heads=4,
    image_size=224,
    patch_size=14,
    **_BLOCK,
)
SCALED_MAE = dict(
    hidden_size=112,
    intermediate_size=448,
    num_hidden_layers=2,
    num_attention_heads=4,
    image_size=224,
    patch_size=16,
    mask_ratio=0.0,
    **_BLOCK,
)
SCALED_VIDEOMAE = dict(
    hidden_size=96,
    intermediate_size=384,
    num_hidden_layers=1,
    num_attention_heads=4,
    image_size=224,
    patch_size=16,
    num_frames=16,
    tubelet_size=2,
    use_mean_pooling=False,
    **_BLOCK,
)
SCALED_HUBERT = dict(
    hidden_size=96,
    intermediate_size=384,
    num_hidden_layers=2,
    num_attention_heads=4,
    feat_extract_norm="layer",
    do_stable_layer_norm=True,
    conv_bias=False,
    conv_dim=(32,) * 7,
    conv_stride=(5, 2, 2, 2, 2, 2, 2),
    conv_kernel=(10, 3, 3, 3, 3, 2, 2),
    num_conv_pos_embeddings=128,
    num_conv_pos_embedding_groups=16,
    initializer_range=INIT_RANGE,
)
SCALED_ENCODERS = {"global": SCALED_EVA, "local": SCALED_MAE, "temporal": SCALED_VIDEOMAE, "audio": SCALED_HUBERT}
# Scaled LLaMA: Llama-2's shape ratios (intermediate 2.69x hidden, 64-wide heads), 4 layers.
SCALED_LLAMA = dict(
    hidden_size=384,
    intermediate_size=1032,
    num_hidden_layers=4,
    num_attention_heads=6,
    num_key_value_heads=6,
    max_position_embeddings=2048,
    initializer_range=0.02,
)


# ---- set-up: clips, scaled checkpoints, the cache ----------------------------------------------------------
def save_encoders(folder: Path) -> dict[str, Path]:
    """The four scaled encoders with seeded random weights, saved as the classes featstore loads."""
    from flops import encoder_models

    out = {}
    for slot in SCALED_ENCODERS:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(SEED)
            model = encoder_models({slot: SCALED_ENCODERS[slot]}, "cpu")[slot]
        model.save_pretrained(folder / slot)
        out[slot] = folder / slot
    return out


def save_llm(folder: Path) -> Path:
    """The scaled LLaMA with the tiny tokenizer (trainer.model.tiny), loadable by TrainConfig.llm."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from trainer.model.tiny import build_tiny_llm

    tok = AutoTokenizer.from_pretrained(build_tiny_llm(folder.parent / "tiny-llm"))
    config = LlamaConfig(
        vocab_size=len(tok),
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        **SCALED_LLAMA,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        LlamaForCausalLM(config).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def extract(tmp: Path, data: Path, encoders: dict[str, Path]) -> tuple[Path, Path, float]:
    """Run jobs/extract.py on the clips with the scaled encoders; the store, the shards and the seconds taken."""
    store, shards = tmp / "store.zarr", tmp / "shards"
    cmd = [
        sys.executable,
        str(REPO / "jobs" / "extract.py"),
        "--dataset",
        str(data),
        "--format",
        "merr",
        "--store",
        str(store),
        "--work-dir",
        str(tmp / "work"),
        "--export-wds",
        str(shards),
        "--local-frames",
        str(LOCAL_FRAMES),
        "--strict",
        *[a for s, p in encoders.items() for a in ("--checkpoint", f"{s}={p}")],
    ]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.DEVNULL)
    return store, shards, time.perf_counter() - t0


# ---- the epoch in each fed-by mode -------------------------------------------------------------------------
def run_epoch(recipe, batches: Iterable) -> tuple[float, int]:
    """Optimizer steps over ``batches`` as TrainRecipe.train takes them; (seconds, examples)."""
    t0 = time.perf_counter()
    n = 0
    for batch in batches:
        recipe._optimizer_step([batch])
        n += len(batch["sample_ids"])
    return time.perf_counter() - t0, n


def fresh_batches(stream, epoch: int = 0):
    """An EpochStream's batches of one pass, ended as the recipe ends an epoch (its first non-fresh batch)."""
    for fresh, batch in stream.batches(epoch):
        if not fresh:
            return
        yield batch


def lockstep(recipe, feeds: dict[str, Iterable]) -> tuple[dict[str, float], int]:
    """One epoch of every feed, step by step in turn (cached step, floor step, ...), so that load on a shared
    machine falls on all of them alike; each feed's seconds (its reading, collation and steps) and examples."""
    its = {m: iter(f) for m, f in feeds.items()}
    secs = {m: 0.0 for m in its}
    counts = {m: 0 for m in its}
    live = set(its)
    order = list(its)
    while live:
        order = order[1:] + order[:1]  # rotate who goes first: a position in the turn must not favour a feed
        for m in order:
            it = its[m]
            if m not in live:
                continue
            t0 = time.perf_counter()
            batch = next(it, None)
            if batch is None:
                live.discard(m)
            else:
                recipe._optimizer_step([batch])
                counts[m] += len(batch["sample_ids"])
            secs[m] += time.perf_counter() - t0
    if len(set(counts.values())) != 1:
        raise RuntimeError(f"the feeds gave different numbers of examples: {counts}")
    return secs, next(iter(counts.values()))


class Timed:
    """Wrap a callable and add up the seconds spent in it."""

    def __init__(self, fn: Callable) -> None:
        self.fn, self.seconds, self.calls = fn, 0.0, 0

    def __call__(self, *a: Any, **kw: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return self.fn(*a, **kw)
        finally:
            self.seconds += time.perf_counter() - t0
            self.calls += 1


def online_dataset(store: Path, root: Path, encoders: dict[str, Path], expect: dict[str, str]):
    """trainer.data.online.OnlineFeatures with the scaled encoders in place of its preset's, checked by spec id."""
    from trainer.data.online import OnlineFeatures
    from trainer.model.projector import FEATURE_SLOTS

    ds = OnlineFeatures(str(store), root, preset="tiny")
    options = {
        s: {"upstream": ds.decode.upstream(s), **({} if s == "audio" else {"clips_per_forward": 1})}
        for s in FEATURE_SLOTS
    }
    ds.encoders = ds.tools.load_encoders(
        "tiny",
        list(FEATURE_SLOTS),
        overrides={k: str(v) for k, v in encoders.items()},
        tiny_dir=store.parent / "work" / "tiny",
        options=options,
    )
    if ds.spec_ids() != expect:
        raise RuntimeError(f"online encoders make spec ids {ds.spec_ids()}, the cache holds {expect}")
    return ds


# ---- speed-of-light rows -------------------------------------------------------------------------------
def raw_read_mb_s(paths: list[Path]) -> tuple[float, int]:
    """MB/s of reading the files in 1 MB blocks and nothing else (warm page cache); and the bytes."""
    nbytes = sum(p.stat().st_size for p in paths)
    t0 = time.perf_counter()
    for p in paths:
        with open(p, "rb", buffering=0) as f:
            while f.read(1 << 20):
                pass
    return nbytes / 1e6 / (time.perf_counter() - t0), nbytes


def shard_read_mb_s(shards: Path, nbytes: int) -> float:
    """MB/s of featstore's ShardDataset streaming the same tars (tar parse, np.load, JSON, checks)."""
    from featstore import ShardDataset

    ds = ShardDataset(str(shards))
    t0 = time.perf_counter()
    for _ in ds:
        pass
    return nbytes / 1e6 / (time.perf_counter() - t0)


def write_rates(tmp: Path, feats: np.ndarray) -> tuple[float, float]:
    """MB/s writing ``feats`` into a fresh store (default codec and unit size) and raw to one file, same bytes."""
    from featstore.spec import FeatureSpec
    from featstore.store import FeatureStore

    root = tmp / "write.zarr"
    shutil.rmtree(root, ignore_errors=True)
    store = FeatureStore.create(root)
    ids = [f"s{i:06d}" for i in range(len(feats))]
    store.add_samples(ids, [hashlib.sha256(s.encode()).hexdigest() for s in ids])
    feat = store.add_spec(
        FeatureSpec(name="global", encoder="bench", weights="w", shape=feats.shape[1:], dtype="float16")
    )
    t0 = time.perf_counter()
    for u in range(feat.num_units):
        a, b = feat.unit_bounds(u)
        feat.write_unit(u, feats[a:b])
    store_s = time.perf_counter() - t0
    raw = tmp / "raw.bin"
    t0 = time.perf_counter()
    with open(raw, "wb", buffering=0) as f:
        for row in feats:
            f.write(row.tobytes())
    raw_s = time.perf_counter() - t0
    raw.unlink()
    mb = feats.nbytes / 1e6
    return mb / store_s, mb / raw_s


def encoder_only(ds, clips: list) -> float:
    """Seconds per clip of the four encoders alone on already-decoded clips (as OnlineFeatures calls them)."""
    t0 = time.perf_counter()
    with torch.random.fork_rng(devices=[]):
        for clip in clips:
            for slot, enc in ds.encoders.items():
                _, inputs = ds.tools.collate([clip], slot)
                enc(inputs)
    return (time.perf_counter() - t0) / len(clips)


def decode_only(ds, n: int) -> tuple[float, list]:
    """Seconds per clip of decode_clip alone (video frames, face crops, audio), and the decoded clips."""
    from trainer.model.projector import FEATURE_SLOTS

    t0 = time.perf_counter()
    clips = [
        ds.tools.decode_clip(ds.tools.Sample.from_dict(ds.samples[i]), ds.root, list(FEATURE_SLOTS), ds.decode)
        for i in range(n)
    ]
    return (time.perf_counter() - t0) / n, clips


# ---- the run -----------------------------------------------------------------------------------------------
def scale_figures() -> dict[str, Any]:
    """FLOPs of the scaled models (meta device) beside the real ones, per slot as a share of the training step."""
    real = real_figures(400, LOCAL_FRAMES, AUDIO_SECONDS)
    scaled_enc = encoder_flops(SCALED_ENCODERS, LOCAL_FRAMES, AUDIO_SECONDS)
    shapes = {
        "global": (1025, SCALED_EVA["hidden_size"]),
        "local": (SCALED_MAE["hidden_size"],),
        "temporal": (SCALED_VIDEOMAE["hidden_size"],),
        "audio": (SCALED_HUBERT["hidden_size"],),
    }
    scaled_step = llama_step_flops({**SCALED_LLAMA, "vocab_size": 600}, shapes, 400)["step"]
    rows = {
        s: {
            "real_tflops": real["encoders"][s] / 1e12,
            "scaled_gflops": scaled_enc[s] / 1e9,
            "real_share": real["encoders"][s] / real["train_step"]["step"],
            "scaled_share": scaled_enc[s] / scaled_step,
        }
        for s in scaled_enc
    }
    return {
        "slots": rows,
        "real_step_tflops": real["train_step"]["step"] / 1e12,
        "scaled_step_gflops": scaled_step / 1e9,
        "real_encoders_over_step": real["encoders_over_step"],
        "scaled_encoders_over_step": sum(scaled_enc.values()) / scaled_step,
        "scaled_cached_bytes": sum(int(np.prod(v)) * 2 for v in shapes.values()),
        "real_cached_bytes": real["cached_bytes_per_sample"],
    }


def main(argv: list[str] | None = None) -> None:
    """Build everything, time the rounds, print the tables and merge the "epoch" group into --out."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=32, help="clips (= examples per epoch; default 32)")
    p.add_argument("--repeats", type=int, default=5, help="rounds of cached, floor and memory epochs (default 5)")
    p.add_argument(
        "--online-repeats",
        type=int,
        default=2,
        help="of those, rounds that include the online epoch (default 2; it takes ~20x longer)",
    )
    p.add_argument("--out", default="benchmarks/results/epoch.json", help="JSON file to merge the figures into")
    p.add_argument(
        "--keep",
        default=None,
        help="work in this folder (emptied first) and keep it (default: a temporary one, removed)",
    )
    args = p.parse_args(argv)

    scale = scale_figures()
    print_scale(scale)
    if args.keep:
        shutil.rmtree(args.keep, ignore_errors=True)
    tmp = Path(args.keep or tempfile.mkdtemp(prefix="bench_epoch_"))
    tmp.mkdir(parents=True, exist_ok=True)
    try:
        result = measure(tmp, args)
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    result["scale"] = scale
    print_results(result)
    group = {
        "machine": machine(),
        "date": datetime.date.today().isoformat(),
        "torch_threads": torch.get_num_threads(),
        "command": f"python benchmarks/bench_epoch.py --n {args.n} --repeats {args.repeats} "
        f"--online-repeats {args.online_repeats}",
        "models": {
            "encoders": SCALED_ENCODERS,
            "llama": SCALED_LLAMA,
            "tasks": TASKS,
            "batch_size": BATCH,
            "local_frames": LOCAL_FRAMES,
            "audio_seconds": AUDIO_SECONDS,
        },
        **result,
    }
    merge_sections(args.out, {"epoch": json.loads(json.dumps(group, default=str))})
    print(f"\nwrote the 'epoch' section of {args.out}")


def measure(tmp: Path, args) -> dict[str, Any]:
    """Make the clips and the cache, then time the modes in interleaved rounds and the speed-of-light rows."""
    from featstore.demo.dataset import make_demo_dataset
    from trainer.train.config import TrainConfig
    from trainer.train.recipe import TrainRecipe

    data = make_demo_dataset(tmp / "data", n=args.n, seconds=AUDIO_SECONDS, audio_source="synth")
    encoders = save_encoders(tmp / "encoders")
    llm = save_llm(tmp / "llm")
    store, shards, extract_s = extract(tmp, data, encoders)
    print(f"extracted {args.n} clips into {store} and {shards} in {extract_s:.1f} s")
    cfg = TrainConfig(
        cache="shards",
        shards=str(shards),
        store=str(store),
        tasks=TASKS,
        shuffle_buffer=0,
        llm=str(llm),
        batch_size=BATCH,
        epochs=1,
        out_dir=str(tmp / "train"),
        resume="never",
        progress=False,
        device="cpu",
        schedule="constant",
        dataset_root=str(data),
    )
    recipe = TrainRecipe(cfg)
    recipe.setup()
    cached_stream = recipe.stream
    floor = list(fresh_batches(cached_stream))  # the cached epoch's own batches, collated once
    from featstore import ShardDataset
    from trainer.data.cache import EpochStream

    samples = list(ShardDataset(str(shards)))
    mem_stream = EpochStream(samples, recipe.tasks, cached_stream.collate, BATCH, cfg.seed, shuffle=False)
    online = online_dataset(store, data, encoders, recipe.info.spec_ids)
    online.tools.decode_clip = decode = Timed(online.tools.decode_clip)
    on_stream = EpochStream(online, recipe.tasks, cached_stream.collate, BATCH, cfg.seed, shuffle=False)

    run_epoch(recipe, floor[:2])  # warm-up: allocator, first-call costs
    times: dict[str, list[float]] = {"cached": [], "floor": [], "memory": [], "online": []}
    decode_s, examples = [], 0
    for r in range(args.repeats):
        feeds = {"cached": fresh_batches(cached_stream), "floor": iter(floor), "memory": fresh_batches(mem_stream)}
        if r < args.online_repeats:
            feeds["online"] = fresh_batches(on_stream)
        before = decode.seconds
        secs, examples = lockstep(recipe, feeds)
        for mode, sec in secs.items():
            times[mode].append(sec)
        if "online" in secs:
            decode_s.append(decode.seconds - before)
        print(
            f"round {r}: " + ", ".join(f"{m} {v:.2f} s" for m, v in secs.items()) + f" ({examples} examples each)",
            flush=True,
        )
    med = {m: statistics.median(v) for m, v in times.items()}
    # speed-of-light rows, same run
    tars = sorted(shards.glob("*.tar"))
    raw_read, nbytes = max(raw_read_mb_s(tars) for _ in range(3))
    shard_read = max(shard_read_mb_s(shards, nbytes) for _ in range(3))
    glob = np.stack([s["global"] for s in samples])
    writes = [write_rates(tmp, glob) for _ in range(3)]
    dec_alone, clips = decode_only(online, min(8, args.n))
    enc_alone = encoder_only(online, clips)
    frames = LOCAL_FRAMES + 16 + 1  # face-crop frames for MAE, VideoMAE frames, the global frame
    dec_in_epoch = statistics.median(decode_s) / args.n
    enc_in_epoch = (statistics.median(times["online"]) - med["memory"]) / args.n - dec_in_epoch
    return {
        "examples_per_epoch": examples,
        "extract_seconds": round(extract_s, 1),
        "epoch_seconds": {m: [round(x, 3) for x in v] for m, v in times.items()},
        "median_seconds": {m: round(v, 3) for m, v in med.items()},
        "online_over_cached": med["online"] / med["cached"],
        "cached_over_floor": med["cached"] / med["floor"],
        "memory_over_floor": med["memory"] / med["floor"],
        "online_decode_seconds_per_clip": dec_in_epoch,
        "online_encode_seconds_per_clip": enc_in_epoch,
        "sol": {
            "decode_frames_s": {
                "measured": frames / dec_in_epoch,
                "limit": frames / dec_alone,
                "measured_is": "decode_clip inside the online epoch",
                "limit_is": "decode_clip alone",
            },
            "encoder_clips_s": {
                "measured": 1 / enc_in_epoch,
                "limit": 1 / enc_alone,
                "measured_is": "online epoch minus memory epoch minus decode, per clip",
                "limit_is": "four encoders alone on decoded clips",
            },
            "store_write_mb_s": {
                "measured": statistics.median(w[0] for w in writes),
                "limit": statistics.median(w[1] for w in writes),
                "measured_is": "FeatureArray.write_unit, zstd 3, global feature",
                "limit_is": "raw sequential write of the same bytes (page cache)",
            },
            "shard_read_mb_s": {
                "measured": shard_read,
                "limit": raw_read,
                "measured_is": "ShardDataset stream",
                "limit_is": "raw sequential read of the same tars (page cache)",
            },
            "train_samples_s": {
                "measured": examples / med["cached"],
                "limit": examples / med["floor"],
                "measured_is": "cached epoch",
                "limit_is": "floor: collated batches in memory",
            },
        },
    }


def machine() -> str:
    """CPU model, cores and memory of this machine."""
    model = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), "?")
    mem = next((int(ln.split()[1]) // (1 << 20) for ln in open("/proc/meminfo") if ln.startswith("MemTotal")), 0)
    return f"{model}, {os.cpu_count()} cores, {mem} GiB, {platform.system()} {platform.machine()}, no GPU"


def print_scale(s: dict[str, Any]) -> None:
    """The scaled models' FLOPs beside the real ones."""
    print(f"{'slot':<10} {'real TFLOPs':>12} {'real share':>11} {'scaled GFLOPs':>14} {'scaled share':>13}")
    for slot, r in s["slots"].items():
        print(
            f"{slot:<10} {r['real_tflops']:12.3f} {r['real_share']:11.3f} {r['scaled_gflops']:14.3f} "
            f"{r['scaled_share']:13.3f}"
        )
    print(f"{'step':<10} {s['real_step_tflops']:12.3f} {1:11.3f} {s['scaled_step_gflops']:14.3f} {1:13.3f}")
    print(f"encoders / step: real {s['real_encoders_over_step']:.3f}, scaled {s['scaled_encoders_over_step']:.3f}\n")


def print_results(r: dict[str, Any]) -> None:
    """The epoch table and the speed-of-light table."""
    print(f"\n{'fed by':<8} {'median s':>9}  all s")
    for m, v in r["median_seconds"].items():
        print(f"{m:<8} {v:9.2f}  {r['epoch_seconds'][m]}")
    print(
        f"online / cached {r['online_over_cached']:.3f}   cached / floor {r['cached_over_floor']:.3f}   "
        f"memory / floor {r['memory_over_floor']:.3f}"
    )
    print(
        f"online per clip: decode {r['online_decode_seconds_per_clip']:.3f} s, "
        f"encoders {r['online_encode_seconds_per_clip']:.3f} s"
    )
    print(f"\n{'figure':<18} {'measured':>10} {'limit':>10} {'ratio':>7}")
    for k, v in r["sol"].items():
        print(f"{k:<18} {v['measured']:10.2f} {v['limit']:10.2f} {v['measured'] / v['limit']:7.3f}")


if __name__ == "__main__":
    main()
