"""Shared fixtures: a real demo store with two specs, one sample failed in one of them."""

from __future__ import annotations

import numpy as np
import pytest

from featstore.demo import roundtrip
from featstore.demo.dataset import make_demo_dataset
from featstore.manifest import load_manifest
from featstore.spec import FeatureSpec
from featstore.store import FeatureStore
from tests.featstore.store import store_worker as w

DEMO_N = 6
TOKENS = FeatureSpec(name="tokens", encoder="TestEncoder", weights="w2", shape=(5, 8), dtype="float16")
FAILED_ID = "demo_0003"


def fill_tokens(store: FeatureStore) -> None:
    feat = store.add_spec(TOKENS, unit_size=4)
    for unit in feat.pending_units():
        a, b = feat.unit_bounds(unit)
        ids = feat.ids(a, b)
        fails = {FAILED_ID: ("decode_audio", "no audio stream")} if FAILED_ID in ids else {}
        feat.write_unit(unit, w.features(TOKENS, ids), failures=fails)


@pytest.fixture(scope="session")
def demo_store(tmp_path_factory):
    """(store path, manifest): demo clips, MERR annotations, `thumb` and `tokens` specs."""
    root = tmp_path_factory.mktemp("demo_store")
    data = make_demo_dataset(root / "data", n=DEMO_N)
    manifest = load_manifest(data, format="merr")
    store = FeatureStore.create(root / "store.zarr")
    store.add_manifest(manifest)
    roundtrip.fill(store, manifest)
    fill_tokens(store)
    return root / "store.zarr", manifest


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    """Slot -> folder of the tiny encoder checkpoints, built once per session."""
    from featstore.encoders import build_tiny_checkpoints

    return build_tiny_checkpoints(tmp_path_factory.mktemp("tiny-encoders"))


def expected_features(store_path) -> dict[str, dict[str, np.ndarray]]:
    store = FeatureStore.open(store_path)
    return {name: dict(store.feature(name).iter_committed()) for name in ("thumb", "tokens")}
