"""The online path: the four frozen encoders run on the raw clips at every step, instead of the cache.

For comparison with the cache (same features, same loss) and for users without
one. Samples and their clip paths come from the store's annotations; decode
settings from the extraction config the store recorded, so the encoders'
spec ids match the cache's, and a mismatch is refused naming both.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from trainer.data import CacheError, CacheInfo
from trainer.projector import FEATURE_SLOTS

__all__ = ["ONLINE_TINY_DIR", "OnlineFeatures", "open_online"]

ONLINE_TINY_DIR = "/tmp/featstore-tiny-checkpoints"  # featstore's tiny encoders are the same bytes wherever built


def _fork_rng():
    """Run the encoders on forked CPU (and current CUDA device) RNGs, leaving training's streams untouched."""
    return torch.random.fork_rng(devices=[torch.cuda.current_device()] if torch.cuda.is_available() else [])


class OnlineFeatures:
    """Map-style dataset: the store's samples, features computed from the clips on each access.

    Args:
        store: the store whose samples (ids, annotations, clip paths) to use.
        root: folder the clip paths are relative to.
        preset: featstore encoder preset ("tiny" or "emotion-llama").
        device: where the encoders run (None: featstore's choice).
    """

    def __init__(self, store: str, root: str | Path, preset: str = "tiny", device: str | None = None) -> None:
        from featstore import FeatureStore
        from trainer.featstore_bridge import online_tools

        self.tools = online_tools()
        fs = FeatureStore.open(store)
        self.root = Path(root)
        self.samples = [{"sample_id": sid, "video": None, **ann} for sid, ann in zip(fs.sample_ids, fs.annotations())]
        saved = fs.attrs.get("extract_config", {})
        self.decode = self.tools.DecodeConfig(global_frame=saved.get("global_frame", "peak"),
                                              local_frames=saved.get("local_frames", 8),
                                              timeout_s=saved.get("decode_timeout", 60.0))
        clips = saved.get("batch_size", 1)
        options = {s: {"upstream": self.decode.upstream(s), **({} if s == "audio" else {"clips_per_forward": clips})}
                   for s in FEATURE_SLOTS}
        tiny_dir = None
        if preset == "tiny":
            tiny_dir = ONLINE_TINY_DIR
            self.tools.build_tiny_checkpoints(tiny_dir)
        with _fork_rng():  # loading draws random init weights: keep training's RNG as it is
            self.encoders = self.tools.load_encoders(preset, list(FEATURE_SLOTS), device=device, tiny_dir=tiny_dir,
                                                     options=options)

    def spec_ids(self) -> dict[str, str]:
        return {s: e.spec.id for s, e in self.encoders.items()}

    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {s: tuple(e.spec.shape) for s, e in self.encoders.items()}

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> dict[str, Any]:
        """Sample ``i`` as ShardDataset gives it: ``sample_id``, ``meta`` and one array per slot.

        Raises:
            CacheError: naming the sample and the reasons when a clip cannot be decoded.
        """
        s = self.samples[i]
        sid = s["sample_id"]
        clip = self.tools.decode_clip(self.tools.Sample.from_dict(s), self.root, list(FEATURE_SLOTS), self.decode)
        if clip.failures:
            raise CacheError(f"sample {sid!r} under {self.root}: {clip.failures}")
        ann = {k: v for k, v in s.items() if k not in ("sample_id",) and v is not None}
        out: dict[str, Any] = {"__key__": sid, "sample_id": sid, "meta": {"sample_id": sid, **ann}}
        # MAE-style encoders draw patch noise even unmasked: fork the RNG so that dropout in training
        # draws the same numbers as on the cached path.
        with _fork_rng():
            for slot, enc in self.encoders.items():
                _, inputs = self.tools.collate([clip], slot)
                out[slot] = np.asarray(enc(inputs)[slot])[0].astype(enc.spec.dtype)  # the dtype the cache stores
        return out


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
        raise CacheError(f"online encoders ({cfg.encoders}) make spec ids {ids}, the config expects {dict(expect)} "
                         f"(differing: {bad})")
    return ds, CacheInfo(f"online:{cfg.store}", ids, ds.shapes(), len(ds))
