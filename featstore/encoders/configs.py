"""The encoders' configs: real sizes (from each checkpoint's config.json, no download
needed) and the tiny stand-ins built from the same classes, one recipe per slot."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from transformers import (
    Blip2Config,
    Blip2ForConditionalGeneration,
    Blip2VisionConfig,
    CLIPConfig,
    CLIPModel,
    CLIPVisionConfig,
    HubertConfig,
    HubertModel,
    PretrainedConfig,
    PreTrainedModel,
    VideoMAEConfig,
    VideoMAEForPreTraining,
    ViTMAEConfig,
    ViTMAEForPreTraining,
    WhisperConfig,
    WhisperForConditionalGeneration,
)

__all__ = ["REAL_CLIP", "REAL_EVA", "REAL_HUBERT", "REAL_MAE", "REAL_VIDEOMAE", "REAL_WHISPER", "real_config"]

# EVA ViT-g/14 as BLIP-2 keeps it (Blip2VisionConfig defaults: 39 blocks, 1408 wide).
REAL_EVA = dict(
    hidden_size=1408,
    intermediate_size=6144,
    num_hidden_layers=39,
    num_attention_heads=16,
    image_size=224,
    patch_size=14,
    layer_norm_eps=1e-6,
    qkv_bias=True,
)
# ViT-L/16 at 224 px, as both MAE and VideoMAE large checkpoints have it.
_VIT_LARGE = dict(
    hidden_size=1024,
    intermediate_size=4096,
    num_hidden_layers=24,
    num_attention_heads=16,
    image_size=224,
    patch_size=16,
    layer_norm_eps=1e-12,
    qkv_bias=True,
)
# facebook/vit-mae-large encoder (the decoder is not part of ViTMAEModel).
REAL_MAE = dict(_VIT_LARGE, mask_ratio=0.0)
# MCG-NJU/videomae-large (pre-training checkpoint: final layer norm, no mean pooling).
REAL_VIDEOMAE = dict(_VIT_LARGE, num_frames=16, tubelet_size=2, use_mean_pooling=False)
# TencentGameMate/chinese-hubert-large: layer-norm conv features, pre-norm ("stable") transformer.
REAL_HUBERT = dict(
    hidden_size=1024,
    intermediate_size=4096,
    num_hidden_layers=24,
    num_attention_heads=16,
    feat_extract_norm="layer",
    do_stable_layer_norm=True,
    conv_bias=False,
    conv_dim=(512,) * 7,
    conv_stride=(5, 2, 2, 2, 2, 2, 2),
    conv_kernel=(10, 3, 3, 3, 3, 2, 2),
    num_conv_pos_embeddings=128,
    num_conv_pos_embedding_groups=16,
)
# openai/clip-vit-large-patch14's vision tower: ViT-L/14 at 224 px, quick_gelu, pre-LN.
REAL_CLIP = dict(
    hidden_size=1024,
    intermediate_size=4096,
    num_hidden_layers=24,
    num_attention_heads=16,
    image_size=224,
    patch_size=14,
    hidden_act="quick_gelu",
    layer_norm_eps=1e-5,
    projection_dim=768,
)
# openai/whisper-large-v3's encoder: 128 mel bins, 32 layers of width 1280, 1500 positions (30 s).
REAL_WHISPER = dict(
    d_model=1280,
    encoder_layers=32,
    encoder_attention_heads=20,
    encoder_ffn_dim=5120,
    num_mel_bins=128,
    max_source_positions=1500,
)

# Tiny stand-ins: the real structure (patch grids, frame counts, conv strides,
# norm placement, 30 s windows) at width 32 and depth 2; initializer_range 0.02 because
# Blip2VisionConfig's default (1e-10) would make a random tower all but constant.
_TINY_BLOCK = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4)
TINY_EVA = {**REAL_EVA, **_TINY_BLOCK, "initializer_range": 0.02}
TINY_MAE = {
    **REAL_MAE,
    **_TINY_BLOCK,
    "decoder_hidden_size": 32,
    "decoder_num_hidden_layers": 1,
    "decoder_num_attention_heads": 4,
    "decoder_intermediate_size": 64,
}
TINY_VIDEOMAE = {
    **REAL_VIDEOMAE,
    **_TINY_BLOCK,
    "decoder_hidden_size": 32,
    "decoder_num_hidden_layers": 1,
    "decoder_num_attention_heads": 4,
    "decoder_intermediate_size": 64,
}
TINY_HUBERT = {
    **REAL_HUBERT,
    **_TINY_BLOCK,
    "conv_dim": (32,) * 7,
    "num_conv_pos_embeddings": 16,
    "num_conv_pos_embedding_groups": 4,
}
_TINY_QFORMER = dict(
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=1,
    num_attention_heads=4,
    vocab_size=64,
    max_position_embeddings=32,
)
_TINY_OPT = dict(
    model_type="opt",
    hidden_size=32,
    ffn_dim=64,
    num_hidden_layers=1,
    num_attention_heads=4,
    vocab_size=64,
    word_embed_proj_dim=32,
    max_position_embeddings=32,
)
# A full CLIPModel, as the real checkpoint is (its text tower is never read).
TINY_CLIP = {**{k: v for k, v in REAL_CLIP.items() if k != "projection_dim"}, **_TINY_BLOCK}
_TINY_CLIP_TEXT = dict(
    _TINY_BLOCK, num_hidden_layers=1, vocab_size=64, max_position_embeddings=16, bos_token_id=2, eos_token_id=3
)
# A full WhisperForConditionalGeneration, as the real checkpoint is (its decoder is never read);
# token ids moved inside the tiny vocabulary.
TINY_WHISPER = {
    **REAL_WHISPER,
    "d_model": 32,
    "encoder_layers": 2,
    "encoder_attention_heads": 4,
    "encoder_ffn_dim": 64,
    "decoder_layers": 1,
    "decoder_attention_heads": 4,
    "decoder_ffn_dim": 64,
    "vocab_size": 64,
    "max_target_positions": 32,
    "pad_token_id": 1,
    "bos_token_id": 2,
    "eos_token_id": 3,
    "decoder_start_token_id": 4,
    "begin_suppress_tokens": None,
    "suppress_tokens": None,
}
# What decides each tiny checkpoint's bytes besides the seed (hashed into its recipe id).
TINY_CONFIGS = {
    "global": [TINY_EVA, _TINY_QFORMER, _TINY_OPT],
    "local": TINY_MAE,
    "temporal": TINY_VIDEOMAE,
    "audio": TINY_HUBERT,
    "frames": [TINY_CLIP, _TINY_CLIP_TEXT],
    "whisper": TINY_WHISPER,
}


def real_config(slot: str) -> PretrainedConfig:
    """The real encoder's config for ``slot``, from the constants above (for meta-device checks and benchmarks).

    Raises:
        KeyError: ``slot`` has no real config.
    """
    configs: dict[str, Callable[[], PretrainedConfig]] = {
        "global": lambda: Blip2VisionConfig(**REAL_EVA),
        "local": lambda: ViTMAEConfig(**REAL_MAE),
        "temporal": lambda: VideoMAEConfig(**REAL_VIDEOMAE),
        "audio": lambda: HubertConfig(**REAL_HUBERT),
        "frames": lambda: CLIPVisionConfig(**REAL_CLIP),
        "whisper": lambda: WhisperConfig(**REAL_WHISPER),
    }
    return configs[slot]()


def tiny_recipes() -> dict[str, Callable[[], PreTrainedModel]]:
    """How each tiny checkpoint is built, as the class its real counterpart is saved as."""

    def blip2() -> PreTrainedModel:
        config = Blip2Config(
            vision_config=TINY_EVA, qformer_config=_TINY_QFORMER, text_config=_TINY_OPT, num_query_tokens=4
        )
        return Blip2ForConditionalGeneration(config)

    def clip() -> PreTrainedModel:
        return CLIPModel(CLIPConfig(vision_config=TINY_CLIP, text_config=_TINY_CLIP_TEXT, projection_dim=16))

    recipes: dict[str, Callable[[], Any]] = {
        "global": blip2,
        "local": lambda: ViTMAEForPreTraining(ViTMAEConfig(**TINY_MAE)),
        "temporal": lambda: VideoMAEForPreTraining(VideoMAEConfig(**TINY_VIDEOMAE)),
        "audio": lambda: HubertModel(HubertConfig(**TINY_HUBERT)),
        "frames": clip,
        "whisper": lambda: WhisperForConditionalGeneration(WhisperConfig(**TINY_WHISPER)),
    }
    return recipes
