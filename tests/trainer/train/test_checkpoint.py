"""Checkpoints: peft loads the adapter, every file loads with weights_only, the state holds the data
position and spec ids; a resume or an init on a cache with other spec ids is refused naming both; a save
that dies before its rename leaves the previous checkpoint as the newest, and resuming from it gives the
same losses."""

from __future__ import annotations

import json
import os
import shutil

import pytest
import torch

from tests.trainer.conftest import make_cache
from trainer.train import checkpoint as ckpt
from trainer.train.config import TrainConfig
from trainer.train.recipe import TrainRecipe, resolve_resume


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


class _KilledBeforeRename(BaseException):
    """Stands for the process dying between writing a checkpoint's temporary folder and renaming it."""


def _losses(out) -> list[tuple[int, float]]:
    return [(r["step"], r["loss"]) for r in map(json.loads, (out / "losses.jsonl").read_text().splitlines())]


def test_a_save_killed_before_its_rename_leaves_the_previous_checkpoint(cache, tiny_llm, tmp_path, monkeypatch):
    out = tmp_path / "run"
    cfg = _cfg(cache[1], tiny_llm, out, max_steps=4, checkpoint_every=2, keep_checkpoints=0, resume="auto")
    root = out / "checkpoints"
    replace = os.replace

    def die_at_step_4(src, dst):
        if os.path.basename(dst) == ckpt.checkpoint_name(4):
            raise _KilledBeforeRename(dst)
        replace(src, dst)

    monkeypatch.setattr(ckpt.os, "replace", die_at_step_4)
    recipe = TrainRecipe(cfg)
    recipe.setup(resolve_resume(cfg))
    with pytest.raises(_KilledBeforeRename):
        recipe.train()  # steps 1-4 run, step 2 is saved, the save of step 4 dies before its rename
    monkeypatch.undo()
    reference = _losses(out)
    assert [s for s, _ in reference] == [1, 2, 3, 4] and len({v for _, v in reference}) == 4
    # The temporary folder was written in full, state file included, and is not taken for a checkpoint.
    (tmp,) = [p for p in root.iterdir() if p.name.startswith(f".{ckpt.checkpoint_name(4)}")]
    assert {p.name for p in tmp.iterdir()} >= {"adapter", "projector.pt", "optimizer.pt", ckpt.STATE_FILE}
    assert json.loads((tmp / ckpt.STATE_FILE).read_text())["step"] == 4
    # A folder of a checkpoint's name without its state file (a copy cut short) is not one either.
    half = root / ckpt.checkpoint_name(6)
    shutil.copytree(tmp, half, ignore=shutil.ignore_patterns(ckpt.STATE_FILE))
    assert sorted(p.name for p in root.iterdir() if not p.name.startswith(".")) == [
        ckpt.checkpoint_name(2),
        ckpt.checkpoint_name(6),
    ]
    with pytest.raises(FileNotFoundError, match=ckpt.checkpoint_name(6)):
        resolve_resume(_cfg(cache[1], tiny_llm, out, resume=str(half)))
    shutil.rmtree(half)

    found = resolve_resume(cfg)
    assert found == root / ckpt.checkpoint_name(2)
    resumed = TrainRecipe(cfg)
    resumed.setup(found)
    assert resumed.step == 2
    assert resumed.train()["checkpoint"] == str(root / ckpt.checkpoint_name(4))
    again = _losses(out)[len(reference) :]
    assert [s for s, _ in again] == [3, 4]
    # the same loss curve from step 2 (the losses move by ~1e-2 a step)
    assert [v for _, v in again] == pytest.approx([v for _, v in reference[2:]], abs=1e-6, rel=0)
    assert ckpt.read_state(root / ckpt.checkpoint_name(4))["step"] == 4
