"""Image preprocessing for the vision encoders: PIL resize, centre crop, rescale and normalise, on the CPU.

The arithmetic follows transformers' PIL image processors step for step (PIL
resize of uint8 pixels, rescale in float64 then float32, normalise in float32),
so that ``BlipImageProcessorPil`` / ``ViTImageProcessorPil`` /
``VideoMAEImageProcessorPil`` with the same settings give bitwise the same
pixels. It always runs on the CPU, so the pixels a model sees do not depend on
which GPU runs it. The original BLIP-2 / MiniGPT-v2 / Emotion-LLaMA evaluation
transform also resizes PIL images (torchvision ``Resize`` on a PIL image calls
PIL), so the resample filter is the same one the models were used with.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import PIL

from featstore.checks import one_of
from featstore.media.frames import RESAMPLE, center_crop, resize, resize_and_crop, shortest_edge_size

__all__ = [
    "CLIP_MEAN",
    "CLIP_STD",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "RESAMPLE",
    "center_crop",
    "check_frames",
    "check_stats",
    "image_spec",
    "init_image",
    "normalize",
    "resize",
    "resize_and_crop",
    "resize_to_square",
    "shortest_edge_size",
]

# OpenAI CLIP statistics (BLIP-2's eval transform; transformers' OPENAI_CLIP_MEAN/STD).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
# ImageNet statistics (MAE and VideoMAE checkpoints' preprocessor_config.json;
# transformers' IMAGENET_DEFAULT_MEAN/STD, not the 0.5 "standard" ones).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RESCALE = 1 / 255
# PIL's resampling code decides the resized pixels, so its version is recorded with them.
PILLOW_VERSION = PIL.__version__


def init_image(enc: Any, resample: str, image_mean: Sequence[float], image_std: Sequence[float]) -> None:
    """Check and set an image encoder's ``resample``, ``image_mean`` and ``image_std``.

    Raises:
        ValueError: naming the bad value.
    """
    enc.resample = one_of("resample", resample, RESAMPLE)
    enc.image_mean = check_stats("image_mean", image_mean)
    enc.image_std = check_stats("image_std", image_std)


def image_spec(enc: Any) -> dict[str, Any]:
    """The spec entries of ``init_image``'s settings, with the rescale and PIL's version."""
    return {
        "resample": enc.resample,
        "rescale": RESCALE,
        "image_mean": list(enc.image_mean),
        "image_std": list(enc.image_std),
        "pillow_version": PILLOW_VERSION,
    }


def check_stats(name: str, values: Sequence[float]) -> tuple[float, float, float]:
    """Validate a per-channel mean or std: three finite floats (std also positive).

    Raises:
        ValueError: naming the parameter and the bad value.
    """
    vals = tuple(float(v) for v in values)
    if len(vals) != 3 or not all(np.isfinite(vals)):
        raise ValueError(f"{name} must be three finite numbers (R, G, B), got {values!r}")
    if name.endswith("std") and min(vals) <= 0:
        raise ValueError(f"{name} must be positive, got {values!r}")
    return vals


def check_frames(arr: np.ndarray, key: str) -> None:
    """Check that ``arr`` is uint8 RGB frames ``[..., H, W, 3]`` with a non-empty picture.

    Raises:
        ValueError: naming the column and its shape or dtype.
    """
    if arr.dtype != np.uint8:
        raise ValueError(f"column {key!r} must be uint8 RGB, got {arr.dtype}")
    if arr.ndim < 3 or arr.shape[-1] != 3 or arr.shape[-2] < 1 or arr.shape[-3] < 1:
        raise ValueError(f"column {key!r} must end in [H, W, 3] (RGB), got shape {arr.shape}")


def normalize(frames: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """uint8 ``[N, H, W, 3]`` to float32 ``[N, 3, H, W]``: ``(x / 255 - mean) / std``.

    Rescaling goes through float64 and normalising is done in float32, the
    order and precision of transformers' ``rescale`` and ``normalize``.
    """
    x = (frames.astype(np.float64) * RESCALE).astype(np.float32)
    x = (x - np.asarray(mean, dtype=np.float32)) / np.asarray(std, dtype=np.float32)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def resize_to_square(frames: np.ndarray, size: int, resample: str) -> np.ndarray:
    """Resize every uint8 ``[N, H, W, 3]`` frame to ``[size, size]`` (aspect ratio not kept, as BLIP-2)."""
    return np.stack([resize(f, size, size, resample) for f in frames])
