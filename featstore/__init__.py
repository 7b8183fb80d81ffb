"""featstore: a versioned, exactly-once feature cache for multimodal emotion LLMs."""

from featstore.feature_array import FeatureArray
from featstore.manifest import Manifest, Sample, load_manifest
from featstore.reader import ShardDataset, ZarrDataset, open_features
from featstore.shards import export_wds
from featstore.spec import FeatureSpec
from featstore.store import FeatureStore
from featstore.verify import verify_store

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
