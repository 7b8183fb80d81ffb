"""Loading encoder checkpoints from a local folder or a hub name, with errors that say what to do.

A missing checkpoint (a bad path, or a hub name that neither the network nor
the local cache can provide) raises ``CheckpointNotFoundError`` naming the slot,
the source and the two ways to provide it, never a hub traceback. A checkpoint
that exists but does not fit the model raises ``CheckpointError``: weights that
would otherwise be left at their random initial values make features that look
fine and mean nothing.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig, PretrainedConfig, PreTrainedModel
from transformers.utils import cached_file

from featstore.errors import CheckpointError, CheckpointNotFoundError

# Weight files in the order transformers itself prefers them.
_WEIGHT_FILES = (
    ("model.safetensors.index.json", "safetensors"),
    ("model.safetensors", "safetensors"),
    ("pytorch_model.bin.index.json", "bin"),
    ("pytorch_model.bin", "bin"),
)


def looks_like_path(source: str | os.PathLike) -> bool:
    """Whether ``source`` is meant as a local path rather than a hub name ``owner/name``.

    Anything that exists on disk, is absolute, starts with ``.`` or ``~``, or has
    more than one ``/`` (hub names have at most one) is a path.
    """
    if isinstance(source, Path):
        return True
    text = str(source)
    if os.path.exists(os.path.expanduser(text)):
        return True
    return os.path.isabs(text) or text.startswith((".", "~")) or text.count("/") > 1 or "\\" in text


def not_found(slot: str, source: str, why: str) -> CheckpointNotFoundError:
    """The error for a checkpoint that cannot be found, with the ways to provide it."""
    return CheckpointNotFoundError(
        f"{slot} encoder: checkpoint {source!r} not found ({why}). Provide it in one of two ways: "
        f"download it where there is network access, e.g. `huggingface-cli download NAME --local-dir DIR` "
        f"(or `hf download NAME --local-dir DIR`), and pass DIR as the {slot!r} source "
        f"(overrides={{{slot!r}: DIR}}); or set HF_HOME to a Hugging Face cache that already holds NAME."
    )


def resolve_source(slot: str, source: str | os.PathLike) -> str:
    """Check a local source exists before transformers sees it; hub names pass through.

    Args:
        slot: The encoder slot, for error messages.
        source: A folder holding ``config.json`` and weights, or a hub name.

    Returns:
        The source as a string (user home expanded for paths).

    Raises:
        CheckpointNotFoundError: a path that is missing, or a file rather than a folder.
    """
    if not looks_like_path(source):
        return str(source)
    path = Path(os.path.expanduser(str(source)))
    if not path.exists():
        raise not_found(slot, str(source), "no such folder")
    if not path.is_dir():
        raise not_found(slot, str(source), "it is a file; pass the folder that holds config.json and the weights")
    if not (path / "config.json").is_file():
        raise not_found(slot, str(source), "the folder has no config.json")
    return str(path)


def load_config(slot: str, source: str) -> PretrainedConfig:
    """Read a checkpoint's config.

    Raises:
        CheckpointNotFoundError: the source cannot be found or fetched.
    """
    source = resolve_source(slot, source)
    try:
        return AutoConfig.from_pretrained(source)
    except (OSError, ValueError) as e:
        raise not_found(slot, source, _short(e)) from None


def load_model(
    slot: str,
    model_cls: type[PreTrainedModel],
    source: str,
    model_types: tuple[str, ...] | None = None,
    **kwargs: Any,
) -> PreTrainedModel:
    """``model_cls.from_pretrained(source, **kwargs)``, refusing weights that leave parts of the model unset.

    Args:
        slot: The encoder slot, for error messages.
        model_cls: A transformers model class, e.g. ``ViTMAEModel``.
        source: A local folder or a hub name.
        model_types: the checkpoint ``model_type`` values accepted (default: only
            ``model_cls``'s own; e.g. a full ``clip`` checkpoint for ``CLIPVisionModel``).
        **kwargs: Passed to ``from_pretrained`` (config overrides, ``attn_implementation``).

    Returns:
        The model, on the CPU, in the checkpoint's dtype.

    Raises:
        CheckpointNotFoundError: the source cannot be found or fetched.
        CheckpointError: the checkpoint is of another model type, or its weights do not cover the model.
    """
    source = resolve_source(slot, source)
    expected = model_types or (model_cls.config_class.model_type,)
    found = load_config(slot, source).model_type
    if found not in expected:
        want = " or ".join(repr(t) for t in expected)
        raise CheckpointError(
            f"{slot} encoder: checkpoint {source!r} has model_type {found!r}; {model_cls.__name__} needs {want}"
        )
    try:
        model, info = model_cls.from_pretrained(source, output_loading_info=True, dtype="auto", **kwargs)
    except OSError as e:
        raise not_found(slot, source, _short(e)) from None
    except (RuntimeError, ValueError) as e:
        # transformers raises these for weights of the wrong shape or an unusable config.
        raise CheckpointError(
            f"{slot} encoder: checkpoint {source!r} cannot be loaded as {model_cls.__name__}: {_short(e)}"
        ) from None
    bad = sorted(info.get("missing_keys", ())) + sorted(str(k) for k in info.get("mismatched_keys", ()))
    if bad:
        raise CheckpointError(
            f"{slot} encoder: checkpoint {source!r} does not fit {model_cls.__name__}: "
            f"{len(bad)} weights missing or of the wrong shape, e.g. {bad[:5]}"
        )
    return model


def load_prefixed_weights(slot: str, source: str, prefix: str) -> dict[str, torch.Tensor]:
    """The tensors under ``prefix`` in a checkpoint's weight files, with the prefix removed.

    Reads only the shards that hold such tensors (for a sharded checkpoint, the
    index says which), from safetensors or, failing that, ``torch.load(weights_only=True)``.

    Raises:
        CheckpointNotFoundError: the source has no weight files or cannot be fetched.
        CheckpointError: no tensor in the checkpoint starts with ``prefix``.
    """
    source = resolve_source(slot, source)
    for filename, kind in _WEIGHT_FILES:
        path = _fetch(slot, source, filename)
        if path is None:
            continue
        if filename.endswith(".index.json"):
            weight_map = json.loads(Path(path).read_text())["weight_map"]
            names = sorted({f for k, f in weight_map.items() if k.startswith(prefix)})
            files = [_fetch(slot, source, n) for n in names]
            if any(f is None for f in files):
                raise not_found(slot, source, f"a shard named in {filename} is missing")
        else:
            files = [path]
        state = {}
        for f in files:
            state.update(_read_prefixed(f, kind, prefix))
        if not state:
            raise CheckpointError(f"{slot} encoder: checkpoint {source!r} has no weights under {prefix!r}")
        return state
    raise not_found(slot, source, f"no weight file ({', '.join(f for f, _ in _WEIGHT_FILES)})")


def _fetch(slot: str, source: str, filename: str) -> str | None:
    """Local path of ``filename`` in ``source`` (downloaded or cached for a hub name), or None if absent."""
    try:
        return cached_file(source, filename, _raise_exceptions_for_missing_entries=False)
    except (OSError, ValueError) as e:
        raise not_found(slot, source, _short(e)) from None


def _read_prefixed(path: str, kind: str, prefix: str) -> dict[str, torch.Tensor]:
    """Tensors under ``prefix`` in one weight file, prefix stripped."""
    if kind == "safetensors":
        from safetensors import safe_open

        with safe_open(path, framework="pt") as f:
            return {k[len(prefix) :]: f.get_tensor(k) for k in f.keys() if k.startswith(prefix)}
    state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


def assign_weights(slot: str, source: str, model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load ``state`` into a model built on the meta device, exactly: no tensor missing or left over.

    Raises:
        CheckpointError: names missing or unexpected tensors, or a shape mismatch.
    """
    try:
        result = model.load_state_dict(state, strict=False, assign=True)
    except RuntimeError as e:
        raise CheckpointError(f"{slot} encoder: checkpoint {source!r}: {_short(e)}") from None
    if result.missing_keys or result.unexpected_keys:
        raise CheckpointError(
            f"{slot} encoder: checkpoint {source!r} does not fit {type(model).__name__}: "
            f"missing {sorted(result.missing_keys)[:5]}, unexpected {sorted(result.unexpected_keys)[:5]}"
        )
    left = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if left:
        raise CheckpointError(f"{slot} encoder: checkpoint {source!r} leaves {left[:5]} unset")


def _short(error: Exception) -> str:
    """First line of an exception's message, with its type: enough to see the cause without a traceback."""
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"
