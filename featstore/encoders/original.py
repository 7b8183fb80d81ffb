"""The original Emotion-LLaMA encoder files, converted into the transformers classes our encoders use.

- ``global``: LAVIS ``eva_vit_g.pth`` (``minigpt4/models/eva_vit.py``: ``create_eva_vit_g``)
  into ``Blip2VisionModel``. As the original: the first 39 blocks are kept
  (the file's later ones are dropped, as its ``strict=False`` load drops
  them), ``pos_embed`` is interpolated once at load from the file's grid to
  448 px (``interpolate_pos_embed``: float32, bicubic, ``align_corners=False``),
  16 heads of 88 (``num_heads=1408 // 88``), LayerNorm eps 1e-6, exact GELU,
  and ``q_bias`` / ``v_bias`` become the fused qkv bias with zeros for k.
- ``local``: the MAE ViT-L checkpoint of ``mae_340_UTT`` (``models_vit.py``, a timm
  ``VisionTransformer``: ``patch_embed``, ``cls_token``, ``pos_embed``, ``blocks.N``
  with fused ``qkv``, ``norm``) into ``ViTMAEModel``; MAE's decoder, mask token and any
  classifier head are dropped.
- ``temporal``: the VideoMAE ViT-L checkpoint of ``maeV_399_UTT`` (``modeling_finetune.py``:
  ``patch_embed`` Conv3d, ``blocks.N`` with ``qkv.weight`` + ``q_bias`` / ``v_bias``, fixed
  sin-cos positions, ``use_mean_pooling=True`` so no final norm) into ``VideoMAEModel``
  with ``use_mean_pooling=True``; ``encoder.`` / ``backbone.`` prefixes are stripped and the
  pre-training decoder, the unused final ``norm``, ``fc_norm`` and head are dropped, as the
  original's non-strict load drops or never uses them.

Files are read with ``torch.load(weights_only=True)`` (``"model"`` or ``"module"`` entry,
or a bare state dict). Anything else in a file is an error naming the keys.
``ORIGINAL_OPTIONS`` holds the preprocessing the original applied to each
encoder's input and output; weights from an original file (or a folder
converted from one, marked by ``MARKER``) get those options by default.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from featstore.errors import CheckpointError, CheckpointNotFoundError

__all__ = [
    "EVA_DEPTH",
    "EVA_HEAD_DIM",
    "MARKER",
    "ORIGINAL_OPTIONS",
    "ORIGINAL_SUFFIXES",
    "convert_eva",
    "convert_mae",
    "convert_videomae",
    "is_original_file",
    "load_encoder_model",
    "load_original_model",
    "original_options",
    "save_converted",
]

ORIGINAL_SUFFIXES = (".pth", ".pt")
MARKER = "featstore_original.json"  # in a folder written by save_converted
EVA_DEPTH = 39  # create_eva_vit_g(depth=39): BLIP-2 drops EVA ViT-g's 40th block
EVA_HEAD_DIM = 88  # num_heads = 1408 // 88
EVA_IMAGE_SIZE = 448  # MiniGPT-v2 / Emotion-LLaMA's img_size
EVA_EPS = 1e-6  # norm_layer=partial(nn.LayerNorm, eps=1e-6)
VIT_EPS = 1e-6  # models_vit.vit_large_patch16 and modeling_finetune.vit_large_patch16_224
VIDEOMAE_FRAMES, VIDEOMAE_TUBELET = 16, 2  # modeling_finetune defaults: all_frames=16, tubelet_size=2

# The original's preprocessing and pooling, per slot (see each encoder's options):
# global: Blip2ImageEvalProcessor (448 px bicubic, CLIP mean/std, our defaults) and the
#   frozen, never-trained ln_vision = LayerNorm(1408) at weight 1, bias 0, eps 1e-5;
# local: transforms.Resize((224, 224)) + ToTensor, no normalisation; CLS token after
#   the final norm (global_pool=False), mean over the face frames;
# temporal: GroupResize(224) (PIL bilinear) + ToTorchFormatTensor, no normalisation;
#   mean over all 1568 tokens of the last block (no final norm).
_NO_NORM = {"image_mean": (0.0, 0.0, 0.0), "image_std": (1.0, 1.0, 1.0)}
ORIGINAL_OPTIONS: Mapping[str, Mapping[str, Any]] = {
    "global": {"output": "ln_vision"},
    "local": {"pool": "cls", "resample": "bilinear", **_NO_NORM},
    "temporal": {"resample": "bilinear", **_NO_NORM},
}


def is_original_file(source: str | Path) -> bool:
    """Whether ``source`` names an original checkpoint file (``.pth`` / ``.pt``) rather than a folder or hub name."""
    return Path(str(source)).suffix in ORIGINAL_SUFFIXES


def original_options(slot: str, source: str | Path) -> dict[str, Any]:
    """The original's preprocessing for ``slot`` when ``source`` holds the original's weights, else {}."""
    if slot not in ORIGINAL_OPTIONS:
        return {}
    marker = Path(str(source)) / MARKER
    if is_original_file(source) or (marker.is_file() and json.loads(marker.read_text()).get("slot") == slot):
        return dict(ORIGINAL_OPTIONS[slot])
    return {}


def read_state(slot: str, path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of an original encoder file.

    Raises:
        CheckpointNotFoundError: no such file.
        CheckpointError: the file holds objects beyond tensors, or no tensors.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise CheckpointNotFoundError(f"{slot} encoder: original checkpoint file {str(path)!r} does not exist")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as e:  # the restricted unpickler raises several types for objects it refuses
        raise CheckpointError(
            f"{slot} encoder: {path} cannot be read as tensors (torch.load weights_only=True): {type(e).__name__}"
        ) from None
    if isinstance(obj, Mapping):
        for key in ("model", "module", "state_dict"):
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not obj:
        raise CheckpointError(f"{slot} encoder: {path} holds no state dict")
    state = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    others = sorted(set(obj) - set(state))
    if others or not state:
        raise CheckpointError(f"{slot} encoder: {path} has entries that are not tensors: {others[:5]}")
    return state


# Per block: ours=theirs, the layers whose weight and bias are copied as they are.
_EVA_LINEAR = "self_attn.projection=attn.proj layer_norm1=norm1 layer_norm2=norm2 mlp.fc1=mlp.fc1 mlp.fc2=mlp.fc2"
_MAE_LINEAR = "attention.o_proj=attn.proj layernorm_before=norm1 layernorm_after=norm2 mlp.fc1=mlp.fc1 mlp.fc2=mlp.fc2"
_VIDEOMAE_LINEAR = "attention.output.dense=attn.proj layernorm_before=norm1 layernorm_after=norm2 intermediate.dense=mlp.fc1 output.dense=mlp.fc2"


def _copy_linear(
    out: dict[str, torch.Tensor], state: dict[str, torch.Tensor], slot: str, b: str, o: str, pairs: str
) -> None:
    """Weight and bias of each ``ours=theirs`` pair: ``state[b + theirs]`` into ``out[o + ours]``."""
    for ours, theirs in (pair.split("=") for pair in pairs.split()):
        for part in (".weight", ".bias"):
            out[o + ours + part] = _take(state, b + theirs + part, slot)


def _take(state: dict[str, torch.Tensor], key: str, slot: str) -> torch.Tensor:
    if key not in state:
        raise CheckpointError(f"{slot} encoder: the original file lacks {key!r}")
    return state.pop(key)


def _blocks(state: Mapping[str, torch.Tensor], prefix: str = "blocks.") -> int:
    found = {int(m.group(1)) for k in state if (m := re.match(re.escape(prefix) + r"(\d+)\.", k))}
    if not found or found != set(range(max(found) + 1)):
        raise CheckpointError(f"transformer blocks {sorted(found)[:5]}... are not numbered 0..N-1")
    return max(found) + 1


def _left_over(slot: str, state: Mapping[str, torch.Tensor]) -> None:
    if state:
        raise CheckpointError(
            f"{slot} encoder: {len(state)} tensor(s) of the original file have no place in the model: "
            f"{sorted(state)[:8]}"
        )


def interpolate_pos_embed(pos_embed: torch.Tensor, grid: int) -> torch.Tensor:
    """``eva_vit.py::interpolate_pos_embed``: extra (CLS) token kept, the patch grid resized bicubically."""
    pos = pos_embed.float()
    dim = pos.shape[-1]
    old = int((pos.shape[-2] - 1) ** 0.5)
    if old == grid:
        return pos
    extra, tokens = pos[:, :1], pos[:, 1:]
    tokens = tokens.reshape(-1, old, old, dim).permute(0, 3, 1, 2)
    tokens = torch.nn.functional.interpolate(tokens, size=(grid, grid), mode="bicubic", align_corners=False)
    return torch.cat((extra, tokens.permute(0, 2, 3, 1).flatten(1, 2)), dim=1)


def convert_eva(
    state: dict[str, torch.Tensor], image_size: int = EVA_IMAGE_SIZE, depth: int = EVA_DEPTH
) -> tuple[Any, dict[str, torch.Tensor], dict[str, Any]]:
    """LAVIS EVA ViT-g state dict -> ``(Blip2VisionConfig, state dict, what was dropped)``."""
    from transformers import Blip2VisionConfig

    state = dict(state)
    slot = "global"
    total = _blocks(state)
    keep = min(depth, total)
    dropped = sorted(k for k in state if re.match(r"blocks\.(\d+)\.", k) and int(k.split(".")[1]) >= keep)
    for k in dropped:
        del state[k]
    patch = _take(state, "patch_embed.proj.weight", slot)
    width, _, p, _ = patch.shape
    if width % EVA_HEAD_DIM:
        raise CheckpointError(f"{slot} encoder: width {width} is not a multiple of EVA's head size {EVA_HEAD_DIM}")
    if image_size % p:
        raise CheckpointError(f"{slot} encoder: image size {image_size} is not a multiple of the patch size {p}")
    out = {
        "embeddings.patch_embedding.weight": patch,
        "embeddings.patch_embedding.bias": _take(state, "patch_embed.proj.bias", slot),
        "embeddings.class_embedding": _take(state, "cls_token", slot),
        "embeddings.position_embedding": interpolate_pos_embed(_take(state, "pos_embed", slot), image_size // p),
    }
    hidden = None
    for i in range(keep):
        b, o = f"blocks.{i}.", f"encoder.layers.{i}."
        q_bias, v_bias = _take(state, b + "attn.q_bias", slot), _take(state, b + "attn.v_bias", slot)
        out[o + "self_attn.qkv.weight"] = _take(state, b + "attn.qkv.weight", slot)
        out[o + "self_attn.qkv.bias"] = torch.cat((q_bias, torch.zeros_like(v_bias), v_bias))
        _copy_linear(out, state, slot, b, o, _EVA_LINEAR)
        hidden = out[o + "mlp.fc1.weight"].shape[0]
    _left_over(slot, state)
    # Blip2VisionModel's post_layernorm is not part of EVA: unit weights, so that
    # last_hidden_state is at least defined; the original's output is ln_vision.
    out["post_layernorm.weight"] = torch.ones(width, dtype=patch.dtype)
    out["post_layernorm.bias"] = torch.zeros(width, dtype=patch.dtype)
    config = _vit_config(Blip2VisionConfig, width, hidden, keep, EVA_HEAD_DIM, image_size, p, EVA_EPS, qkv_bias=True)
    return config, out, {"blocks_in_file": total, "blocks_kept": keep, "dropped": len(dropped)}


def _vit_config(
    cls: Any, width: int, hidden: int, depth: int, head_dim: int, image_size: int, patch: int, eps: float, **extra: Any
) -> Any:
    """A transformers ViT-family config for weights of this width, MLP size and depth (GELU MLPs)."""
    return cls(
        hidden_size=width,
        intermediate_size=hidden,
        num_hidden_layers=depth,
        num_attention_heads=width // head_dim,
        image_size=image_size,
        patch_size=patch,
        hidden_act="gelu",
        layer_norm_eps=eps,
        **extra,
    )


def _split_qkv(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return tuple(weight.chunk(3, dim=0))  # fused as q, k, v (reshape(B, N, 3, heads, d) in the original)


def convert_mae(state: dict[str, torch.Tensor]) -> tuple[Any, dict[str, torch.Tensor], dict[str, Any]]:
    """MAE ViT (timm layout) state dict -> ``(ViTMAEConfig, state dict, what was dropped)``."""
    from transformers import ViTMAEConfig

    slot = "local"
    state = dict(state)
    unused = sorted(k for k in state if k.startswith(("decoder", "mask_token", "head.", "fc_norm.")))
    for k in unused:
        del state[k]
    depth = _blocks(state)
    patch = _take(state, "patch_embed.proj.weight", slot)
    width, _, p, _ = patch.shape
    pos = _take(state, "pos_embed", slot)
    grid = int(round((pos.shape[1] - 1) ** 0.5))
    out = {
        "embeddings.patch_embeddings.projection.weight": patch,
        "embeddings.patch_embeddings.projection.bias": _take(state, "patch_embed.proj.bias", slot),
        "embeddings.cls_token": _take(state, "cls_token", slot),
        "embeddings.position_embeddings": pos,
    }
    unit_norm = "norm.weight" not in state
    if unit_norm:  # the original's strict=False load leaves the LayerNorm at its initialisation
        out["layernorm.weight"], out["layernorm.bias"] = torch.ones(width), torch.zeros(width)
    else:
        out["layernorm.weight"], out["layernorm.bias"] = (
            _take(state, "norm.weight", slot),
            _take(state, "norm.bias", slot),
        )
    hidden = None
    for i in range(depth):
        b, o = f"blocks.{i}.", f"layers.{i}."
        for name, w in zip("qkv", _split_qkv(_take(state, b + "attn.qkv.weight", slot))):
            out[f"{o}attention.{name}_proj.weight"] = w
        for name, w in zip("qkv", _split_qkv(_take(state, b + "attn.qkv.bias", slot))):
            out[f"{o}attention.{name}_proj.bias"] = w
        _copy_linear(out, state, slot, b, o, _MAE_LINEAR)
        hidden = out[o + "mlp.fc1.weight"].shape[0]
    _left_over(slot, state)
    # vit_large_patch16: 16 heads of 64 (mae/models_vit.py)
    config = _vit_config(ViTMAEConfig, width, hidden, depth, 64, grid * p, p, VIT_EPS, qkv_bias=True, mask_ratio=0.0)
    return config, out, {"dropped": len(unused), "unit_final_norm": unit_norm}


def convert_videomae(state: dict[str, torch.Tensor]) -> tuple[Any, dict[str, torch.Tensor], dict[str, Any]]:
    """VideoMAE (modeling_finetune layout) state dict -> ``(VideoMAEConfig, state dict, what was dropped)``."""
    from transformers import VideoMAEConfig

    slot = "temporal"
    stripped = {}
    for k, v in state.items():
        for prefix in ("backbone.", "encoder."):  # extract_maeVideo_embedding.py strips these
            if k.startswith(prefix):
                k = k[len(prefix) :]
                break
        stripped[k] = v
    unused = sorted(
        k
        for k in stripped
        if k.startswith(("decoder", "encoder_to_decoder", "mask_token", "head.", "fc_norm.", "norm.", "pos_embed"))
    )
    state = {k: v for k, v in stripped.items() if k not in unused}
    depth = _blocks(state)
    patch = _take(state, "patch_embed.proj.weight", slot)
    width, _, tubelet, p, _ = patch.shape
    out = {
        "embeddings.patch_embeddings.projection.weight": patch,
        "embeddings.patch_embeddings.projection.bias": _take(state, "patch_embed.proj.bias", slot),
    }
    hidden = None
    for i in range(depth):
        b, o = f"blocks.{i}.", f"encoder.layer.{i}."
        q, k, v = _split_qkv(_take(state, b + "attn.qkv.weight", slot))
        a = o + "attention.attention."
        out[a + "query.weight"], out[a + "key.weight"], out[a + "value.weight"] = q, k, v
        out[a + "query.bias"] = _take(state, b + "attn.q_bias", slot)
        out[a + "value.bias"] = _take(state, b + "attn.v_bias", slot)
        _copy_linear(out, state, slot, b, o, _VIDEOMAE_LINEAR)
        hidden = out[o + "intermediate.dense.weight"].shape[0]
    _left_over(slot, state)
    config = _vit_config(  # vit_large_patch16_224: 16 heads of 64
        VideoMAEConfig, width, hidden, depth, 64, 224, p, VIT_EPS,
        num_frames=VIDEOMAE_FRAMES, tubelet_size=tubelet, qv_bias=True, use_mean_pooling=True,
    )  # fmt: skip
    return config, out, {"dropped": len(unused)}


_CONVERTERS = {"Blip2VisionModel": convert_eva, "ViTMAEModel": convert_mae, "VideoMAEModel": convert_videomae}


def load_original_model(slot: str, model_cls: type, path: str | Path, attn: str):
    """Build ``model_cls`` (``Blip2VisionModel``, ``ViTMAEModel`` or ``VideoMAEModel``) from an original file.

    Raises:
        CheckpointNotFoundError: no such file.
        CheckpointError: the file does not fit (keys named), or ``model_cls`` has no converter.
    """
    from featstore.encoders.checkpoints import assign_weights

    name = model_cls.__name__
    if name not in _CONVERTERS:
        raise CheckpointError(
            f"{slot} encoder: no converter for original .pth files into {name}; give a transformers folder"
        )
    try:
        config, state, _ = _CONVERTERS[name](read_state(slot, path))
    except CheckpointError as e:
        raise CheckpointError(f"{e} (file {path})") from None
    config._attn_implementation = attn
    with torch.device("meta"):
        model = model_cls(config)
    assign_weights(slot, str(path), model, {k: v.contiguous() for k, v in state.items()})
    return model


def load_encoder_model(slot: str, model_cls: type, source: str, attn: str, **kwargs: Any):
    """An encoder's model from an original file (``load_original_model``) or a transformers
    folder / hub name (``checkpoints.load_model`` with ``kwargs`` as config overrides)."""
    from featstore.encoders import checkpoints

    if is_original_file(source):
        return load_original_model(slot, model_cls, source, attn)
    return checkpoints.load_model(slot, model_cls, source, attn_implementation=attn, **kwargs)


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def save_converted(slot: str, model_cls: type, path: str | Path, out_dir: str | Path) -> Path:
    """Convert an original file and ``save_pretrained`` it into ``out_dir``, with a ``MARKER`` file
    naming the slot and the file's sha256 (so the folder gets the original's preprocessing too).

    Returns:
        The folder.
    """
    model = load_original_model(slot, model_cls, path, "sdpa")
    out = Path(out_dir)
    model.save_pretrained(out)
    (out / MARKER).write_text(
        json.dumps({"slot": slot, "file": Path(path).name, "sha256": file_sha256(path)}, indent=2) + "\n"
    )
    return out
