"""Projectors: the four cached features -> 260 tokens in the LLM's embedding space.

As Emotion-LLaMA (MiniGPT-v2) builds them: the global EVA feature ``[1025, Dg]``
gives its CLS token (row 0) to Linear(Dg -> H) and its 1024 patch tokens,
4 consecutive ones (raster order) concatenated into ``[256, 4 * Dg]``, to
Linear(4 * Dg -> H); local, temporal and audio ``[D]`` each have a Linear(D -> H).
Tokens leave in the order 256 patch tokens, local, temporal, audio, CLS.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import torch
from torch import nn

__all__ = ["FEATURE_SLOTS", "PATCH_GROUP", "VECTOR_SLOTS", "FeatureProjector", "check_feature_shapes"]

FEATURE_SLOTS = ("global", "local", "temporal", "audio")
VECTOR_SLOTS = ("local", "temporal", "audio")  # one token each, in this order after the patch tokens
PATCH_GROUP = 4  # MiniGPT-v2 concatenates 4 neighbouring visual tokens to shorten the sequence 4x


def check_feature_shapes(shapes: Mapping[str, Sequence[int]]) -> dict[str, tuple[int, ...]]:
    """Check that ``shapes`` has the four slots with the layouts the projectors need.

    Args:
        shapes: slot name -> shape of one sample's feature (e.g. from a shard index).

    Returns:
        The shapes as tuples.

    Raises:
        ValueError: naming the slot and shape that do not fit.
    """
    missing = [s for s in FEATURE_SLOTS if s not in shapes]
    if missing:
        raise ValueError(f"feature shapes {dict(shapes)} lack slots {missing}; the model needs {list(FEATURE_SLOTS)}")
    out = {s: tuple(int(d) for d in shapes[s]) for s in FEATURE_SLOTS}
    g = out["global"]
    if len(g) != 2 or g[0] < 2 or (g[0] - 1) % PATCH_GROUP:
        raise ValueError(f"global feature shape {g} must be [1 + {PATCH_GROUP}k, D] (CLS then patch tokens)")
    for s in VECTOR_SLOTS:
        if len(out[s]) != 1:
            raise ValueError(f"{s} feature shape {out[s]} must be one vector [D]")
    return out


class FeatureProjector(nn.Module):
    """The five linear projectors of Emotion-LLaMA.

    Args:
        shapes: slot -> feature shape (see ``check_feature_shapes``).
        hidden: the LLM's hidden size H.
    """

    def __init__(self, shapes: Mapping[str, Sequence[int]], hidden: int) -> None:
        super().__init__()
        self.shapes = check_feature_shapes(shapes)
        tokens, dim = self.shapes["global"]
        self.num_patch_tokens = (tokens - 1) // PATCH_GROUP
        self.patch = nn.Linear(PATCH_GROUP * dim, hidden)
        self.cls = nn.Linear(dim, hidden)
        self.vectors = nn.ModuleDict({s: nn.Linear(self.shapes[s][0], hidden) for s in VECTOR_SLOTS})

    @property
    def num_tokens(self) -> int:
        """Feature tokens per sample: the patch groups, three vectors and CLS (260 at real size)."""
        return self.num_patch_tokens + len(VECTOR_SLOTS) + 1

    def forward(self, features: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Project a batch of features.

        Args:
            features: slot -> ``[B, *shape]`` tensor.

        Returns:
            ``[B, num_tokens, H]``: patch tokens, local, temporal, audio, CLS.

        Raises:
            ValueError: naming the slot whose batch has the wrong shape.
        """
        for s in FEATURE_SLOTS:
            if tuple(features[s].shape[1:]) != self.shapes[s]:
                raise ValueError(f"{s} batch has shape {tuple(features[s].shape)}, expected [B, *{self.shapes[s]}]")
        dtype = self.patch.weight.dtype
        glob = features["global"].to(dtype)
        b, _, dim = glob.shape
        patches = glob[:, 1:].reshape(b, self.num_patch_tokens, PATCH_GROUP * dim)  # raster order kept
        vectors = [self.vectors[s](features[s].to(dtype)).unsqueeze(1) for s in VECTOR_SLOTS]
        cls = self.cls(glob[:, 0]).unsqueeze(1)
        return torch.cat([self.patch(patches), *vectors, cls], dim=1)
