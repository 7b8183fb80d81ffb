"""The original Emotion-LLaMA checkpoint files (MiniGPT-v2 runner ``.pth``) read into our model.

What the original saves (``minigpt4/runners/runner_base.py::_save_checkpoint``):
``torch.save({"model": state_dict, "optimizer", "config", "scaler", "epoch"})``
where every parameter with ``requires_grad=False`` was deleted first, so
``"model"`` holds only the trainable ones. In ``minigpt4/models/minigpt_v2.py``
those are five projectors and the LoRA matrices of the peft-wrapped LLaMA:

===========================  ======================  ===========================
original key                 ours                    what it projects
===========================  ======================  ===========================
``llama_proj``               ``projector.patch``     4 EVA patch tokens, concatenated
``cls_tk_llama_proj``        ``projector.cls``       the EVA CLS token
``feats_llama_proj1``        ``vectors.local``       FaceMAE (``mae_340_UTT``)
``feats_llama_proj2``        ``vectors.temporal``    VideoMAE (``maeV_399_UTT``)
``feats_llama_proj3``        ``vectors.audio``       HuBERT (``HL-UTT``)
===========================  ======================  ===========================

The order of proj1-3 is the order of ``video_features = cat(FaceMAE, VideoMAE,
Audio)`` in ``first_face.py``. The LoRA matrices sit under
``llama_model.base_model.model.`` (``get_peft_model`` around the LLaMA), as
``...self_attn.q_proj.lora_A.weight`` in the peft 0.2.0 the original pins, or
``...lora_A.default.weight`` in newer peft; both are read.

MiniGPT-v2's own ``minigptv2_checkpoint.pth`` (the stage-1 starting point) has
the same layout without the four feature projectors (``cls_tk_llama_proj`` and
``feats_llama_proj1-3``), which then keep their initialisation and are reported.

The original loads with ``load_state_dict(..., strict=False)``, so a missing or
misspelt key passes silently there; here every unknown, missing or
wrongly-shaped tensor is an error that names it. Files are read with
``torch.load(weights_only=True)``: tensors and plain containers, never objects.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "FEATURE_PROJECTORS",
    "LORA_PREFIX",
    "ORIGINAL_PROJECTORS",
    "OriginalCheckpointError",
    "OriginalImport",
    "load_original_into",
    "read_original",
    "split_original",
]

# Original module name -> our projector state-dict prefix (see the module docstring).
ORIGINAL_PROJECTORS = {
    "llama_proj": "patch",
    "cls_tk_llama_proj": "cls",
    "feats_llama_proj1": "vectors.local",
    "feats_llama_proj2": "vectors.temporal",
    "feats_llama_proj3": "vectors.audio",
}
# The ones MiniGPT-v2's base checkpoint lacks: Emotion-LLaMA added them.
FEATURE_PROJECTORS = ("cls_tk_llama_proj", "feats_llama_proj1", "feats_llama_proj2", "feats_llama_proj3")
LORA_PREFIX = "llama_model."  # then peft's own base_model.model.<LLaMA path>
_LORA_PARTS = (".lora_A.", ".lora_B.")


class OriginalCheckpointError(ValueError):
    """An original checkpoint that does not fit the model: names the keys and shapes."""


@dataclass
class OriginalImport:
    """What ``load_original_into`` did.

    Attributes:
        path: the file read.
        sha256: its sha256.
        projectors: original projector names loaded.
        left_at_init: original projector names the file lacks (left at their initialisation).
        lora_tensors: LoRA tensors loaded.
        lora_naming: "peft 0.2 (lora_A.weight)" or "peft >= 0.3 (lora_A.default.weight)".
        lora_rank: the rank of the file's LoRA matrices.
        original_config: the file's ``config`` entry (its training config), or {}.
        epoch: the file's ``epoch`` entry, or None.
    """

    path: str
    sha256: str
    projectors: list[str] = field(default_factory=list)
    left_at_init: list[str] = field(default_factory=list)
    lora_tensors: int = 0
    lora_naming: str = ""
    lora_rank: int | None = None
    original_config: dict[str, Any] = field(default_factory=dict)
    epoch: Any = None

    def to_dict(self) -> dict[str, Any]:
        """Plain data for a checkpoint's ``state.json``."""
        out = {k: v for k, v in asdict(self).items() if k != "original_config"}
        return {**out, "epoch": self.epoch if isinstance(self.epoch, (int, float, str)) else None}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def read_original(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The tensors of an original checkpoint file, and its other entries.

    Args:
        path: a ``.pth`` saved by the MiniGPT-v2 runner (``{"model": ...}``) or a bare state dict.

    Returns:
        ``(state_dict, extras)``: the ``"model"`` tensors, and ``config`` / ``epoch`` when present.

    Raises:
        FileNotFoundError: naming the path.
        OriginalCheckpointError: the file holds objects beyond tensors and plain data, or no tensors.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"original checkpoint {path} does not exist")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # the unpickler refuses objects with several exception types
        raise OriginalCheckpointError(
            f"{path} cannot be read as tensors and plain data (torch.load weights_only=True): "
            f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
        ) from None
    if isinstance(obj, Mapping) and isinstance(obj.get("model"), Mapping):
        state, extras = dict(obj["model"]), {k: obj.get(k) for k in ("config", "epoch") if k in obj}
    elif isinstance(obj, Mapping) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        state, extras = dict(obj), {}
    else:
        what = sorted(obj)[:8] if isinstance(obj, Mapping) else type(obj).__name__
        raise OriginalCheckpointError(f"{path} is neither {{'model': state_dict, ...}} nor a state dict: {what}")
    bad = sorted(k for k, v in state.items() if not isinstance(v, torch.Tensor))
    if bad or not state:
        raise OriginalCheckpointError(f"{path}: 'model' holds {'non-tensors ' + str(bad[:5]) if bad else 'nothing'}")
    return state, extras


def _lora_key(key: str) -> tuple[str, bool]:
    """Original LoRA key -> peft's adapter-name-free key, and whether it had ``.default``."""
    rest = key[len(LORA_PREFIX) :]
    for part in _LORA_PARTS:
        head, sep, tail = rest.partition(part)
        if sep:
            had_default = tail.startswith("default.")
            return head + part + (tail[len("default.") :] if had_default else tail), had_default
    raise AssertionError(key)


def split_original(
    state: Mapping[str, torch.Tensor],
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], dict[str, bool], list[str]]:
    """Sort an original state dict into our projector keys, peft LoRA keys, and the rest.

    Returns:
        ``(projector, lora, naming, unknown)``: our projector state dict (by original module),
        LoRA tensors under peft's key without adapter name, for each LoRA key whether it had
        ``.default``, and the keys that are neither.
    """
    projector, lora, naming, unknown = {}, {}, {}, []
    for key, tensor in state.items():
        module, _, leaf = key.partition(".")
        if module in ORIGINAL_PROJECTORS and leaf in ("weight", "bias"):
            projector[f"{ORIGINAL_PROJECTORS[module]}.{leaf}"] = tensor
        elif key.startswith(LORA_PREFIX) and any(p in key for p in _LORA_PARTS):
            ours, had_default = _lora_key(key)
            if ours in lora:
                raise OriginalCheckpointError(f"LoRA tensor {ours} appears twice (with and without '.default')")
            lora[ours], naming[ours] = tensor, had_default
        else:
            unknown.append(key)
    return projector, lora, naming, sorted(unknown)


def _check_shapes(have: Mapping[str, torch.Tensor], want: Mapping[str, torch.Tensor], what: str) -> None:
    wrong = [
        f"{k}: file {list(v.shape)}, model {list(want[k].shape)}"
        for k, v in sorted(have.items())
        if tuple(v.shape) != tuple(want[k].shape)
    ]
    if wrong:
        raise OriginalCheckpointError(f"{what} of the wrong shape ({len(wrong)}): {'; '.join(wrong[:6])}")


def _names(keys: Iterable[str], limit: int = 8) -> str:
    keys = sorted(keys)
    more = f" and {len(keys) - limit} more" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def load_original_into(model, path: str | Path, allow_missing: Iterable[str] = ()) -> OriginalImport:
    """Load an original checkpoint's projectors and LoRA matrices into ``model`` (an ``EmotionLlama``).

    Args:
        model: the model, built with LoRA on the modules the original tuned (q_proj, v_proj).
        path: the original ``.pth``.
        allow_missing: original projector names that may be absent (``FEATURE_PROJECTORS`` for
            MiniGPT-v2's base checkpoint); they keep the model's initialisation.

    Returns:
        What was loaded and what was left at initialisation.

    Raises:
        OriginalCheckpointError: unknown keys, missing keys (projectors or LoRA), or wrong shapes, named.
    """
    from peft import get_peft_model_state_dict, set_peft_model_state_dict

    path = Path(path)
    state, extras = read_original(path)
    projector, lora, naming, unknown = split_original(state)
    if unknown:
        raise OriginalCheckpointError(
            f"{path}: {len(unknown)} key(s) that are neither Emotion-LLaMA projectors "
            f"({', '.join(ORIGINAL_PROJECTORS)}) nor LoRA matrices under {LORA_PREFIX!r}: {_names(unknown)}"
        )
    ours = model.projector.state_dict()
    inverse = {v: k for k, v in ORIGINAL_PROJECTORS.items()}
    missing_modules = sorted(
        {inverse[k.rsplit(".", 1)[0]] for k in ours if k not in projector}, key=list(ORIGINAL_PROJECTORS).index
    )
    refused = [m for m in missing_modules if m not in set(allow_missing)]
    if refused:
        hint = (
            " (MiniGPT-v2's base checkpoint lacks the four feature projectors: import it with --base)"
            if set(refused) <= set(FEATURE_PROJECTORS)
            else ""
        )
        raise OriginalCheckpointError(f"{path}: projector weights missing: {', '.join(refused)}{hint}")
    _check_shapes(projector, ours, f"{path}: projector weights")
    want_lora = get_peft_model_state_dict(model.llm)
    missing_lora = sorted(set(want_lora) - set(lora))
    extra_lora = sorted(set(lora) - set(want_lora))
    if missing_lora or extra_lora:
        raise OriginalCheckpointError(
            f"{path}: LoRA matrices do not fit the model's adapter (LoRA on {sorted(model.llm.peft_config['default'].target_modules)}): "
            f"missing {len(missing_lora)} ({_names(missing_lora, 4)}), not in the model {len(extra_lora)} "
            f"({_names(extra_lora, 4)})"
        )
    _check_shapes(lora, want_lora, f"{path}: LoRA matrices")
    with torch.no_grad():
        for key, tensor in projector.items():
            ours[key].copy_(tensor.to(ours[key].dtype))
    loaded = {k: v.to(want_lora[k].dtype) for k, v in lora.items()}
    result = set_peft_model_state_dict(model.llm, loaded)
    assert not getattr(result, "unexpected_keys", []), result
    ranks = {int(v.shape[0]) for k, v in lora.items() if ".lora_A." in k}
    styles = set(naming.values())
    return OriginalImport(
        path=str(path),
        sha256=_sha256(path),
        projectors=sorted({inverse[k.rsplit(".", 1)[0]] for k in projector}, key=list(ORIGINAL_PROJECTORS).index),
        left_at_init=missing_modules,
        lora_tensors=len(lora),
        lora_naming=" and ".join(
            n
            for flag, n in ((False, "peft 0.2 (lora_A.weight)"), (True, "peft >= 0.3 (lora_A.default.weight)"))
            if flag in styles
        ),
        lora_rank=ranks.pop() if len(ranks) == 1 else None,
        original_config=extras.get("config") if isinstance(extras.get("config"), dict) else {},
        epoch=extras.get("epoch"),
    )


def original_lora_settings(path: str | Path) -> dict[str, Any]:
    """LoRA rank (from the matrices' shapes) and alpha (from the file's config, if it says) of a file.

    Returns:
        ``{"r": int | None, "alpha": int | None, "targets": [module names]}``.
    """
    state, extras = read_original(path)
    _, lora, _, _ = split_original(state)
    ranks = {int(v.shape[0]) for k, v in lora.items() if ".lora_A." in k}
    targets = sorted({k.split(".lora_")[0].rsplit(".", 1)[-1] for k in lora})
    model_cfg = (extras.get("config") or {}).get("model", {}) if isinstance(extras.get("config"), dict) else {}
    alpha = model_cfg.get("lora_alpha") if isinstance(model_cfg, dict) else None
    return {"r": ranks.pop() if len(ranks) == 1 else None, "alpha": alpha, "targets": targets}
