"""The frames encoder: CLIP ViT-L/14 on N uniform frames of a clip at 224 px, one CLS token per frame.

AffectGPT sees a clip as 8 uniformly sampled frames through CLIP's vision
tower (``openai/clip-vit-large-patch14``) and keeps each frame's CLS token as
the model uses it: ``CLIPVisionModel``'s ``pooler_output``, the CLS row after
``post_layernorm`` (before CLIP's ``visual_projection``, which is not applied).
The feature is ``[N, D]``: frames in time order, width 1024 at real size.

Preprocessing is CLIP's own (``CLIPImageProcessor``: short side to 224 with
PIL bicubic, centre crop 224, rescale, OpenAI CLIP mean and std), done on the
CPU with ``pixels``; the decode stage already hands frames at that size (the
same resize and crop, so the encoder's resize is then a no-op), and frames of
any other size are resized here the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from transformers import CLIPVisionModel

from featstore.checks import positive_int
from featstore.encoders import base, checkpoints, pixels
from featstore.spec import FeatureSpec

INPUT_KEY = "frames"
# config.json model_type of the two checkpoint layouts accepted: a saved CLIPVisionModel,
# or a full CLIPModel (as openai/clip-vit-large-patch14 is), whose text tower is not read.
MODEL_TYPES = ("clip_vision_model", "clip")


class ClipFramesEncoder:
    """Callable for Ray Data ``map_batches``: ``{"frames": uint8 [B, N, H, W, 3]}`` to ``{"frames": [B, N, D]}``.

    Each clip's N frames go through the model as one batch of N images; the
    feature of a frame is its CLS token after ``post_layernorm``
    (``pooler_output``). The ``frames`` column is replaced by the features;
    other columns pass through.

    Args:
        source: A folder or hub name of a CLIP checkpoint (full ``CLIPModel`` or
            vision-only ``CLIPVisionModel``), e.g. ``"openai/clip-vit-large-patch14"``.
        frames: the number of frames every clip must have (8 in AffectGPT).
        image_size: short side frames are resized to, and the square centre crop
            taken (the checkpoint's own image size: its position table is fixed).
        resample: PIL filter for that resize (CLIP's: bicubic).
        image_mean: per-channel mean after rescaling to [0, 1] (OpenAI CLIP's).
        image_std: per-channel std (OpenAI CLIP's).
        name: the feature's name in the store.
        **common: as ``EvaGlobalEncoder``; ``upstream`` records the frame sampling.

    Raises:
        CheckpointNotFoundError: the source cannot be found.
        CheckpointError: the source is another kind of model, or its weights do not fit.
        ValueError: naming any bad parameter.
    """

    def __init__(
        self,
        source: str,
        *,
        frames: int = 8,
        image_size: int = 224,
        resample: str = "bicubic",
        image_mean: Sequence[float] = pixels.CLIP_MEAN,
        image_std: Sequence[float] = pixels.CLIP_STD,
        name: str = "frames",
        **common: Any,
    ) -> None:
        self.frames = positive_int("frames", frames)
        self.image_size = positive_int("image_size", image_size)
        pixels.init_image(self, resample, image_mean, image_std)
        base.init_common(self, source, name, **common)
        model = checkpoints.load_model(
            name, CLIPVisionModel, self.source, model_types=MODEL_TYPES, attn_implementation=self.attn
        )
        if self.image_size != model.config.image_size:
            raise ValueError(
                f"image_size {image_size} differs from the checkpoint's {model.config.image_size}; "
                "CLIP's position table only fits its own size"
            )
        base.adopt_model(self, model)

    @property
    def spec(self) -> FeatureSpec:
        """The FeatureSpec of what this encoder writes."""
        preprocess = {
            "frames": self.frames,
            "image_size": self.image_size,
            "resize": "shortest edge then centre crop (PIL)",
            **pixels.image_spec(self),
            "output": "pooler_output (CLS token after post_layernorm), one per frame",
        }
        return base.encoder_spec(self, preprocess, (self.frames, self.model.config.hidden_size), "cls_per_frame")

    def preprocess(self, frames: np.ndarray) -> torch.Tensor:
        """uint8 ``[N, H, W, 3]`` frames to the float32 pixel tensor ``[N, 3, S, S]`` (on the CPU)."""
        pixels.check_frames(frames, INPUT_KEY)
        cropped = pixels.resize_and_crop(frames, self.image_size, self.image_size, self.resample)
        return torch.from_numpy(pixels.normalize(cropped, self.image_mean, self.image_std))

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """The model on ``[N, 3, S, S]`` pixels: float32 CLS tokens ``[N, D]`` on the CPU."""
        x = pixel_values.to(self.device, self.compute_dtype)
        return self.model(pixel_values=x).pooler_output.float().cpu()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Encode one batch; see the class docstring for columns.

        Raises:
            KeyError: the batch has no ``frames`` column.
            ValueError: ``frames`` is not uint8 ``[B, N, H, W, 3]`` with N as configured.
        """
        clips = base.require_column(batch, INPUT_KEY, 5, np.uint8)
        if clips.shape[1] != self.frames:
            raise ValueError(f"column {INPUT_KEY!r} has {clips.shape[1]} frames per clip; expected {self.frames}")
        width = self.model.config.hidden_size
        out = np.empty((len(clips), self.frames, width), dtype=self.output_dtype)
        with torch.inference_mode():
            for a, b in base.chunks(len(clips), self.clips_per_forward):
                flat = clips[a:b].reshape(-1, *clips.shape[2:])
                out[a:b] = self.forward(self.preprocess(flat)).reshape(b - a, self.frames, width).numpy()
        return base.pass_through(batch, (INPUT_KEY,), self.name, out)
