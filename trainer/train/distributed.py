"""The same recipe under Ray Train: ``TorchTrainer`` with N workers (DDP: gloo on CPU, NCCL on GPU).

Each worker runs ``TrainRecipe``; featstore's ShardDataset gives each rank its
own shards (split by torch.distributed rank), so every sample is read once an
epoch across the workers. Checkpoints go through ``ray.train.report``: rank 0
reports weights, optimizer, schedule and state, every rank its RNG, all into
one checkpoint folder under ``OUT_DIR/ray/train``. A new run with ``--resume
auto`` continues from the newest of them; Ray's own restarts of failed workers
continue from ``ray.train.get_checkpoint()``.
"""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
from pathlib import Path
from typing import Any

from trainer.train import checkpoint as ckpt
from trainer.train.config import TrainConfig

__all__ = ["RAY_RUN_NAME", "absolute_paths", "ray_storage", "run_ray"]

RAY_RUN_NAME = "train"  # one name per out_dir: a rerun finds the earlier run's checkpoints


def ray_storage(cfg: TrainConfig) -> Path:
    """Where Ray Train keeps this run's checkpoints and results."""
    return Path(cfg.out_dir) / "ray"


def absolute_paths(cfg: TrainConfig) -> TrainConfig:
    """The config with local paths made absolute: workers may not share the driver's working directory."""

    def fix(value: str | None) -> str | None:
        return value if value is None or "://" in value else str(Path(value).resolve())

    changes = {k: fix(getattr(cfg, k)) for k in ("shards", "store", "out_dir", "tiny_dir", "init_from", "dataset_root")}
    if cfg.resume not in ("auto", "never"):
        changes["resume"] = fix(cfg.resume)
    return dataclasses.replace(cfg, **changes)


def _resume_path(cfg: TrainConfig) -> str | None:
    if cfg.resume == "never":
        return None
    if cfg.resume == "auto":
        found = ckpt.latest_checkpoint(ray_storage(cfg))
        return str(found) if found else None
    ckpt.read_state(cfg.resume)
    return cfg.resume


def _worker_loop(config: dict[str, Any]) -> None:
    """Body of each Ray Train worker: the recipe, publishing checkpoints through ray.train.report."""
    import ray.train
    import ray.train.torch

    from trainer.train.recipe import TrainRecipe

    cfg = TrainConfig.from_dict(config["cfg"])
    scratch = Path(tempfile.mkdtemp(prefix="trainer-ckpt-"))

    def publish(folder: Path, metrics: dict) -> None:
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(str(folder)))

    recipe = TrainRecipe(cfg, device=ray.train.torch.get_device(), publish=publish, checkpoint_root=scratch)
    restart = ray.train.get_checkpoint()  # set when Ray restarted this run after a failure
    try:
        if restart is not None:
            with restart.as_directory() as folder:
                recipe.setup(folder)
        elif config["resume"]:
            recipe.setup(config["resume"])
        else:
            recipe.setup()
        recipe.train()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def run_ray(cfg: TrainConfig) -> dict[str, Any]:
    """Train on ``cfg.num_workers`` Ray Train workers; return the same summary as a local run.

    Connects to ``cfg.ray_address`` (default: the cluster of ``ray job submit``, else a local Ray).
    """
    import ray
    from ray.train import CheckpointConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    cfg = absolute_paths(cfg)
    if not ray.is_initialized():
        ray.init(address=cfg.ray_address)
    resume = _resume_path(cfg)
    trainer = TorchTrainer(
        _worker_loop,
        train_loop_config={"cfg": cfg.to_dict(), "resume": resume},
        # One CPU per worker: the loop is one process; data decoding happens inside it.
        scaling_config=ScalingConfig(
            num_workers=cfg.num_workers,
            use_gpu=cfg.use_gpu,
            resources_per_worker={"CPU": 1, **({"GPU": 1} if cfg.use_gpu else {})},
        ),
        run_config=RunConfig(
            name=RAY_RUN_NAME,
            storage_path=str(ray_storage(cfg)),
            checkpoint_config=CheckpointConfig(num_to_keep=cfg.keep_checkpoints or None),
        ),
    )
    result = trainer.fit()
    state = ckpt.read_state(result.checkpoint.path) if result.checkpoint else {}
    out = Path(cfg.out_dir)
    return {
        "steps": state.get("step", 0),
        "epoch": state.get("data", {}).get("epoch", 0),
        "loss": float(result.metrics.get("loss", float("nan"))) if result.metrics else float("nan"),
        "checkpoint": result.checkpoint.path if result.checkpoint else None,
        "out_dir": str(out),
        "tensorboard": str(out / "tb"),
        "losses": str(out / "losses.jsonl"),
        "resumed_from": resume,
    }
