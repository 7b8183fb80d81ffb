"""The online path: the four frozen encoders run on the raw clips at every step, instead of the cache.

For comparison with the cache (same features, same loss) and for users without
one. Samples and their clip paths come from the store's annotations; the encoders
are set up by ``trainer.data.live`` from the extraction config the store recorded, so
their spec ids match the cache's, and a mismatch is refused naming both.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from trainer.data.cache import CacheError, CacheInfo
from trainer.data.live import ENCODER_TINY_DIR, LiveEncoders

__all__ = ["ONLINE_TINY_DIR", "OnlineFeatures", "open_online"]

ONLINE_TINY_DIR = ENCODER_TINY_DIR  # the one folder of featstore's tiny encoders (trainer.data.live)


class OnlineFeatures:
    """Map-style dataset: the store's samples, features computed from the clips on each access.

    Samples whose media the manifest found unusable (their annotation has ``error``) are left out.

    Args:
        store: the store whose samples (ids, annotations, clip paths) to use.
        root: folder the clip paths are relative to.
        preset: featstore encoder preset ("tiny" or "emotion-llama").
        device: where the encoders run (None: featstore's choice).
    """

    def __init__(self, store: str, root: str | Path, preset: str = "tiny", device: str | None = None) -> None:
        from featstore import FeatureStore

        fs = FeatureStore.open(store)
        self.root = Path(root)
        # A sample whose media the manifest found missing, unsafe or unreadable (``error``) has
        # no clip to encode; the cache has it as failed, so neither path trains on it.
        self.samples = [
            {"sample_id": sid, "video": None, **ann}
            for sid, ann in zip(fs.sample_ids, fs.annotations())
            if ann.get("error") is None
        ]
        self.live = LiveEncoders(preset, fs.attrs.get("extract_config", {}), device)

    def spec_ids(self) -> dict[str, str]:
        return self.live.spec_ids()

    def shapes(self) -> dict[str, tuple[int, ...]]:
        return self.live.shapes()

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> dict[str, Any]:
        """Sample ``i`` as ShardDataset gives it: ``sample_id``, ``meta`` and one array per slot.

        Raises:
            CacheError: naming the sample and the reasons when a clip cannot be decoded.
        """
        s = self.samples[i]
        sid = s["sample_id"]
        try:
            feats = self.live.features(s, self.root)
        except ValueError as e:
            raise CacheError(f"sample {sid!r}: {e}") from e
        ann = {k: v for k, v in s.items() if k not in ("sample_id",) and v is not None}
        return {"__key__": sid, "sample_id": sid, "meta": {"sample_id": sid, **ann}, **feats}


def open_online(cfg, expect: Mapping[str, str]) -> tuple[OnlineFeatures, CacheInfo]:
    """The online dataset for a TrainConfig, checked against the spec ids it expects.

    Raises:
        CacheError: naming expected and actual spec ids when the encoders would make other features.
    """
    root = cfg.dataset_root or str(Path(cfg.store).parent / "data")
    device = None if cfg.device == "auto" else cfg.device
    ds = OnlineFeatures(cfg.store, root, cfg.encoders, device)
    ids = ds.spec_ids()
    bad = {s: (expect[s], ids[s]) for s in expect if ids.get(s) != expect[s]}
    if bad:
        raise CacheError(
            f"online encoders ({cfg.encoders}) make spec ids {ids}, the config expects {dict(expect)} "
            f"(differing: {bad})"
        )
    return ds, CacheInfo(f"online:{cfg.store}", ids, ds.shapes(), len(ds))
