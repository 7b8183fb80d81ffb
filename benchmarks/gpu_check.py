"""The one prepared GPU check: every GPU path of the project, run for real, in one command (< 8 minutes on one GPU).

Run: python benchmarks/gpu_check.py [--out benchmarks/results/gpu_check.json]
     python benchmarks/gpu_check.py --cpu     (reduced sizes on the CPU: what CI runs)

1. **encoders**: the four encoder towers (EVA ViT-g at 448 px, MAE ViT-L on 16
   face crops, VideoMAE ViT-L on 16 frames, HuBERT-L on 5 s) at their real
   configuration with seeded random weights, fp16 against fp32 on the same
   inputs (max |fp16 - fp32| / max |fp32| of the last hidden state), and
   clips/s in fp16; a cosine below 0.999 fails. ``--cpu``: narrow towers
   (bench_epoch's scaled ones) at the real input sizes, bfloat16 against
   float32 (below 0.9 fails: bfloat16 keeps 8 mantissa bits).
2. **actors**: a Ray actor reserving one GPU loads an encoder the way the
   extraction job's actors do (``featstore.extract.encode.load_one_encoder``)
   and reports Ray's GPU ids, ``CUDA_VISIBLE_DEVICES`` and the encoder's torch
   device: they must agree (``--cpu``: no GPU reserved, device cpu).
3. **training**: 50 optimizer steps (bf16 autocast, AdamW) of the projectors +
   LoRA LLaMA at real width (4096, 32 heads, 11008) with ``--layers`` layers
   (default 4), batch ``--batch-size`` of real-size features and prompts of
   ``--tokens`` tokens: samples/s, peak memory (``max_memory_allocated``) beside
   ``trainer.model.memory``'s estimate at that depth, and MFU from ``flops.py``'s count
   of the same step against the card's dense bf16 peak (``--peak-tflops``,
   default: 989 for H100/H200). ``--cpu``: bench_epoch's scaled LLaMA, 5 steps.
4. **loader**: ``bench_loader.run`` at the measured step time scaled to the 32
   layers of Llama-2-7B (the figure the cache must keep up with); ``--cpu``:
   at 27 ms, on 16 samples.

Writes one JSON file; prints a table. Every check that fails is recorded with
its error and the script goes on; the exit code is 1 if any failed.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

INIT_RANGE = 0.02  # Blip2VisionConfig's default 1e-10 would make a random tower all but constant
H100_BF16_TFLOPS = 989.0  # dense bf16 peak of an H100 / H200 SXM


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _encoder_configs(cpu: bool) -> dict[str, dict[str, Any]]:
    from featstore.encoders.presets import REAL_EVA, REAL_HUBERT, REAL_MAE, REAL_VIDEOMAE

    if cpu:
        from bench_epoch import SCALED_ENCODERS

        return {s: dict(c) for s, c in SCALED_ENCODERS.items()}
    real = {"global": REAL_EVA, "local": REAL_MAE, "temporal": REAL_VIDEOMAE, "audio": REAL_HUBERT}
    return {s: {**c, "initializer_range": INIT_RANGE} for s, c in real.items()}


def _encoder_inputs(slot: str, device: torch.device, g: torch.Generator) -> dict[str, Any]:
    from flops import EVA_IMAGE, FACE_SIZE, SAMPLE_RATE, VIDEO_FRAMES

    def rand(*shape):
        return torch.rand(*shape, generator=g).to(device)

    return {
        "global": lambda: {"pixel_values": rand(1, 3, EVA_IMAGE, EVA_IMAGE), "interpolate_pos_encoding": True},
        # noise: ViTMAE shuffles the patches by random noise even at mask ratio 0; an increasing one keeps them
        "local": lambda: {
            "pixel_values": rand(16, 3, FACE_SIZE, FACE_SIZE),
            "noise": torch.arange((FACE_SIZE // 16) ** 2, dtype=torch.float32, device=device).repeat(16, 1),
        },
        "temporal": lambda: {"pixel_values": rand(1, VIDEO_FRAMES, 3, FACE_SIZE, FACE_SIZE)},
        "audio": lambda: {"input_values": torch.randn(1, 5 * SAMPLE_RATE, generator=g).to(device)},
    }[slot]()


def check_encoders(device: torch.device, cpu: bool, repeats: int) -> dict[str, Any]:
    """fp16 (bf16 on the CPU) against fp32 per encoder, and clips/s at the low precision."""
    from flops import encoder_models

    low = torch.bfloat16 if device.type == "cpu" else torch.float16
    out: dict[str, Any] = {"low_dtype": str(low).removeprefix("torch.")}
    for slot, config in _encoder_configs(cpu).items():
        torch.manual_seed(0)
        model = encoder_models({slot: config}, "cpu")[slot].to(device)
        inputs = _encoder_inputs(slot, device, torch.Generator().manual_seed(1))
        with torch.no_grad():
            ref = model(**inputs).last_hidden_state.float()
            model = model.to(low)
            cast = {k: v.to(low) if torch.is_tensor(v) and k != "noise" else v for k, v in inputs.items()}
            got = model(**cast).last_hidden_state.float()
            _sync(device)
            t0 = time.perf_counter()
            for _ in range(repeats):
                model(**cast)
            _sync(device)
            secs = (time.perf_counter() - t0) / repeats
        rel = float((got - ref).abs().max() / ref.abs().max())
        cos = float(torch.nn.functional.cosine_similarity(got.flatten(), ref.flatten(), dim=0))
        out[slot] = {"max_rel_diff": rel, "cosine": cos, "clips_per_s": 1 / secs, "tokens": list(ref.shape[1:])}
        del model
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return out


def check_actor_devices(gpu: bool) -> dict[str, Any]:
    """A Ray actor loads an encoder as the job's actors do; its GPU ids, CUDA_VISIBLE_DEVICES and device agree."""
    import ray

    def probe() -> dict[str, Any]:
        from featstore.encoders.presets import build_tiny_checkpoints
        from featstore.extract import encode

        build_tiny_checkpoints(encode.TINY_DIR)
        enc = encode.load_one_encoder("local", "tiny", None, {})
        return {
            "gpu_ids": [str(g) for g in ray.get_gpu_ids()],
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
            "torch_device": str(enc.device),
            "cuda_device_name": torch.cuda.get_device_name(enc.device) if enc.device.type == "cuda" else None,
        }

    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, num_gpus=1 if gpu else 0, include_dashboard=False, log_to_driver=False)
    try:
        got = ray.get(ray.remote(num_gpus=1 if gpu else 0, num_cpus=1)(probe).remote(), timeout=300)
    finally:
        if started:
            ray.shutdown()
    if gpu:
        ok = got["torch_device"].startswith("cuda") and got["gpu_ids"] == (got["cuda_visible_devices"] or "").split(",")
    else:
        ok = got["torch_device"] == "cpu" and not got["gpu_ids"]
    return {**got, "ok": bool(ok)}


def _llama(cpu: bool, layers: int) -> dict[str, Any]:
    from trainer.model.tiny import REAL_LLAMA

    if cpu:
        from bench_epoch import SCALED_LLAMA

        return {**SCALED_LLAMA, "vocab_size": REAL_LLAMA["vocab_size"]}
    return {**REAL_LLAMA, "num_hidden_layers": layers}


def check_training(
    device: torch.device, cpu: bool, layers: int, steps: int, batch: int, tokens: int, peak_tflops: float
) -> dict[str, Any]:
    """Steps of projectors + LoRA LLaMA at real width (bf16 autocast on GPU): samples/s, peak memory, MFU."""
    from flops import REAL_SHAPES, llama_step_flops
    from transformers import LlamaConfig, LlamaForCausalLM

    from trainer.data.loader import to_device
    from trainer.model.emotion_llama import EmotionLlama, LoraSettings, wrap_lora
    from trainer.model.projector import FeatureProjector
    from trainer.model.prompt import batch_prompts
    from trainer.train.optim import build_optimizer

    llama = _llama(cpu, layers)
    torch.manual_seed(0)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    with torch.device(device):
        llm = LlamaForCausalLM(LlamaConfig(**llama)).to(dtype)
    model = EmotionLlama(wrap_lora(llm, LoraSettings()), FeatureProjector(REAL_SHAPES, llama["hidden_size"]).to(device))
    n_feat = model.projector.num_tokens
    text = tokens - n_feat
    if text < 4:
        raise ValueError(f"--tokens {tokens} leaves no room for text beside {n_feat} feature tokens")
    g = torch.Generator().manual_seed(2)
    from trainer.model.prompt import PromptIds

    prompts = [
        PromptIds(
            (tuple(torch.randint(3, 1000, (8,), generator=g).tolist()), (5, 6), tuple(range(10, 10 + text // 2))),
            tuple(range(100, 100 + text - text // 2 - 10)),
        )
        for _ in range(batch)
    ]
    cpu_batch = batch_prompts(prompts, model.num_video_tokens, model.num_feature_tokens, 0)
    cpu_batch["features"] = {s: torch.randn(batch, *shape, generator=g).half() for s, shape in REAL_SHAPES.items()}
    seq = cpu_batch["input_ids"].shape[1]
    keys = ("input_ids", "feature_mask", "attention_mask", "labels")
    opt = build_optimizer(model.named_parameters(), 1e-5, 0.05)
    model.train()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    losses, times = [], []
    for _ in range(steps):
        _sync(device)
        t0 = time.perf_counter()
        inputs = to_device(cpu_batch, keys, device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            loss = model(inputs).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(float(loss.item()))
        times.append(time.perf_counter() - t0)
    warm = times[min(3, len(times) - 1) :]
    step_s = sorted(warm)[len(warm) // 2]
    flops = llama_step_flops(llama, REAL_SHAPES, seq, batch=batch)["step"]
    full = llama_step_flops({**llama, "num_hidden_layers": 32}, REAL_SHAPES, seq, batch=batch)["step"]
    out = {
        "llama": {
            k: llama[k] for k in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")
        },
        "steps": steps,
        "batch": batch,
        "tokens": seq,
        "dtype": "bf16 autocast" if device.type == "cuda" else "fp32",
        "step_ms": step_s * 1000,
        "samples_per_s": batch / step_s,
        "tflops_per_s": flops / step_s / 1e12,
        "mfu": flops / step_s / (peak_tflops * 1e12) if device.type == "cuda" else None,
        "first_loss": losses[0],
        "last_loss": losses[-1],
        "finite": all(map(lambda x: x == x and abs(x) < float("inf"), losses)),
        # the step time of Llama-2-7B's 32 layers at this measured FLOP rate, per sample
        "step_ms_per_sample_at_32_layers": step_s * full / flops * 1000 / batch,
    }
    if device.type == "cuda":
        out["peak_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cpu", action="store_true", help="reduced sizes on the CPU (what CI runs)")
    p.add_argument("--layers", type=int, default=4, help="LLaMA layers in the training check (default: 4)")
    p.add_argument("--steps", type=int, help="training steps (default: 50; 5 with --cpu)")
    p.add_argument("--batch-size", type=int, default=1, help="training batch (default: 1)")
    p.add_argument("--tokens", type=int, default=400, help="training sequence length (default: 400)")
    p.add_argument("--repeats", type=int, help="encoder timing repeats (default: 10; 1 with --cpu)")
    p.add_argument("--peak-tflops", type=float, default=H100_BF16_TFLOPS, help="the card's dense bf16 TFLOP/s")
    p.add_argument("--loader-n", type=int, help="samples in the loader check (default: 64; 16 with --cpu)")
    p.add_argument("--out", help="JSON file (default: benchmarks/results/gpu_check.json, _cpu.json with --cpu)")
    args = p.parse_args(argv)
    from featstore.extract.encode import quiet_transformers

    quiet_transformers()
    gpu = not args.cpu and torch.cuda.is_available()
    if not args.cpu and not gpu:
        p.error("no CUDA device here: run with --cpu for the reduced CPU check")
    device = torch.device("cuda:0" if gpu else "cpu")
    out_path = Path(args.out or REPO / "benchmarks/results" / ("gpu_check.json" if gpu else "gpu_check_cpu.json"))
    result: dict[str, Any] = {
        "date": datetime.date.today().isoformat(),
        "command": "python benchmarks/gpu_check.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "gpu": torch.cuda.get_device_name(0) if gpu else None,
            "torch": torch.__version__,
            "cuda": torch.version.cuda,
        },
        "mode": "gpu" if gpu else "cpu",
    }
    failed = []

    def run(name: str, fn) -> None:
        t0 = time.perf_counter()
        try:
            result[name] = fn()
        except Exception as e:  # recorded, and the next check runs
            result[name] = {"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()[-3000:]}
            failed.append(name)
        result[name]["seconds"] = time.perf_counter() - t0
        print(f"{name}: {json.dumps({k: v for k, v in result[name].items() if k != 'traceback'})[:600]}", flush=True)

    cpu = not gpu
    run("encoders", lambda: check_encoders(device, cpu, args.repeats or (1 if cpu else 10)))
    run("actors", lambda: check_actor_devices(gpu))
    run(
        "training",
        lambda: check_training(
            device, cpu, args.layers, args.steps or (5 if cpu else 50), args.batch_size, args.tokens, args.peak_tflops
        ),
    )

    def loader() -> dict[str, Any]:
        import bench_loader

        # on the CPU the measured step says nothing of a GPU's: the loader runs at the H100 figure there
        step = 27.0 if cpu else result.get("training", {}).get("step_ms_per_sample_at_32_layers") or 27.0
        r = bench_loader.run(
            n=args.loader_n or (16 if cpu else 64),
            step_ms=step,
            repeats=1 if cpu else 3,
            workers=(0, 2) if cpu else (0, 2, 4),
            kinds=("shards", "zarr"),
        )
        return {"step_ms": step, **r}

    run("loader", loader)
    if "encoders" not in failed:
        # fp16 on a GPU must track fp32 closely; the CPU's bfloat16 (8-bit mantissa) less so
        floor = 0.999 if gpu else 0.9
        bad = [s for s, r in result["encoders"].items() if isinstance(r, dict) and not r["cosine"] > floor]
        if bad:
            failed.append(f"encoders low cosine: {bad}")
    if "actors" not in failed and not result["actors"]["ok"]:
        failed.append("actors: device does not match the GPU Ray assigned")
    if "training" not in failed and not result["training"]["finite"]:
        failed.append("training: non-finite loss")
    result["failed"] = failed
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=out_path.parent, delete=False, suffix=".partial") as f:
        json.dump(result, f, indent=2)
    os.replace(f.name, out_path)
    print(f"wrote {out_path}; failed: {failed or 'none'}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
