"""The model: projector layout against a hand-written reference, prompt layout and loss mask,
generation prefix = training prefix, what is frozen."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.trainer.conftest import TINY_SHAPES
from trainer.data.cache import Collator, Example
from trainer.data.tasks import TASKS
from trainer.model.emotion_llama import build_model
from trainer.model.projector import FeatureProjector
from trainer.model.prompt import IGNORE_INDEX, tokenize_prompt


@pytest.fixture(scope="module")
def model(tiny_llm):
    torch.manual_seed(0)
    return build_model(str(tiny_llm), TINY_SHAPES).eval()


def _example(sample_id, transcript, task, answer, seed=0):
    rng = np.random.default_rng(seed)
    feats = {k: rng.standard_normal(v).astype(np.float16) for k, v in TINY_SHAPES.items()}
    return Example(sample_id, feats, transcript, task, TASKS[task].instructions[0], answer)


def test_projector_matches_reference():
    torch.manual_seed(0)
    proj = FeatureProjector({"global": (1 + 4 * 6, 5), "local": (3,), "temporal": (4,), "audio": (2,)}, hidden=7)
    feats = {
        "global": torch.randn(2, 25, 5),
        "local": torch.randn(2, 3),
        "temporal": torch.randn(2, 4),
        "audio": torch.randn(2, 2),
    }
    out = proj(feats)
    assert out.shape == (2, 6 + 4, 7) and proj.num_tokens == 10
    for b in range(2):
        g = feats["global"][b]
        for k in range(6):  # patch group k = tokens 1+4k .. 4+4k, concatenated in raster order
            ref = proj.patch.weight @ torch.cat([g[1 + 4 * k + j] for j in range(4)]) + proj.patch.bias
            torch.testing.assert_close(out[b, k], ref)
        for i, slot in enumerate(("local", "temporal", "audio")):
            lin = proj.vectors[slot]
            torch.testing.assert_close(out[b, 6 + i], lin.weight @ feats[slot][b] + lin.bias)
        torch.testing.assert_close(out[b, 9], proj.cls.weight @ g[0] + proj.cls.bias)


def test_projector_refuses_bad_shapes():
    with pytest.raises(ValueError, match=r"global feature shape \(1024, 32\)"):
        FeatureProjector({**TINY_SHAPES, "global": (1024, 32)}, 8)
    with pytest.raises(ValueError, match="lack slots \\['audio'\\]"):
        FeatureProjector({k: v for k, v in TINY_SHAPES.items() if k != "audio"}, 8)


def test_prompt_layout_and_loss_mask(tokenizer, model):
    coll = Collator(tokenizer, model.num_video_tokens, model.num_feature_tokens)
    batch = coll([_example("a", "Hello there", "emotion", "happy")])
    ids, mask, labels = batch["input_ids"][0], batch["feature_mask"][0], batch["labels"][0]
    slots = torch.nonzero(mask).flatten().tolist()
    assert len(slots) == 260 and ids[0].item() == tokenizer.bos_token_id
    # 256 consecutive slots right after "<video>", 4 right after "<feature>".
    assert tokenizer.decode(ids[1 : slots[0]]) == "[INST] <video>"
    assert slots[:256] == list(range(slots[0], slots[0] + 256))
    assert tokenizer.decode(ids[slots[255] + 1 : slots[256]]) == "</video> <feature>"
    assert slots[256:] == list(range(slots[256], slots[256] + 4))
    rest = tokenizer.decode(ids[slots[-1] + 1 :][labels[slots[-1] + 1 :] == IGNORE_INDEX])
    instruction = TASKS["emotion"].instructions[0]
    assert rest == f"</feature> The person in video says: Hello there. [emotion] {instruction} [/INST]"
    answer = labels[labels != IGNORE_INDEX].tolist()
    assert answer == tokenizer("happy", add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    assert torch.equal(ids[labels != IGNORE_INDEX], labels[labels != IGNORE_INDEX])  # labels sit on their tokens


def test_feature_tokens_are_spliced_in_order(tokenizer, model):
    coll = Collator(tokenizer, model.num_video_tokens, model.num_feature_tokens)
    batch = coll([_example("a", "Hi", "reason", "A calm face.")])
    with torch.no_grad():
        embeds = model.embed(batch)
        tokens = model.projector(batch["features"])
        plain = model.llm.get_input_embeddings()(batch["input_ids"])
    mask = batch["feature_mask"][0]
    torch.testing.assert_close(embeds[0, mask], tokens[0], rtol=0, atol=0)
    torch.testing.assert_close(embeds[0, ~mask], plain[0, ~mask], rtol=0, atol=0)


def test_generation_prefix_embeds_like_training_prefix(tokenizer, model):
    coll = Collator(tokenizer, model.num_video_tokens, model.num_feature_tokens)
    batch = [
        _example("a", "Hello there, how are you", "emotion", "happy", 1),
        _example("b", "Hi", "reason_v2", "The face and the tone point to sad.", 2),
    ]
    train, gen = coll(batch), coll(batch, generation=True)
    with torch.no_grad():
        e_train, e_gen = model.embed(train), model.embed(gen)
    for row, ex in enumerate(batch):
        n = sum(len(p) for p in tokenize_prompt(tokenizer, ex.transcript, ex.task, ex.instruction).pieces) + 260
        prefix = (train["labels"][row] == IGNORE_INDEX) & (train["attention_mask"][row] == 1)
        assert int(prefix.sum()) == n == int(gen["attention_mask"][row].sum())
        assert gen["attention_mask"][row, -1] == 1  # left padded: every prompt ends at the last column
        torch.testing.assert_close(e_gen[row, gen["attention_mask"][row] == 1], e_train[row, :n], rtol=0, atol=0)
        assert torch.equal(gen["feature_mask"][row, -n:], train["feature_mask"][row, :n])
    out = model.generate(gen, max_new_tokens=2)
    assert out.shape[0] == 2


def test_only_lora_and_projector_train(model):
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n or n.startswith("projector.") for n in trainable)
    assert any("q_proj.lora_A" in n for n in trainable) and any("v_proj.lora_B" in n for n in trainable)
    assert not any("k_proj.lora" in n for n in trainable)
    assert all(p.requires_grad for p in model.projector.parameters())


def test_loss_is_on_answer_only(tokenizer, model):
    coll = Collator(tokenizer, model.num_video_tokens, model.num_feature_tokens)
    a, b = coll([_example("a", "Hi", "emotion", "happy")]), coll([_example("a", "Bye now", "emotion", "happy")])
    with torch.no_grad():
        logits = model(a).logits
        ref = torch.nn.functional.cross_entropy(logits[0, :-1], a["labels"][0, 1:], ignore_index=IGNORE_INDEX)
        torch.testing.assert_close(model(a).loss, ref)
        assert model(a).loss != model(b).loss  # the prompt conditions the answer
