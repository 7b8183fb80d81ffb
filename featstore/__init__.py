"""featstore: a versioned, exactly-once feature cache for multimodal emotion LLMs.

Importing it loads neither torch, ray nor transformers: the readers (torch)
load on first use of their names, the encoders and the extraction job live in
``featstore.encoders`` and ``featstore.extract``.
"""

from typing import Any

from featstore.manifest import Manifest, Sample, load_manifest
from featstore.shards import export_wds
from featstore.spec import FeatureSpec
from featstore.store import FeatureArray, FeatureStore, verify_store

__all__ = [
    "FeatureArray",
    "FeatureSpec",
    "FeatureStore",
    "Manifest",
    "Sample",
    "ShardDataset",
    "ZarrDataset",
    "export_wds",
    "load_manifest",
    "open_features",
    "verify_store",
]

_READERS = ("ShardDataset", "ZarrDataset", "open_features")


def __getattr__(name: str) -> Any:
    if name in _READERS:  # torch and webdataset: loaded only by those who read for training
        from featstore.shards import reader

        return getattr(reader, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
