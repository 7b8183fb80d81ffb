"""The temporal encoder: VideoMAE ViT-L on 16 face frames, mean over all space-time tokens.

``VideoMAEModel`` is run without ``bool_masked_pos``, so every tubelet token is
kept. Preprocessing follows ``VideoMAEImageProcessor`` with the settings in the
MCG-NJU checkpoints' preprocessor_config.json: resize the short side to 224
(bilinear), centre-crop 224, rescale, normalise with ImageNet mean/std (the
checkpoints' values; the processor class's own defaults are 0.5/0.5, which the
checkpoints override). With ``use_mean_pooling=False`` (the MCG-NJU pre-training
checkpoints) ``last_hidden_state`` has the encoder's final layer norm applied;
with True (fine-tuned classifiers) it has none, and the classifier's ``fc_norm``
is not part of this feature either. Either way the config hash in the spec
records which.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from transformers import VideoMAEModel

from featstore.checks import positive_int
from featstore.encoders import base, original, pixels
from featstore.spec import FeatureSpec

INPUT_KEY = "face_frames"


class VideoMaeTemporalEncoder:
    """Callable for Ray Data ``map_batches``: ``{"face_frames": uint8 [B, T, H, W, 3]}`` to ``{"temporal": [B, D]}``.

    ``T`` must be the checkpoint's ``num_frames`` (16). The feature is the mean of
    ``last_hidden_state`` over its ``T / tubelet * (S / patch)^2`` tokens (1568),
    computed in float32. Other columns pass through; ``face_frames`` is dropped.

    Args:
        source: A folder or hub name of a VideoMAE checkpoint, e.g. ``"MCG-NJU/videomae-large"``.
        shortest_edge: the short side of each frame is resized to this (PIL).
        crop_size: square centre crop after the resize; must be the checkpoint's image size.
        resample: PIL filter for the resize.
        image_mean: per-channel mean after rescaling to [0, 1] (ImageNet's).
        image_std: per-channel std (ImageNet's).
        name: the feature's name in the store.
        **common: as ``EvaGlobalEncoder``; ``upstream`` records e.g. the frame stride and
            padding, face detector.

    Raises:
        CheckpointNotFoundError: the source cannot be found.
        CheckpointError: its weights do not fit ``VideoMAEModel``.
        ValueError: naming any bad parameter.
    """

    def __init__(
        self,
        source: str,
        *,
        shortest_edge: int = 224,
        crop_size: int = 224,
        resample: str = "bilinear",
        image_mean: Sequence[float] = pixels.IMAGENET_MEAN,
        image_std: Sequence[float] = pixels.IMAGENET_STD,
        name: str = "temporal",
        **common: Any,
    ) -> None:
        self.shortest_edge = positive_int("shortest_edge", shortest_edge)
        self.crop_size = positive_int("crop_size", crop_size)
        if self.crop_size > self.shortest_edge:
            raise ValueError(f"crop_size {crop_size} is larger than shortest_edge {shortest_edge}")
        pixels.init_image(self, resample, image_mean, image_std)
        base.init_common(self, source, name, **common)
        model = original.load_encoder_model(name, VideoMAEModel, self.source, self.attn)
        if self.crop_size != model.config.image_size:
            raise ValueError(
                f"crop_size {crop_size} differs from the checkpoint's image size {model.config.image_size}"
            )
        self.num_frames = model.config.num_frames
        base.adopt_model(self, model)

    @property
    def spec(self) -> FeatureSpec:
        """The FeatureSpec of what this encoder writes."""
        preprocess = {
            "frames": self.num_frames,
            "shortest_edge": self.shortest_edge,
            "crop_size": self.crop_size,
            **pixels.image_spec(self),
            "masking": "none",
            "pooling_dtype": "float32",
        }
        return base.encoder_spec(self, preprocess, (self.model.config.hidden_size,), "mean_tokens")

    def preprocess(self, clips: np.ndarray) -> torch.Tensor:
        """uint8 ``[B, T, H, W, 3]`` to the float32 pixel tensor ``[B, T, 3, S, S]`` (on the CPU)."""
        pixels.check_frames(clips, INPUT_KEY)
        flat = clips.reshape(-1, *clips.shape[2:])
        cropped = pixels.resize_and_crop(flat, self.shortest_edge, self.crop_size, self.resample)
        x = pixels.normalize(cropped, self.image_mean, self.image_std)
        return torch.from_numpy(x.reshape(len(clips), self.num_frames, *x.shape[1:]))

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """The model on ``[B, T, 3, S, S]``: float32 tokens ``[B, N, D]`` on the CPU."""
        x = pixel_values.to(self.device, self.compute_dtype)
        return self.model(pixel_values=x).last_hidden_state.float().cpu()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Encode one batch; see the class docstring for columns.

        Raises:
            KeyError: the batch has no ``face_frames`` column.
            ValueError: ``face_frames`` is not uint8 ``[B, T, H, W, 3]`` with T the checkpoint's frame count.
        """
        clips = base.require_column(batch, INPUT_KEY, 5, np.uint8)
        if clips.shape[1] != self.num_frames:
            raise ValueError(
                f"column {INPUT_KEY!r} has {clips.shape[1]} frames per clip; "
                f"the checkpoint takes exactly {self.num_frames}"
            )
        out = np.empty((len(clips), self.model.config.hidden_size), dtype=self.output_dtype)
        with torch.inference_mode():
            for a, b in base.chunks(len(clips), self.clips_per_forward):
                out[a:b] = self.forward(self.preprocess(clips[a:b])).mean(dim=1).numpy()
        return base.pass_through(batch, (INPUT_KEY,), self.name, out)
