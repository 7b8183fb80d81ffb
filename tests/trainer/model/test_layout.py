"""Feature layouts: Emotion-LLaMA's projector unchanged (its initial weights and tokens against a reference
built from nn.Linear by hand in the original's order), the other layouts' token order and counts by hand,
bad shapes and layouts named, and a tiny training run of each new layout that checkpoints and resumes on
the same losses."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch
from torch import nn

from featstore import FeatureSpec, FeatureStore, export_wds
from tests.trainer.conftest import annotation
from trainer.model.layout import LAYOUTS, FeatureLayout, get_layout
from trainer.model.projector import FeatureProjector

H = 16
EMOTION_SHAPES = {"global": (1 + 4 * 3, 8), "local": (5,), "temporal": (6,), "audio": (7,)}
AFFECTGPT_SHAPES = {"frames": (8, 12), "audio": (32,)}
V2_SHAPES = {"global": (1025, 32), "whisper": (32,)}


def _batch(shapes, b=2, seed=1):
    g = torch.Generator().manual_seed(seed)
    return {s: torch.randn(b, *shape, generator=g) for s, shape in shapes.items()}


def test_emotion_llama_projector_is_the_originals_five_linears_in_order():
    torch.manual_seed(0)
    proj = FeatureProjector(EMOTION_SHAPES, H)
    torch.manual_seed(0)  # the reference: the five Linears created in the original's order
    patch, cls = nn.Linear(4 * 8, H), nn.Linear(8, H)
    local, temporal, audio = nn.Linear(5, H), nn.Linear(6, H), nn.Linear(7, H)
    for ours, ref in ((proj.patch, patch), (proj.cls, cls), (proj.vectors["local"], local)):
        assert torch.equal(ours.weight, ref.weight) and torch.equal(ours.bias, ref.bias)
    assert torch.equal(proj.vectors["audio"].weight, audio.weight)
    assert set(proj.state_dict()) == {
        f"{m}.{p}"
        for m in ("patch", "cls", "vectors.local", "vectors.temporal", "vectors.audio")
        for p in ("weight", "bias")
    }
    x = _batch(EMOTION_SHAPES)
    glob = x["global"]
    want = torch.cat(
        [
            patch(glob[:, 1:].reshape(2, 3, 32)),
            local(x["local"]).unsqueeze(1),
            temporal(x["temporal"]).unsqueeze(1),
            audio(x["audio"]).unsqueeze(1),
            cls(glob[:, 0]).unsqueeze(1),
        ],
        dim=1,
    )
    assert torch.equal(proj(x), want)
    assert (proj.num_video_tokens, proj.num_feature_tokens) == (3, 4)


def test_affectgpt_layout_gives_a_token_a_frame_then_audio():
    proj = FeatureProjector(AFFECTGPT_SHAPES, H, get_layout("affectgpt"))
    x = _batch(AFFECTGPT_SHAPES)
    out = proj(x)
    frames, audio = proj.frames["frames"], proj.vectors["audio"]
    assert out.shape == (2, 9, H) and (proj.num_video_tokens, proj.num_feature_tokens) == (8, 1)
    torch.testing.assert_close(out[:, :8], x["frames"] @ frames.weight.T + frames.bias, rtol=0, atol=1e-6)
    torch.testing.assert_close(out[:, 8], x["audio"] @ audio.weight.T + audio.bias, rtol=0, atol=1e-6)
    assert not hasattr(proj, "patch")


def test_emotion_llama_v2_layout_puts_whisper_before_cls():
    proj = FeatureProjector(V2_SHAPES, H, get_layout("emotion-llama-v2"))
    x = _batch(V2_SHAPES)
    out = proj(x)
    assert (proj.num_video_tokens, proj.num_feature_tokens) == (256, 2)
    w = proj.vectors["whisper"]
    torch.testing.assert_close(out[:, 256], x["whisper"] @ w.weight.T + w.bias, rtol=0, atol=1e-6)
    torch.testing.assert_close(out[:, 257], x["global"][:, 0] @ proj.cls.weight.T + proj.cls.bias, rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    "shapes, layout, match",
    [
        ({"frames": (8, 12)}, "affectgpt", r"lack slots \['audio'\]; the affectgpt layout needs"),
        ({"frames": (12,), "audio": (4,)}, "affectgpt", r"frames feature shape \(12,\) must be \[N, D\]"),
        ({"global": (1024, 8), "whisper": (4,)}, "emotion-llama-v2", r"must be \[1 \+ 4k, D\]"),
    ],
)
def test_bad_shapes_are_named(shapes, layout, match):
    with pytest.raises(ValueError, match=match):
        FeatureProjector(shapes, H, get_layout(layout))


def test_bad_layouts_are_named():
    with pytest.raises(ValueError, match="unknown feature layout 'affect'"):
        get_layout("affect")
    with pytest.raises(ValueError, match="cls of 'global' needs"):
        FeatureLayout("x", video=(), feature=(("global", "cls"),))
    with pytest.raises(ValueError, match="kinds"):
        FeatureLayout("x", video=(("a", "tubes"),), feature=())
    assert LAYOUTS["emotion-llama"].slots == ("global", "local", "temporal", "audio")


def _store(root, shapes, n=6):
    store = FeatureStore.create(root / "store.zarr")
    ids = [f"demo_{i:04d}" for i in range(n)]
    store.add_samples(ids, [hashlib.sha256(i.encode()).hexdigest() for i in ids], [annotation(i) for i in range(n)])
    rng = np.random.default_rng(0)
    for slot, shape in shapes.items():
        feat = store.add_spec(
            FeatureSpec(name=slot, encoder="TestEncoder", weights="w", shape=shape, dtype="float16"), 2
        )
        for unit in range(feat.num_units):
            a, b = feat.unit_bounds(unit)
            feat.write_unit(unit, rng.standard_normal((b - a, *shape)).astype(np.float16))
    export_wds(FeatureStore.open(root / "store.zarr"), str(root / "shards"), maxcount=2)
    return root / "shards"


def _losses(out):
    return {r["step"]: r["loss"] for r in map(json.loads, (out / "losses.jsonl").read_text().splitlines())}


@pytest.mark.parametrize("layout, shapes", [("affectgpt", AFFECTGPT_SHAPES), ("emotion-llama-v2", V2_SHAPES)])
def test_new_layout_trains_checkpoints_and_resumes_on_the_same_losses(layout, shapes, tiny_llm, tmp_path):
    from trainer.train.config import TrainConfig
    from trainer.train.launch import main as train

    shards = _store(tmp_path, shapes)
    common = dict(
        shards=str(shards), tiny_dir=str(tiny_llm), layout=layout, batch_size=2, tasks="emotion", lr=1e-3,
        warmup_steps=0, schedule="constant", shuffle_buffer=0, progress=False, checkpoint_every=2, keep_checkpoints=0,
        epochs=2,
    )  # fmt: skip
    whole = tmp_path / "whole"  # max_steps differs between the runs below: a constant lr (cosine follows max_steps)
    train(TrainConfig(out_dir=str(whole), max_steps=4, resume="never", **common))
    part = tmp_path / "part"
    train(TrainConfig(out_dir=str(part), max_steps=2, resume="never", **common))
    train(TrainConfig(out_dir=str(part), max_steps=4, resume="auto", **common))  # from step 2's checkpoint
    a, b = _losses(whole), _losses(part)
    assert sorted(a) == sorted(b) == [1, 2, 3, 4]
    np.testing.assert_allclose([b[s] for s in (3, 4)], [a[s] for s in (3, 4)], rtol=0, atol=1e-6)
    state = json.loads(next((part / "checkpoints").glob("step-*4/state.json")).read_text())
    assert state["config"]["layout"] == layout and set(state["spec_ids"]) == set(shapes)
