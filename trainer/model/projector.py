"""Projectors: the cached features -> tokens in the LLM's embedding space, as a feature layout says.

As Emotion-LLaMA (MiniGPT-v2) builds them: the global EVA feature ``[1025, Dg]``
gives its CLS token (row 0) to Linear(Dg -> H) and its 1024 patch tokens,
4 consecutive ones (raster order) concatenated into ``[256, 4 * Dg]``, to
Linear(4 * Dg -> H); local, temporal and audio ``[D]`` each have a Linear(D -> H).
Tokens leave in the order 256 patch tokens, local, temporal, audio, CLS. Other
layouts (``trainer.model.layout``) add per-frame tokens and other slots.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import torch
from torch import nn

from trainer.model.layout import LAYOUTS, FeatureLayout

__all__ = ["FEATURE_SLOTS", "PATCH_GROUP", "VECTOR_SLOTS", "FeatureProjector", "check_feature_shapes"]

# Emotion-LLaMA's slots (its layout's): the default of every part of the trainer.
FEATURE_SLOTS = ("global", "local", "temporal", "audio")
VECTOR_SLOTS = ("local", "temporal", "audio")  # one token each, in this order after the patch tokens
PATCH_GROUP = 4  # MiniGPT-v2 concatenates 4 neighbouring visual tokens to shorten the sequence 4x


def check_feature_shapes(
    shapes: Mapping[str, Sequence[int]], layout: FeatureLayout = LAYOUTS["emotion-llama"]
) -> dict[str, tuple[int, ...]]:
    """Check that ``shapes`` has the layout's slots with the ranks their kinds need.

    Args:
        shapes: slot name -> shape of one sample's feature (e.g. from a shard index).
        layout: the model's feature layout (default Emotion-LLaMA's four slots).

    Returns:
        The layout's shapes as tuples, in the layout's slot order.

    Raises:
        ValueError: naming the slot and shape that do not fit.
    """
    missing = [s for s in layout.slots if s not in shapes]
    if missing:
        raise ValueError(
            f"feature shapes {dict(shapes)} lack slots {missing}; the {layout.name} layout needs {list(layout.slots)}"
        )
    out = {s: tuple(int(d) for d in shapes[s]) for s in layout.slots}
    for s in layout.slots:
        kind, shape = layout.kind_of(s), out[s]
        if kind == "patches" and (len(shape) != 2 or shape[0] < 2 or (shape[0] - 1) % PATCH_GROUP):
            raise ValueError(f"{s} feature shape {shape} must be [1 + {PATCH_GROUP}k, D] (CLS then patch tokens)")
        if kind == "vector" and len(shape) != 1:
            raise ValueError(f"{s} feature shape {shape} must be one vector [D]")
        if kind == "frames" and len(shape) != 2:
            raise ValueError(f"{s} feature shape {shape} must be [N, D] (one row a frame)")
    return out


class FeatureProjector(nn.Module):
    """The linear projectors of a feature layout (Emotion-LLaMA's five by default).

    Module names are the original's for its layout (``patch``, ``cls``,
    ``vectors.<slot>``; ``trainer.model.original`` maps them), and ``frames.<slot>``
    for a ``frames`` slot; they are created in that order, so the Emotion-LLaMA
    layout draws the same initial weights as before layouts existed.

    Args:
        shapes: slot -> feature shape (see ``check_feature_shapes``).
        hidden: the LLM's hidden size H.
        layout: the feature layout (default ``emotion-llama``).
    """

    def __init__(
        self, shapes: Mapping[str, Sequence[int]], hidden: int, layout: FeatureLayout = LAYOUTS["emotion-llama"]
    ) -> None:
        super().__init__()
        self.layout, self.hidden = layout, hidden
        self.shapes = check_feature_shapes(shapes, layout)
        kinds = {s: layout.kind_of(s) for s in layout.slots}
        self.patch_slot = next((s for s, k in kinds.items() if k == "patches"), None)
        self.num_patch_tokens = 0
        if self.patch_slot is not None:
            tokens, dim = self.shapes[self.patch_slot]
            self.num_patch_tokens = (tokens - 1) // PATCH_GROUP
            self.patch = nn.Linear(PATCH_GROUP * dim, hidden)
            if (self.patch_slot, "cls") in layout.video + layout.feature:
                self.cls = nn.Linear(dim, hidden)
        self.vectors = nn.ModuleDict({s: nn.Linear(self.shapes[s][0], hidden) for s in _of(layout, "vector")})
        self.frames = nn.ModuleDict({s: nn.Linear(self.shapes[s][1], hidden) for s in _of(layout, "frames")})

    def _count(self, pairs: Sequence[tuple[str, str]]) -> int:
        per = {"patches": self.num_patch_tokens, "cls": 1, "vector": 1}
        return sum(self.shapes[s][0] if k == "frames" else per[k] for s, k in pairs)

    @property
    def num_video_tokens(self) -> int:
        """Tokens at ``<VideoHere>`` (the 256 patch tokens at real size in Emotion-LLaMA's layout)."""
        return self._count(self.layout.video)

    @property
    def num_feature_tokens(self) -> int:
        """Tokens at ``<FeatureHere>`` (local, temporal, audio, CLS in Emotion-LLaMA's layout)."""
        return self._count(self.layout.feature)

    @property
    def num_tokens(self) -> int:
        """Feature tokens per sample (260 at real size in Emotion-LLaMA's layout)."""
        return self.num_video_tokens + self.num_feature_tokens

    def _tokens(self, slot: str, kind: str, x: torch.Tensor) -> torch.Tensor:
        if kind == "patches":
            b, _, dim = x.shape
            return self.patch(x[:, 1:].reshape(b, self.num_patch_tokens, PATCH_GROUP * dim))  # raster order kept
        if kind == "cls":
            return self.cls(x[:, 0]).unsqueeze(1)
        if kind == "vector":
            return self.vectors[slot](x).unsqueeze(1)
        return self.frames[slot](x)

    def forward(self, features: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Project a batch of features.

        Args:
            features: slot -> ``[B, *shape]`` tensor (other slots are ignored).

        Returns:
            ``[B, num_tokens, H]``: the video tokens, then the feature tokens, in the layout's order
            (Emotion-LLaMA's: patch tokens, local, temporal, audio, CLS).

        Raises:
            ValueError: naming the slot whose batch has the wrong shape.
        """
        for s in self.layout.slots:
            if tuple(features[s].shape[1:]) != self.shapes[s]:
                raise ValueError(f"{s} batch has shape {tuple(features[s].shape)}, expected [B, *{self.shapes[s]}]")
        dtype = next(self.parameters()).dtype
        pairs = self.layout.video + self.layout.feature
        return torch.cat([self._tokens(s, k, features[s].to(dtype)) for s, k in pairs], dim=1)


def _of(layout: FeatureLayout, kind: str) -> list[str]:
    return [s for s, k in layout.video + layout.feature if k == kind]
