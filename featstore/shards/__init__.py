"""WebDataset shards: export from a store, and the training-side readers.

The only part of featstore that imports torch and webdataset; the readers are
loaded on first use, so ``from featstore.shards import export_wds`` stays light.
"""

from typing import Any

from featstore.shards.export import export_wds

__all__ = ["ShardDataset", "ZarrDataset", "export_wds", "open_features"]

_READER_NAMES = ("ShardDataset", "ZarrDataset", "open_features")


def __getattr__(name: str) -> Any:
    if name in _READER_NAMES:
        from featstore.shards import reader

        return getattr(reader, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
