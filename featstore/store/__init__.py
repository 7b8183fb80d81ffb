"""The store: one Zarr v3 group with a sample index and one feature group per
spec, written in chunk-owned work units. numpy, zarr and fsspec only."""

from featstore.store.array import FeatureArray
from featstore.store.index import SampleIndex
from featstore.store.store import FeatureStore, store_files
from featstore.store.verify import VerifyReport, verify_store

__all__ = ["FeatureArray", "FeatureStore", "SampleIndex", "VerifyReport", "store_files", "verify_store"]
