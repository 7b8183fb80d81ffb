"""The local encoder: MAE ViT-L on the face crop of each sampled frame, mean over tokens then over frames.

``ViTMAEModel`` is the MAE encoder, built for pre-training: it drops
``mask_ratio`` of the patch tokens after shuffling them with random noise
(``ViTMAEEmbeddings.random_masking``). For features the encoder loads with
``mask_ratio=0`` and is given a fixed ``noise = arange(L)``: argsort of an
increasing sequence is the identity, so every token is kept in its own place
and no random number is drawn. Without the fixed noise the tokens come out in a
random order, and their mean differs in the last bits from run to run.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from transformers import ViTMAEModel

from featstore.checks import positive_int
from featstore.encoders import base, original, pixels
from featstore.spec import FeatureSpec

INPUT_KEY = "faces"
# Token pooling per frame: "mean" over patch tokens (MAE's global_pool; with include_cls, all
# tokens), or "cls", the CLS token after the final norm (the original's mae_340_UTT, global_pool=False).
POOLS = ("mean", "cls")
_POOLING_NAMES = {"mean": "mean_tokens_then_frames", "cls": "cls_token_then_mean_frames"}


class MaeLocalEncoder:
    """Callable for Ray Data ``map_batches``: ``{"faces": uint8 [B, F, H, W, 3]}`` to ``{"local": [B, D]}``.

    Each clip's F face crops go through the model as one batch of F images; the
    feature is the mean of ``last_hidden_state`` (after the final layer norm)
    over tokens, then over the F frames, computed in float32. Other columns
    pass through; ``faces`` is dropped.

    Args:
        source: A folder or hub name of a ViTMAE checkpoint, e.g. ``"facebook/vit-mae-large"``.
        image_size: square size face crops are resized to (PIL; a no-op for crops already that size).
        resample: PIL filter for that resize (the checkpoint's preprocessor_config says bilinear).
        image_mean: per-channel mean after rescaling to [0, 1] (ImageNet's).
        image_std: per-channel std (ImageNet's).
        include_cls: whether the CLS token enters the token mean. Default False, as
            MAE's own global pooling (``models_vit.py``: ``x[:, 1:].mean(1)``).
        pool: ``"mean"`` (tokens averaged) or ``"cls"`` (the CLS token after the final
            norm, as the original's ``mae_340_UTT`` took it); then the mean over frames.
        frames: if set, the number of face crops every clip must have (recorded in the spec).
        name: the feature's name in the store.
        **common: as ``EvaGlobalEncoder``; ``upstream`` records e.g. the frame sampling and face detector.

    Raises:
        CheckpointNotFoundError: the source cannot be found.
        CheckpointError: its weights do not fit ``ViTMAEModel``.
        ValueError: naming any bad parameter.
    """

    def __init__(
        self,
        source: str,
        *,
        image_size: int = 224,
        resample: str = "bilinear",
        image_mean: Sequence[float] = pixels.IMAGENET_MEAN,
        image_std: Sequence[float] = pixels.IMAGENET_STD,
        include_cls: bool = False,
        pool: str = "mean",
        frames: int | None = None,
        name: str = "local",
        **common: Any,
    ) -> None:
        self.image_size = positive_int("image_size", image_size)
        pixels.init_image(self, resample, image_mean, image_std)
        if not isinstance(include_cls, bool):
            raise ValueError(f"include_cls must be a bool, got {include_cls!r}")
        self.include_cls = include_cls
        if pool not in POOLS:
            raise ValueError(f"pool {pool!r} must be one of {list(POOLS)}")
        self.pool_kind = pool
        self.frames = None if frames is None else positive_int("frames", frames)
        base.init_common(self, source, name, **common)
        model = original.load_encoder_model(name, ViTMAEModel, self.source, self.attn, mask_ratio=0.0)
        base.adopt_model(self, model)
        if self.image_size != model.config.image_size:
            raise ValueError(
                f"image_size {image_size} differs from the checkpoint's {model.config.image_size}; "
                "ViTMAE's fixed sin-cos position table only fits its own size"
            )
        self.num_patches = (self.image_size // model.config.patch_size) ** 2

    @property
    def spec(self) -> FeatureSpec:
        """The FeatureSpec of what this encoder writes."""
        preprocess = {
            "frames": self.frames,
            "image_size": self.image_size,
            "resize": "square (PIL)",
            **pixels.image_spec(self),
            "mask_ratio": 0.0,
            "token_order": "identity (noise = arange)",
            "include_cls": self.include_cls,
            "pooling_dtype": "float32",
        }
        return base.encoder_spec(self, preprocess, (self.model.config.hidden_size,), _POOLING_NAMES[self.pool_kind])

    def preprocess(self, faces: np.ndarray) -> torch.Tensor:
        """uint8 ``[N, H, W, 3]`` face crops to the float32 pixel tensor ``[N, 3, S, S]`` (on the CPU)."""
        pixels.check_frames(faces, INPUT_KEY)
        resized = pixels.resize_to_square(faces, self.image_size, self.resample)
        return torch.from_numpy(pixels.normalize(resized, self.image_mean, self.image_std))

    def tokens(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """The model on ``[N, 3, S, S]`` with every token kept in order: float32 ``[N, 1 + L, D]`` on the CPU."""
        x = pixel_values.to(self.device, self.compute_dtype)
        noise = torch.arange(self.num_patches, device=self.device, dtype=torch.float32).expand(len(x), -1)
        return self.model(pixel_values=x, noise=noise).last_hidden_state.float().cpu()

    def pool(self, tokens: torch.Tensor, clips: int) -> torch.Tensor:
        """``[clips * F, 1 + L, D]`` tokens to ``[clips, D]``: mean over tokens, then over frames."""
        if self.pool_kind == "cls":
            per_frame = tokens[:, 0]
        else:
            per_frame = (tokens if self.include_cls else tokens[:, 1:]).mean(dim=1)
        return per_frame.reshape(clips, -1, per_frame.shape[-1]).mean(dim=1)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Encode one batch; see the class docstring for columns.

        Raises:
            KeyError: the batch has no ``faces`` column.
            ValueError: ``faces`` is not uint8 ``[B, F, H, W, 3]``, or F is not ``frames``.
        """
        faces = base.require_column(batch, INPUT_KEY, 5, np.uint8)
        if faces.shape[1] < 1 or (self.frames is not None and faces.shape[1] != self.frames):
            raise ValueError(
                f"column {INPUT_KEY!r} has {faces.shape[1]} frames per clip; expected {self.frames or 'at least 1'}"
            )
        out = np.empty((len(faces), self.model.config.hidden_size), dtype=self.output_dtype)
        with torch.inference_mode():
            for a, b in base.chunks(len(faces), self.clips_per_forward):
                flat = faces[a:b].reshape(-1, *faces.shape[2:])
                out[a:b] = self.pool(self.tokens(self.preprocess(flat)), b - a).numpy()
        return base.pass_through(batch, (INPUT_KEY,), self.name, out)
