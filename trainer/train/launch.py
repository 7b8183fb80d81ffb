"""Where a training run goes: this process (``TrainRecipe``), or N Ray Train workers (``distributed``)."""

from __future__ import annotations

from typing import Any

from trainer.train.config import TrainConfig

__all__ = ["main"]


def main(cfg: TrainConfig) -> dict[str, Any]:
    """Train as ``cfg`` says: in this process, or on ``cfg.num_workers`` Ray Train workers.

    Returns:
        The run's summary (steps, losses, checkpoint), as ``TrainRecipe.train`` gives it.
    """
    if cfg.num_workers > 0:
        from trainer.train.distributed import run_ray  # Ray only when asked for

        return run_ray(cfg)
    from trainer.train.recipe import TrainRecipe, resolve_resume

    recipe = TrainRecipe(cfg)
    recipe.setup(resolve_resume(cfg))
    return recipe.train()
