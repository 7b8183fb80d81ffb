"""The global encoder: EVA ViT-g/14 (BLIP-2's vision tower) on one frame at 448 px, all 1025 tokens.

Emotion-LLaMA (after MiniGPT-v2) feeds the BLIP-2 vision tower a 448x448 frame,
with the 224 px position embeddings interpolated (bicubic) to the 32x32 patch
grid, and takes every token after the tower's final layer norm (``ln_vision``).
transformers' ``Blip2VisionModel`` is that tower: 39 blocks (BLIP-2 drops the
40th of EVA ViT-g), and its ``last_hidden_state`` already has
``post_layernorm`` applied (``Blip2VisionModel.forward``), so it is used as is.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from transformers import Blip2VisionModel

from featstore.checks import positive_int
from featstore.encoders import base, checkpoints, original, pixels
from featstore.errors import CheckpointError
from featstore.spec import FeatureSpec

# model_type strings of the two checkpoint layouts accepted (config.json "model_type").
VISION_ONLY = "blip_2_vision_model"
FULL_BLIP2 = "blip-2"
FULL_PREFIX = "vision_model."
INPUT_KEY = "frame"
# What the feature is: "post_layernorm", transformers' last_hidden_state (BLIP-2's trained
# ln_vision); or "ln_vision", the last block's output through a LayerNorm at weight 1, bias 0,
# eps 1e-5, computed in float32: the original's ln_vision, created fresh and frozen at once in
# MiniGPT-v2 (base_model.py::init_vision_encoder) and so never trained nor saved.
OUTPUTS = ("post_layernorm", "ln_vision")
LN_VISION_EPS = 1e-5  # torch.nn.LayerNorm's default, which LayerNorm(1408) there takes
_OUTPUT_NAMES = {
    "post_layernorm": "last_hidden_state (after post_layernorm)",
    "ln_vision": "last block output, LayerNorm without affine, eps 1e-05, float32 (the original's ln_vision)",
}


class EvaGlobalEncoder:
    """Callable for Ray Data ``map_batches``: ``{"frame": uint8 [B, H, W, 3]}`` to ``{"global": [B, T, D]}``.

    ``T = (image_size / patch)^2 + 1`` (1025 at 448 px, patch 14) and ``D`` the
    tower's width (1408). Other columns pass through; ``frame`` is dropped.

    Args:
        source: A folder or hub name holding either a vision-only checkpoint (a saved
            ``Blip2VisionModel``) or a full BLIP-2 checkpoint (``model_type`` "blip-2",
            tensors under ``vision_model.``), e.g. ``"Salesforce/blip2-opt-2.7b"``.
        image_size: square size frames are resized to (448 in Emotion-LLaMA).
        resample: PIL filter for that resize.
        image_mean: per-channel mean after rescaling to [0, 1] (OpenAI CLIP's).
        image_std: per-channel std (OpenAI CLIP's).
        output: ``"post_layernorm"`` (BLIP-2's trained norm) or ``"ln_vision"`` (the
            original's untrained one, see ``OUTPUTS``).
        name: the feature's name in the store.
        **common: ``device``, ``dtype``, ``output_dtype``, ``attn_implementation``,
            ``clips_per_forward``, ``deterministic``, ``upstream`` (e.g. the frame
            selection): see ``base.init_common``.

    Raises:
        CheckpointNotFoundError: the source cannot be found.
        CheckpointError: the source is another kind of model, or its weights do not fit.
        ValueError: naming any bad parameter.
    """

    def __init__(
        self,
        source: str,
        *,
        image_size: int = 448,
        resample: str = "bicubic",
        image_mean: Sequence[float] = pixels.CLIP_MEAN,
        image_std: Sequence[float] = pixels.CLIP_STD,
        output: str = "post_layernorm",
        name: str = "global",
        **common: Any,
    ) -> None:
        self.image_size = positive_int("image_size", image_size)
        pixels.init_image(self, resample, image_mean, image_std)
        if output not in OUTPUTS:
            raise ValueError(f"output {output!r} must be one of {list(OUTPUTS)}")
        self.output = output
        base.init_common(self, source, name, **common)
        model = load_vision_tower(name, self.source, self.attn)
        patch = model.config.patch_size
        if self.image_size % patch:
            raise ValueError(f"image_size {image_size} is not a multiple of the patch size {patch}")
        base.adopt_model(self, model)
        self.num_tokens = (self.image_size // patch) ** 2 + 1

    @property
    def spec(self) -> FeatureSpec:
        """The FeatureSpec of what this encoder writes."""
        preprocess = {
            "image_size": self.image_size,
            "resize": "square (PIL)",
            **pixels.image_spec(self),
            "pos_embed_interpolation": (
                "bicubic, align_corners=False (Blip2VisionEmbeddings.interpolate_pos_encoding)"
                if self.model.config.image_size != self.image_size
                else "none at run time (the weights' grid is the input's)"
            ),
            "trained_image_size": self.model.config.image_size,
            "output": _OUTPUT_NAMES[self.output],
        }
        return base.encoder_spec(self, preprocess, (self.num_tokens, self.model.config.hidden_size), "none")

    def preprocess(self, frames: np.ndarray) -> torch.Tensor:
        """uint8 ``[B, H, W, 3]`` to the float32 pixel tensor ``[B, 3, S, S]`` the model takes (on the CPU)."""
        pixels.check_frames(frames, INPUT_KEY)
        resized = pixels.resize_to_square(frames, self.image_size, self.resample)
        return torch.from_numpy(pixels.normalize(resized, self.image_mean, self.image_std))

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """The model on a float32 pixel batch: ``[B, 3, S, S]`` to float32 ``[B, T, D]`` on the CPU."""
        x = pixel_values.to(self.device, self.compute_dtype)
        if self.output == "ln_vision":
            tokens = self.model.embeddings(x, interpolate_pos_encoding=True)
            hidden = self.model.encoder(inputs_embeds=tokens).last_hidden_state.float()
            return torch.nn.functional.layer_norm(hidden, hidden.shape[-1:], eps=LN_VISION_EPS).cpu()
        out = self.model(pixel_values=x, interpolate_pos_encoding=True).last_hidden_state
        return out.float().cpu()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Encode one batch; see the class docstring for columns.

        Raises:
            KeyError: the batch has no ``frame`` column.
            ValueError: ``frame`` is not uint8 ``[B, H, W, 3]``.
        """
        frames = base.require_column(batch, INPUT_KEY, 4, np.uint8)
        out = np.empty((len(frames), self.num_tokens, self.model.config.hidden_size), dtype=self.output_dtype)
        with torch.inference_mode():
            for a, b in base.chunks(len(frames), self.clips_per_forward):
                out[a:b] = self.forward(self.preprocess(frames[a:b])).numpy()
        return base.pass_through(batch, (INPUT_KEY,), self.name, out)


def load_vision_tower(slot: str, source: str, attn: str) -> Blip2VisionModel:
    """Load the BLIP-2 vision tower from a vision-only or a full BLIP-2 checkpoint, or LAVIS ``eva_vit_g.pth``.

    For a full checkpoint only the ``vision_model.*`` tensors are read (for the
    sharded Salesforce/blip2-opt-2.7b, only the shards that hold them): the Q-Former
    and the language model are never built.

    Raises:
        CheckpointNotFoundError: the source cannot be found.
        CheckpointError: the checkpoint is neither layout, or its weights do not fit.
    """
    if original.is_original_file(source):
        return original.load_original_model(slot, Blip2VisionModel, source, attn)
    config = checkpoints.load_config(slot, source)
    if config.model_type == VISION_ONLY:
        return checkpoints.load_model(slot, Blip2VisionModel, source, attn_implementation=attn)
    if config.model_type != FULL_BLIP2:
        raise CheckpointError(
            f"{slot} encoder: checkpoint {source!r} has model_type {config.model_type!r}; "
            f"expected {VISION_ONLY!r} (a saved Blip2VisionModel) or {FULL_BLIP2!r} (a full BLIP-2 model)"
        )
    vision_config = copy.deepcopy(config.vision_config)
    vision_config._attn_implementation = attn
    state = checkpoints.load_prefixed_weights(slot, source, FULL_PREFIX)
    with torch.device("meta"):
        model = Blip2VisionModel(vision_config)
    checkpoints.assign_weights(slot, source, model, state)
    return model
