"""--grad-accum k with batch B makes the same optimizer steps as batch k*B: the same gradients at each
step, hence the same per-step losses and weights.

Each micro-batch's loss is a mean over its answer tokens and the step averages the k micro-batch means
(as the original's runner divides by accum_grad_iters), so the equality holds when the micro-batches
carry the same number of answer tokens: --max-txt-len 2 makes every answer here one word piece and
</s>. LoRA dropout is off (k masks of B rows are not one mask of k*B rows) and so is gradient clipping
(it would scale a wrong gradient back to the same norm). AdamW barely sees a gradient's scale, so the
gradients themselves are compared, as the optimizer receives them."""

from __future__ import annotations

import json

import pytest
import torch

from trainer.train.config import TrainConfig
from trainer.train.recipe import TrainRecipe

STEPS = 3


def _train(shards, tiny_llm, out, batch_size: int, grad_accum: int):
    """(per-step losses, per-step gradients of the trainable parameters, final trainable weights)."""
    cfg = TrainConfig(
        shards=str(shards),
        tiny_dir=str(tiny_llm),
        out_dir=str(out),
        batch_size=batch_size,
        grad_accum=grad_accum,
        epochs=2,
        max_steps=STEPS,
        tasks="emotion",
        shuffle_buffer=0,
        max_txt_len=2,
        lora_dropout=0.0,
        max_grad_norm=0.0,
        lr=1e-3,
        warmup_steps=1,
        resume="never",
        progress=False,
    )
    recipe = TrainRecipe(cfg)
    recipe.setup()
    names = {id(p): n for n, p in recipe.model.named_parameters() if p.requires_grad}
    grads: list[dict[str, torch.Tensor]] = []

    def record(optimizer, args, kwargs):
        grads.append({names[id(p)]: p.grad.clone() for g in optimizer.param_groups for p in g["params"]})

    recipe.optimizer.register_step_pre_hook(record)
    recipe.train()
    losses = [json.loads(line)["loss"] for line in open(out / "losses.jsonl")]
    weights = {n: p.detach().clone() for n, p in recipe.model.named_parameters() if p.requires_grad}
    return losses, grads, weights


def _close(got: torch.Tensor, want: torch.Tensor, what: str) -> None:
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-7, msg=lambda m: f"{what}: {m}")


@pytest.fixture(scope="module")
def big_batch(cache, tiny_llm, tmp_path_factory):
    """Batch 4, no accumulation: the reference."""
    return _train(cache[1], tiny_llm, tmp_path_factory.mktemp("batch4"), 4, 1)


@pytest.mark.parametrize("batch_size,grad_accum", [(2, 2), (1, 4)])
def test_grad_accum_equals_the_larger_batch(big_batch, cache, tiny_llm, tmp_path, batch_size, grad_accum):
    losses, grads, weights = _train(cache[1], tiny_llm, tmp_path, batch_size, grad_accum)
    ref_losses, ref_grads, ref_weights = big_batch
    assert len(losses) == len(ref_losses) == STEPS and len(set(ref_losses)) == STEPS
    assert losses == pytest.approx(ref_losses, abs=1e-6, rel=0)  # float32 sums in another order
    assert len(grads) == len(ref_grads) == STEPS
    for step, (got, ref) in enumerate(zip(grads, ref_grads), 1):
        assert got.keys() == ref.keys()
        for name in ref:  # a gradient k times too large (accumulated without dividing by k) is far outside
            _close(got[name], ref[name], f"step {step} gradient of {name}")
    for name in ref_weights:
        _close(weights[name], ref_weights[name], f"final {name}")
