"""Shared fixtures: the tiny LLaMA folder, and a small feature cache (Zarr store + shards) of tiny shapes."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from featstore import FeatureSpec, FeatureStore, export_wds
from trainer.model.tiny import build_tiny_llm

TINY_SHAPES = {"global": (1025, 32), "local": (32,), "temporal": (32,), "audio": (32,)}
LABELS = ("neutral", "angry", "happy", "sad", "worried", "surprise", "fear", "contempt", "doubt")
CACHE_N = 8


def annotation(i: int) -> dict:
    """Demo-like MERR annotation of sample i (what featstore's manifest keeps)."""
    label = LABELS[i % len(LABELS)]
    return {
        "label": label,
        "transcript": f"Sentence number {i} said with {label} feeling",
        "caption": f"A person shows a {label} face and speaks in a {label} tone.",
        "reasoning": f"The face, the tone and the words of clip {i} point to {label}.",
        "video": f"clips/demo_{i:04d}.mp4",
    }


def make_cache(root, n: int = CACHE_N, weights: str = "w0", maxcount: int = 2):
    """A store with the four slots filled with seeded random features, exported to shards.

    Returns:
        (store path, shards path, {slot: spec id}).
    """
    store = FeatureStore.create(root / "store.zarr")
    ids = [f"demo_{i:04d}" for i in range(n)]
    store.add_samples(ids, [hashlib.sha256(i.encode()).hexdigest() for i in ids], [annotation(i) for i in range(n)])
    rng = np.random.default_rng(0)
    spec_ids = {}
    for slot, shape in TINY_SHAPES.items():
        spec = FeatureSpec(name=slot, encoder="TestEncoder", weights=weights, shape=shape, dtype="float16")
        feat = store.add_spec(spec, unit_size=4)
        for unit in range(feat.num_units):
            a, b = feat.unit_bounds(unit)
            feat.write_unit(unit, rng.standard_normal((b - a, *shape)).astype(np.float16))
        spec_ids[slot] = spec.id
    export_wds(FeatureStore.open(root / "store.zarr"), str(root / "shards"), maxcount=maxcount)
    return root / "store.zarr", root / "shards", spec_ids


@pytest.fixture(scope="session")
def tiny_llm(tmp_path_factory):
    """Folder of the tiny LLaMA and its tokenizer, built once per session."""
    return build_tiny_llm(tmp_path_factory.mktemp("tiny-llama") / "llama")


@pytest.fixture(scope="session")
def tokenizer(tiny_llm):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_llm)


@pytest.fixture(scope="session")
def cache(tmp_path_factory):
    """(store, shards, spec ids) of an 8-sample cache in 4 shards."""
    return make_cache(tmp_path_factory.mktemp("cache"))


def make_checkpoint(store, out_dir, tiny_dir, expect, tasks: str = "emotion,reason"):
    """An untrained (step 0) checkpoint on ``store``, saved by the training recipe itself."""
    from trainer.train.config import TrainConfig
    from trainer.train.recipe import TrainRecipe

    cfg = TrainConfig(
        cache="zarr",
        store=str(store),
        tiny_dir=str(tiny_dir),
        out_dir=str(out_dir),
        expect=expect,
        progress=False,
        resume="never",
        tasks=tasks,
        shuffle_buffer=0,
    )
    recipe = TrainRecipe(cfg)
    recipe.setup()
    return recipe.save_checkpoint()


@pytest.fixture(scope="session")
def demo_tree(tmp_path_factory, tiny_llm):
    """A folder laid out as the demo leaves it: demo_out/data (3 real clips), demo_out/store.zarr (filled by
    featstore's tiny encoders called directly), demo_out/train/checkpoints/step-00000000.

    Returns:
        (the folder holding demo_out, {slot: spec id}).
    """
    from featstore.demo import make_demo_dataset
    from featstore.encoders import build_tiny_checkpoints, load_encoders
    from featstore.manifest import load_manifest
    from featstore.media.clip import DecodeConfig, collate, decode_clip
    from trainer.data.live import ENCODER_TINY_DIR
    from trainer.model.projector import FEATURE_SLOTS

    root = tmp_path_factory.mktemp("demo-tree")
    out = root / "demo_out"
    data = make_demo_dataset(out / "data", n=3, seconds=1.0, audio_source="synth")
    manifest = load_manifest(data, format="merr")
    store = FeatureStore.create(out / "store.zarr")
    store.add_manifest(manifest)
    decode = DecodeConfig()
    build_tiny_checkpoints(ENCODER_TINY_DIR)
    options = {
        s: {"upstream": decode.upstream(s), **({} if s == "audio" else {"clips_per_forward": 1})} for s in FEATURE_SLOTS
    }
    encoders = load_encoders("tiny", list(FEATURE_SLOTS), tiny_dir=ENCODER_TINY_DIR, options=options)
    clips = [decode_clip(s, data, list(FEATURE_SLOTS), decode) for s in manifest.usable]
    for slot, enc in encoders.items():
        _, inputs = collate(clips, slot)
        store.add_spec(enc.spec, unit_size=4).write_unit(0, enc(inputs)[slot])
    ids = {s: e.spec.id for s, e in encoders.items()}
    make_checkpoint(out / "store.zarr", out / "train", tiny_llm, ids)
    return root, ids
