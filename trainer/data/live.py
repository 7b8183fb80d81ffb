"""The four frozen encoders run live on raw clips, set up exactly as extraction set them up.

Extraction records its decode settings in the store (``extract_config``); from
them come the same ``DecodeConfig``, the same per-slot encoder options and so the
same spec ids as the cache. The online training path and prediction both use this.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch

from trainer.model.projector import FEATURE_SLOTS

__all__ = ["ENCODER_TINY_DIR", "LiveEncoders", "saved_extract_config"]

ENCODER_TINY_DIR = "/tmp/featstore-tiny-checkpoints"  # featstore's tiny encoders are the same bytes wherever built


def _fork_rng():
    """Run the encoders on forked CPU (and current CUDA device) RNGs, leaving the caller's streams untouched."""
    return torch.random.fork_rng(devices=[torch.cuda.current_device()] if torch.cuda.is_available() else [])


def saved_extract_config(store: str | None) -> dict[str, Any]:
    """The extraction settings a store recorded; {} (featstore's defaults) when there is no store."""
    if not store:
        return {}
    from featstore import FeatureStore

    return dict(FeatureStore.open(store).attrs.get("extract_config", {}))


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


class LiveEncoders:
    """Decode a clip and run the four encoders on it.

    Args:
        preset: featstore encoder preset ("tiny" or "emotion-llama").
        saved: the store's ``extract_config`` (decode settings, batch size); {} for featstore's defaults.
        device: where the encoders run (None: featstore's choice).
    """

    def __init__(self, preset: str = "tiny", saved: Mapping[str, Any] | None = None, device: str | None = None) -> None:
        saved = dict(saved or {})
        self.tools = online_tools()
        self.decode = self.tools.DecodeConfig(
            global_frame=saved.get("global_frame", "peak"),
            local_frames=saved.get("local_frames", 8),
            timeout_s=saved.get("decode_timeout", 60.0),
        )
        clips = saved.get("batch_size", 1)
        options = {
            s: {"upstream": self.decode.upstream(s), **({} if s == "audio" else {"clips_per_forward": clips})}
            for s in FEATURE_SLOTS
        }
        if saved.get("global_output", "auto") != "auto":
            options["global"]["output"] = saved["global_output"]
        # The checkpoints the extraction used (--checkpoint SLOT=SOURCE), e.g. the original's .pth files.
        overrides = dict(item.split("=", 1) for item in saved.get("checkpoint") or () if "=" in item)
        tiny_dir = None
        if preset == "tiny":
            tiny_dir = ENCODER_TINY_DIR
            self.tools.build_tiny_checkpoints(tiny_dir)
        self.preset = preset
        with _fork_rng():  # loading draws random init weights: keep the caller's RNG as it is
            self.encoders = self.tools.load_encoders(
                preset, list(FEATURE_SLOTS), overrides=overrides, device=device, tiny_dir=tiny_dir, options=options
            )

    def spec_ids(self) -> dict[str, str]:
        return {s: e.spec.id for s, e in self.encoders.items()}

    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {s: tuple(e.spec.shape) for s, e in self.encoders.items()}

    def features(self, sample: Mapping[str, Any], root: str | Path) -> dict[str, np.ndarray]:
        """One clip's four features, in the dtype the cache stores.

        Safe on a background thread beside a training step: it neither draws from nor saves and
        restores the global RNGs (torch, NumPy, Python).

        Args:
            sample: manifest fields (``sample_id``, ``video``, optional ``audio`` and ``extra``).
            root: the folder ``video`` and ``audio`` are relative to.

        Raises:
            ValueError: naming the clip and the reasons when a modality cannot be decoded.
        """
        sample = {"video": None, **sample}
        clip = self.tools.decode_clip(self.tools.Sample.from_dict(sample), Path(root), list(FEATURE_SLOTS), self.decode)
        if clip.failures:
            raise ValueError(f"clip {sample.get('video')!r} under {root}: {clip.failures}")
        out = {}
        # No fork_rng here: this runs in the trainer's prefetch thread while the step draws dropout
        # masks from the same process-wide torch RNG, and fork_rng's restore on exit would rewind the
        # step's draws (masks repeated or not, depending on timing). The encoders draw nothing (eval
        # mode, MAE given fixed noise), so the global RNG is never touched from here.
        for slot, enc in self.encoders.items():
            _, inputs = self.tools.collate([clip], slot)
            out[slot] = np.asarray(enc(inputs)[slot])[0].astype(enc.spec.dtype)
        return out
