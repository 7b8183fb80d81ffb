"""The original Emotion-LLaMA / MiniGPT-v2 checkpoints imported into our model.

The reference is the original's module layout (tests/reference/minigpt_v2.py, written from
minigpt_v2.py and the runner's save) with random projectors and LoRA matrices, saved as the runner
saves it, in both peft namings. The imported model's logits on a fixed batch must equal those of
the reference run on the same prompt: its ``encode_img`` tokens spliced where our prompt puts
features, fed to its own peft LLaMA. Then the import as a user runs it: the command on the demo
store, ``jobs/evaluate.py`` and ``jobs/predict.py`` from its folder, and ``--init-from`` a .pth.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.reference.minigpt_v2 import OriginalMiniGPTv2, randomise
from tests.trainer.conftest import TINY_SHAPES
from trainer.data.cache import Collator, Example
from trainer.data.tasks import TASKS
from trainer.model.emotion_llama import build_model
from trainer.model.original import OriginalCheckpointError, load_original_into

REPO = Path(__file__).resolve().parents[3]
ENV = {**os.environ, "PYTHONWARNINGS": "ignore", "PYTHONPATH": str(REPO)}
VIS, FEAT = TINY_SHAPES["global"][1], TINY_SHAPES["local"][0]


def original_model(tiny_llm, seed=5, with_feature_projectors=True):
    from transformers import AutoModelForCausalLM

    llama = AutoModelForCausalLM.from_pretrained(tiny_llm, dtype=torch.float32)
    ref = OriginalMiniGPTv2(llama, VIS, FEAT, with_feature_projectors=with_feature_projectors)
    randomise(ref, seed)
    return ref.eval()


def batch(tokenizer, n=2):
    rng = np.random.default_rng(7)
    examples = []
    for i in range(n):
        feats = {k: rng.standard_normal(v).astype(np.float32) for k, v in TINY_SHAPES.items()}
        examples.append(Example(f"s{i}", feats, f"words {i}", "emotion", TASKS["emotion"].instructions[0], "happy"))
    return Collator(tokenizer, 256, 4)(examples)


def reference_logits(ref, b):
    """The original's path: encode_img's 260 tokens placed, in order, at the prompt's feature positions."""
    video = torch.stack([b["features"]["local"], b["features"]["temporal"], b["features"]["audio"]], dim=1)
    tokens = ref.encode_img(b["features"]["global"], video)
    embeds = ref.llama_model.get_input_embeddings()(b["input_ids"]).clone()
    for i in range(len(embeds)):
        embeds[i, b["feature_mask"][i]] = tokens[i]
    return ref.llama_model(inputs_embeds=embeds, attention_mask=b["attention_mask"]).logits


def our_logits(model, b):
    return model.llm(inputs_embeds=model.embed(b), attention_mask=b["attention_mask"]).logits


@pytest.fixture(scope="module")
def original_files(tiny_llm, tmp_path_factory):
    root = tmp_path_factory.mktemp("original")
    ref = original_model(tiny_llm)
    ref.save_like_runner(root / "new_peft.pth")
    ref.save_like_runner(root / "old_peft.pth", old_peft_names=True)
    base = original_model(tiny_llm, seed=9, with_feature_projectors=False)
    base.save_like_runner(root / "minigptv2_checkpoint.pth", old_peft_names=True)
    return root, ref, base


@pytest.mark.parametrize("name", ["new_peft.pth", "old_peft.pth"])
def test_imported_logits_equal_the_original_layouts(original_files, tiny_llm, tokenizer, name):
    root, ref, _ = original_files
    torch.manual_seed(0)
    model = build_model(str(tiny_llm), TINY_SHAPES).eval()
    b = batch(tokenizer)
    before = our_logits(model, b)
    report = load_original_into(model, root / name)
    with torch.no_grad():
        want, got = reference_logits(ref, b), our_logits(model, b)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(before, want, atol=1e-3)  # the import changed the answer
    assert report.left_at_init == [] and report.lora_rank == 64 and report.lora_tensors == 8
    assert report.lora_naming.startswith("peft 0.2" if name.startswith("old") else "peft >= 0.3")


def test_base_checkpoint_leaves_the_feature_projectors_at_init(original_files, tiny_llm):
    root, _, base = original_files
    torch.manual_seed(0)
    model = build_model(str(tiny_llm), TINY_SHAPES)
    init = {k: v.clone() for k, v in model.projector.state_dict().items()}
    with pytest.raises(OriginalCheckpointError, match="cls_tk_llama_proj.*--base"):
        load_original_into(model, root / "minigptv2_checkpoint.pth")
    allow = ("cls_tk_llama_proj", "feats_llama_proj1", "feats_llama_proj2", "feats_llama_proj3")
    report = load_original_into(model, root / "minigptv2_checkpoint.pth", allow_missing=allow)
    assert report.left_at_init == list(allow) and report.projectors == ["llama_proj"]
    state = model.projector.state_dict()
    torch.testing.assert_close(state["patch.weight"], base.llama_proj.weight)
    for key in ("cls.weight", "vectors.local.weight", "vectors.audio.bias"):
        torch.testing.assert_close(state[key], init[key])
    lora = dict(model.llm.named_parameters())
    ours = lora["base_model.model.model.layers.1.self_attn.v_proj.lora_B.default.weight"]
    torch.testing.assert_close(
        ours, base.llama_model.base_model.model.model.layers[1].self_attn.v_proj.lora_B.default.weight
    )


def _save_changed(src, dst, change):
    obj = torch.load(src, weights_only=True)
    change(obj["model"])
    torch.save(obj, dst)


def test_bad_files_are_named(original_files, tiny_llm, tmp_path):
    root, _, _ = original_files
    torch.manual_seed(0)
    model = build_model(str(tiny_llm), TINY_SHAPES)
    src = root / "old_peft.pth"
    cases = {
        "unknown": (
            lambda m: m.__setitem__("llama_model.lm_head.weight", torch.zeros(2)),
            "llama_model.lm_head.weight",
        ),
        "missing": (lambda m: m.pop("feats_llama_proj2.bias"), "projector weights missing: feats_llama_proj2"),
        "shape": (
            lambda m: m.__setitem__("cls_tk_llama_proj.weight", torch.zeros(3, 3)),
            r"vectors|cls.weight: file \[3, 3\], model \[64, 32\]",
        ),
        "lora": (
            lambda m: m.pop("llama_model.base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"),
            "missing 1 .*layers.0.self_attn.q_proj.lora_A.weight",
        ),
    }
    for name, (change, message) in cases.items():
        path = tmp_path / f"{name}.pth"
        _save_changed(src, path, change)
        with pytest.raises(OriginalCheckpointError, match=message):
            load_original_into(model, path)


def _run(*args, cwd, module=None, script=None):
    cmd = [sys.executable, "-m", module] if module else [sys.executable, str(REPO / "jobs" / script)]
    return subprocess.run([*cmd, *map(str, args)], cwd=cwd, env=ENV, capture_output=True, text=True, timeout=600)


def test_import_then_evaluate_predict_and_fine_tune(original_files, demo_tree, tiny_llm, tmp_path):
    """The user's path on the demo store: import the original file, evaluate, predict, fine-tune from it."""
    root, ref, _ = original_files
    demo, ids = demo_tree
    store = demo / "demo_out" / "store.zarr"
    shapes = {k: tuple(v) for k, v in json.loads(_info(store)).items()}
    # The demo's tiny encoders are narrower than the reference's file: build the original file at their width.
    from transformers import AutoModelForCausalLM

    llama = AutoModelForCausalLM.from_pretrained(tiny_llm, dtype=torch.float32)
    demo_ref = OriginalMiniGPTv2(llama, shapes["global"][1], shapes["local"][0])
    randomise(demo_ref, 11)
    original = tmp_path / "Emotion_LLaMA.pth"
    demo_ref.save_like_runner(original, old_peft_names=True)
    out = tmp_path / "imported"
    done = _run(
        original, out, "--llm", "tiny", "--tiny-dir", tiny_llm, "--store", store, "--json",
        cwd=tmp_path, module="trainer.train.import_original",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["spec_ids"] == ids and report["kind"] == "emotion-llama" and report["left_at_init"] == []
    state = json.loads((out / "state.json").read_text())
    assert state["imported_from"]["sha256"] and not (out / "optimizer.pt").exists()
    ev = _run("--checkpoint", out, "--store", store, "--max-new-tokens", 2, "--out-dir", tmp_path / "eval",
              "--no-progress", cwd=tmp_path, script="evaluate.py")  # fmt: skip
    assert ev.returncode == 0, ev.stderr
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["n"] == 3
    clip = demo / "demo_out" / "data" / "clips" / "demo_0001.mp4"
    pr = _run(clip, "--checkpoint", out, "--json", "--max-new-tokens", 2, cwd=demo, script="predict.py")
    assert pr.returncode == 0, pr.stderr
    assert json.loads(pr.stdout)["spec_ids"] == ids
    # Fine-tune from the .pth directly and from the imported folder: the same starting weights, so the
    # same first loss.
    losses = []
    for init in (original, out):
        run = tmp_path / f"ft-{Path(init).name}"
        tr = _run("--cache", "zarr", "--store", store, "--tiny-dir", tiny_llm, "--init-from", init, "--max-steps", 1,
                  "--out-dir", run, "--no-progress", "--shuffle-buffer", 0, cwd=tmp_path, script="train.py")  # fmt: skip
        assert tr.returncode == 0, tr.stderr
        losses.append(json.loads((run / "losses.jsonl").read_text().splitlines()[0])["loss"])
    assert losses[0] == pytest.approx(losses[1], abs=1e-6)


def _info(store) -> str:
    from featstore.store import FeatureStore

    return json.dumps({f.spec.name: list(f.spec.shape) for f in FeatureStore.open(store).features()})
