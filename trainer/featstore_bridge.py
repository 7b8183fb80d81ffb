"""Every featstore name the trainer needs beyond the package root, imported here and only here, lazily.

featstore's public root (FeatureStore, FeatureSpec, ShardDataset, ZarrDataset,
export_wds, open_features) is imported directly where it is used; anything
deeper (its error base class, the encoders and the clip decoding of the online
path) comes through these functions, so a move inside featstore changes one file.
"""

from __future__ import annotations

from types import SimpleNamespace

__all__ = ["demo_tools", "featstore_error", "online_tools"]


def featstore_error() -> type[Exception]:
    """featstore's base exception class (bad store, stale spec ids, unreadable shard)."""
    from featstore.errors import FeatstoreError

    return FeatstoreError


def online_tools() -> SimpleNamespace:
    """What the online path runs: encoder loading, tiny checkpoints, clip decoding and batching.

    Returns:
        A namespace with ``load_encoders``, ``build_tiny_checkpoints``, ``DecodeConfig``,
        ``decode_clip``, ``collate``, ``Sample`` and ``INPUT_KEY``.
    """
    from featstore.encoders import build_tiny_checkpoints, load_encoders
    from featstore.manifest import Sample
    from featstore.media.clip import DecodeConfig, collate, decode_clip
    from featstore.names import INPUT_KEY

    return SimpleNamespace(
        load_encoders=load_encoders,
        build_tiny_checkpoints=build_tiny_checkpoints,
        DecodeConfig=DecodeConfig,
        decode_clip=decode_clip,
        collate=collate,
        Sample=Sample,
        INPUT_KEY=INPUT_KEY,
    )


def demo_tools() -> SimpleNamespace:
    """featstore's demo dataset writer and manifest loader (tests build real clips with them)."""
    from featstore.demo import make_demo_dataset
    from featstore.manifest import load_manifest

    return SimpleNamespace(make_demo_dataset=make_demo_dataset, load_manifest=load_manifest)
