"""Resizing frames with PIL: square, or short side then centre crop (CLIP's and VideoMAE's).

Shared by the decode stage (which hands the ``frames`` slot its frames already at
the encoder's size, so less crosses the object store) and the encoders'
preprocessing (``featstore.encoders.pixels``), so both resize with the same
code, on the CPU. PIL returns a frame already at the target size unchanged,
so the encoder's resize of a decoded frame is a no-op. numpy and PIL only.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

__all__ = ["RESAMPLE", "center_crop", "resize", "resize_and_crop", "shortest_edge_size"]

RESAMPLE = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}


def resize(frame: np.ndarray, height: int, width: int, resample: str) -> np.ndarray:
    """Resize one uint8 ``[H, W, 3]`` frame with PIL; returns uint8 ``[height, width, 3]``."""
    image = Image.fromarray(np.ascontiguousarray(frame))
    return np.asarray(image.resize((width, height), resample=RESAMPLE[resample]))


def shortest_edge_size(height: int, width: int, shortest_edge: int) -> tuple[int, int]:
    """Output size of a resize whose short side becomes ``shortest_edge`` (long side truncated, as transformers)."""
    if width <= height:
        return int(shortest_edge * height / width), shortest_edge
    return shortest_edge, int(shortest_edge * width / height)


def center_crop(frame: np.ndarray, height: int, width: int) -> np.ndarray:
    """Crop the centre ``[height, width]`` of a frame at least that large.

    Raises:
        ValueError: the frame is smaller than the crop.
    """
    h, w = frame.shape[:2]
    if h < height or w < width:
        raise ValueError(f"cannot centre-crop {height}x{width} from a {h}x{w} frame")
    top, left = (h - height) // 2, (w - width) // 2
    return frame[top : top + height, left : left + width]


def resize_and_crop(frames: np.ndarray, shortest_edge: int, crop: int, resample: str) -> np.ndarray:
    """Resize each uint8 ``[N, H, W, 3]`` frame so its short side is ``shortest_edge``, then centre-crop ``crop``."""
    out = []
    for f in frames:
        h, w = shortest_edge_size(f.shape[0], f.shape[1], shortest_edge)
        out.append(center_crop(resize(f, h, w, resample), crop, crop))
    return np.stack(out)
