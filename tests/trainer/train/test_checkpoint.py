"""Checkpoints: peft loads the adapter, every file loads with weights_only, the state holds the data
position and spec ids; a resume or an init on a cache with other spec ids is refused naming both."""

from __future__ import annotations

import json

import pytest
import torch

from tests.trainer.conftest import make_cache
from trainer.train.config import TrainConfig
from trainer.train.recipe import TrainRecipe


def _cfg(shards, tiny_llm, out, **kw):
    base = dict(
        shards=str(shards),
        tiny_dir=str(tiny_llm),
        out_dir=str(out),
        max_steps=2,
        batch_size=2,
        shuffle_buffer=0,
        progress=False,
        lr=1e-3,
        warmup_steps=1,
    )
    return TrainConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def trained(cache, tiny_llm, tmp_path_factory):
    out = tmp_path_factory.mktemp("ckpt-run")
    recipe = TrainRecipe(_cfg(cache[1], tiny_llm, out))
    recipe.setup()
    summary = recipe.train()
    return recipe, summary


def test_peft_loads_the_adapter(trained, tiny_llm):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    recipe, summary = trained
    base = AutoModelForCausalLM.from_pretrained(tiny_llm)
    loaded = PeftModel.from_pretrained(base, f"{summary['checkpoint']}/adapter").eval()
    ours = {n: p for n, p in recipe.model.llm.named_parameters() if "lora_" in n}
    theirs = dict(loaded.named_parameters())
    assert ours and all(torch.equal(p.detach(), theirs[n].detach()) for n, p in ours.items())
    assert any(p.abs().sum() > 0 for n, p in ours.items() if "lora_B" in n)  # trained away from B = 0
    embeds = torch.randn(1, 5, base.config.hidden_size)
    recipe.model.eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(inputs_embeds=embeds).logits, recipe.model.llm(inputs_embeds=embeds).logits)


def test_checkpoint_contents(trained, cache):
    recipe, summary = trained
    folder = summary["checkpoint"]
    state = json.loads(open(f"{folder}/state.json").read())
    assert state["step"] == 2 and state["spec_ids"] == cache[2]
    assert state["data"] == {
        "epoch": 0,
        "batches_in_epoch": 2,
        "samples_in_epoch": 4,
        "loader_workers": 0,
        "source": str(cache[1]),
    }
    assert TrainConfig.from_dict(state["config"]) == recipe.cfg
    for name in ("projector.pt", "optimizer.pt", "scheduler.pt", "rng-rank0.pt"):
        torch.load(f"{folder}/{name}", weights_only=True)  # no pickled objects
    proj = torch.load(f"{folder}/projector.pt", weights_only=True)
    assert torch.equal(proj["patch.weight"], recipe.model.projector.patch.weight.detach())


def test_resume_on_another_cache_is_refused(trained, tiny_llm, tmp_path):
    recipe, summary = trained
    _, other, other_ids = make_cache(tmp_path, weights="w1")
    cfg = _cfg(other, tiny_llm, tmp_path / "run", max_steps=4)
    with pytest.raises(Exception) as err:  # featstore's SpecMismatchError, through the trainer
        TrainRecipe(cfg).setup(summary["checkpoint"])
    assert recipe.info.spec_ids["audio"] in str(err.value) and other_ids["audio"] in str(err.value)
    with pytest.raises(ValueError) as err:
        TrainRecipe(_cfg(other, tiny_llm, tmp_path / "init", init_from=summary["checkpoint"])).setup()
    assert recipe.info.spec_ids["audio"] in str(err.value) and other_ids["audio"] in str(err.value)


def test_init_from_loads_weights_not_optimizer(trained, cache, tiny_llm, tmp_path):
    recipe, summary = trained
    stage2 = TrainRecipe(
        _cfg(
            cache[1],
            tiny_llm,
            tmp_path,
            init_from=summary["checkpoint"],
            schedule="constant",
            tasks="reason_v2",
            lr=1e-6,
        )
    )
    stage2.setup()
    assert torch.equal(stage2.model.projector.cls.weight, recipe.model.projector.cls.weight)
    trained = {n: p for n, p in recipe.model.named_parameters() if "lora_" in n}
    loaded = {n: p for n, p in stage2.model.named_parameters() if "lora_" in n}
    assert trained and set(loaded) == set(trained)
    for name, p in trained.items():  # every LoRA matrix, A and B of q_proj and v_proj in every layer
        assert torch.equal(loaded[name], p), name
    # lora_B starts at zero: after training they are not, so a load that skipped them would be seen
    assert all(p.abs().sum() > 0 for n, p in trained.items() if "lora_B" in n)
    for name, p in stage2.model.projector.named_parameters():
        assert torch.equal(p, dict(recipe.model.projector.named_parameters())[name]), name
    assert stage2.step == 0 and not stage2.optimizer.state
    assert set(stage2.scheduler.get_last_lr()) == {1e-6}
