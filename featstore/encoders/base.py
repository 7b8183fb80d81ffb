"""What the four frozen encoders share: weight fingerprints, device and dtype choice, determinism, spec fields."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
import transformers

from featstore.checks import one_of, positive_int
from featstore.spec import DTYPES, FeatureSpec, canonical_json

# Compute dtypes a caller may ask for, by name. bfloat16 is compute only: storage
# stays float16/float32 (``featstore.spec.DTYPES``), since bfloat16 is not a core
# Zarr v3 data type.
COMPUTE_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
ATTN_IMPLEMENTATIONS = ("sdpa", "eager")
# Config entries that say nothing about what the network computes: provenance,
# versions, output switches. Everything else (eps, activations, head counts,
# image size, pooling switches...) changes the bytes and goes into the hash.
_CONFIG_NOISE = frozenset(
    {
        "_name_or_path",
        "_commit_hash",
        "transformers_version",
        "architectures",
        "dtype",
        "torch_dtype",
        "_attn_implementation",
        "_attn_implementation_autoset",
        "attn_implementation",
        "output_hidden_states",
        "output_attentions",
        "return_dict",
        "use_cache",
        "id2label",
        "label2id",
        "_output_attentions",
        "_experts_implementation",
        "problem_type",
        "tie_word_embeddings",
    }
)
# cuBLAS needs a fixed workspace for deterministic GEMMs (CUDA docs, "Results reproducibility").
_CUBLAS_WORKSPACE = ":4096:8"


def fingerprint_state_dict(module: torch.nn.Module) -> str:
    """Hash a module's weights: sorted names, then each tensor's dtype, shape and raw bytes.

    Call it once, right after loading and before any dtype cast, so the same files
    give the same fingerprint whatever device or compute dtype runs them.

    Args:
        module: A module whose ``state_dict()`` holds real (not meta) tensors.

    Returns:
        ``"sha256:"`` followed by 64 hex digits.

    Raises:
        ValueError: a tensor is on the meta device (no bytes to hash).
    """
    digest = hashlib.sha256()
    state = module.state_dict()
    for name in sorted(state):
        tensor = state[name].detach()
        if tensor.is_meta:
            raise ValueError(f"cannot fingerprint weight {name!r}: it is on the meta device")
        header = f"{name}\x00{str(tensor.dtype).removeprefix('torch.')}\x00{list(tensor.shape)}\x00"
        digest.update(header.encode("utf-8"))
        raw = tensor.to("cpu").contiguous().reshape(-1).view(torch.uint8).numpy()
        digest.update(np.ascontiguousarray(raw).data)
    return "sha256:" + digest.hexdigest()


def fingerprint_config(config: transformers.PretrainedConfig) -> str:
    """Hash the parts of a model config that decide what the network computes.

    Weights do not say everything: the head count, layer-norm epsilon, activation,
    or VideoMAE's fixed sin-cos position table come from the config alone.

    Args:
        config: The model's config, after any override applied at load time.

    Returns:
        16 hex digits of sha256 over the canonical JSON of the config minus provenance keys.
    """
    data = {k: v for k, v in config.to_dict().items() if k not in _CONFIG_NOISE}
    text = canonical_json(_jsonable(data))
    return hashlib.sha256(text.encode("ascii")).hexdigest()[:16]


def _jsonable(value: Any) -> Any:
    """Plain JSON data from a config dict: tuples become lists, non-finite floats their repr."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and not np.isfinite(value):
        return repr(value)
    return value


def choose_device(device: str | torch.device | None) -> torch.device:
    """The device to run on: the one asked for, else the first GPU if there is one, else the CPU.

    Raises:
        ValueError: a CUDA device is asked for and none is available.
    """
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {str(device)!r} asked for, but torch sees no CUDA device")
    return dev


def choose_dtype(device: torch.device, dtype: str | None) -> torch.dtype:
    """The compute dtype: the one named, else float16 on a GPU and float32 on the CPU.

    Raises:
        ValueError: ``dtype`` is not one of ``COMPUTE_DTYPES``.
    """
    if dtype is None:
        return torch.float16 if device.type == "cuda" else torch.float32
    if dtype not in COMPUTE_DTYPES:
        raise ValueError(f"compute dtype {dtype!r} is not one of {sorted(COMPUTE_DTYPES)}")
    return COMPUTE_DTYPES[dtype]


def check_output_dtype(output_dtype: str) -> np.dtype:
    """The numpy storage dtype for ``output_dtype``.

    Raises:
        ValueError: ``output_dtype`` is not a storage dtype of ``featstore.spec.DTYPES``.
    """
    if output_dtype not in DTYPES:
        raise ValueError(f"output dtype {output_dtype!r} is not one of {DTYPES}")
    return np.dtype(output_dtype)


def ask_for_determinism(device: torch.device) -> None:
    """Ask torch for deterministic kernels and no autotuning, for this whole process.

    This is process-wide state, which is why it is a separate, explicit call: an
    encoder owns its process (a Ray actor), and asks for it in ``__init__`` unless
    told not to. ``warn_only=True`` so that an op without a deterministic kernel
    warns instead of failing a long extraction. On CUDA it also turns TF32 off and
    fixes the cuBLAS workspace (the latter only takes effect if set before the first
    cuBLAS call in the process; an existing setting is kept).

    Args:
        device: The device the encoder runs on.
    """
    torch.use_deterministic_algorithms(True, warn_only=True)
    if device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", _CUBLAS_WORKSPACE)
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False


def freeze(model: torch.nn.Module, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    """Put a model in eval mode without gradients, on ``device`` in ``dtype``."""
    model.eval()
    model.requires_grad_(False)
    return model.to(device=device, dtype=dtype)


def init_common(
    enc: Any,
    source: str,
    name: str,
    *,
    device: str | None = None,
    dtype: str | None = None,
    output_dtype: str = "float16",
    attn_implementation: str = "sdpa",
    clips_per_forward: int = 1,
    deterministic: bool = True,
    upstream: Mapping[str, Any] | None = None,
) -> None:
    """Check and set what every encoder takes the same way (its ``**common`` options) on
    the encoder ``enc``: ``source``, ``name``, ``device``, ``compute_dtype``,
    ``output_dtype``, ``attn``, ``clips_per_forward`` and ``upstream``; then, if
    ``deterministic``, ask torch for deterministic kernels (before any model is loaded).

    Args:
        enc: the encoder being set up.
        source: a folder or hub name of its checkpoint.
        name: the feature's name in the store.
        device: ``"cuda"``, ``"cuda:1"``, ``"cpu"``...; default the first GPU, else the CPU.
        dtype: compute dtype, ``"float16"``, ``"bfloat16"`` or ``"float32"``;
            default float16 on a GPU, float32 on the CPU.
        output_dtype: storage dtype of the features, ``"float16"`` or ``"float32"``.
        attn_implementation: ``"sdpa"`` or ``"eager"``.
        clips_per_forward: clips per forward pass; 1 makes a clip's features
            independent of its batch neighbours on every device.
        deterministic: ask torch for deterministic kernels (process-wide, see
            ``ask_for_determinism``).
        upstream: preprocessing decided before the encoder that changes its input
            (e.g. ``{"frame_selection": "middle"}``), recorded in the spec.

    Raises:
        ValueError: naming any bad value.
    """
    enc.source = str(source)
    enc.name = name
    enc.device = choose_device(device)
    enc.compute_dtype = choose_dtype(enc.device, dtype)
    enc.output_dtype = check_output_dtype(output_dtype)
    enc.attn = one_of("attn_implementation", attn_implementation, ATTN_IMPLEMENTATIONS)
    enc.clips_per_forward = positive_int("clips_per_forward", clips_per_forward)
    enc.upstream = check_upstream(upstream)
    if deterministic:
        ask_for_determinism(enc.device)


def adopt_model(enc: Any, model: torch.nn.Module) -> None:
    """Fingerprint a freshly loaded model (weights and config, before any cast) and
    keep it frozen on the encoder's device in its compute dtype: sets ``enc.weights``,
    ``enc.config_hash`` and ``enc.model``."""
    enc.weights = fingerprint_state_dict(model)
    enc.config_hash = fingerprint_config(model.config)
    enc.model = freeze(model, enc.device, enc.compute_dtype)


def encoder_spec(enc: Any, preprocess: Mapping[str, Any], shape: tuple[int, ...], pooling: str) -> FeatureSpec:
    """The FeatureSpec of what ``enc`` writes: its own ``preprocess`` entries plus the
    upstream record and ``common_preprocess``; name, weights, dtype and source from
    what ``init_common`` and ``adopt_model`` set."""
    return FeatureSpec(
        name=enc.name,
        encoder=type(enc.model).__name__,
        weights=enc.weights,
        shape=shape,
        dtype=enc.output_dtype.name,
        preprocess={
            "upstream": enc.upstream,
            **preprocess,
            **common_preprocess(enc.config_hash, enc.device, enc.compute_dtype, enc.attn, enc.clips_per_forward),
        },
        layer=None,
        pooling=pooling,
        source=enc.source,
    )


def common_preprocess(
    config_hash: str, device: torch.device, compute_dtype: torch.dtype, attn: str, clips_per_forward: int
) -> dict:
    """The spec entries every encoder records besides its own preprocessing.

    Args:
        config_hash: ``fingerprint_config`` of the loaded model's config.
        device: The device the model runs on: only its type (cpu, cuda) is
            recorded, since CPU and GPU kernels round differently.
        compute_dtype: The dtype the model runs in (it changes the bytes).
        attn: The attention implementation.
        clips_per_forward: How many clips share one forward pass (on a GPU, a
            GEMM's rounding can depend on the batch it is part of).

    Returns:
        A dict of plain JSON values.
    """
    return {
        "model_config_sha256": config_hash,
        "device_type": device.type,
        "compute_dtype": str(compute_dtype).removeprefix("torch."),
        "attn_implementation": attn,
        "clips_per_forward": clips_per_forward,
        "transformers_version": transformers.__version__,
        "torch_version": torch.__version__.split("+")[0],
        "numpy_version": np.__version__,
    }


def pass_through(
    batch: Mapping[str, np.ndarray], consumed: tuple[str, ...], out_key: str, features: np.ndarray
) -> dict[str, np.ndarray]:
    """The output batch: every input column but the consumed media, plus the features.

    Keeping ids and other columns lets a Ray pipeline carry them past the encoder;
    dropping the decoded media keeps the object store small.

    Raises:
        ValueError: the batch already has a column named ``out_key``.
    """
    if out_key in batch and out_key not in consumed:
        raise ValueError(f"batch already has a column {out_key!r}; the encoder would overwrite it")
    out = {k: v for k, v in batch.items() if k not in consumed}
    out[out_key] = features
    return out


def require_column(batch: Mapping[str, np.ndarray], key: str, ndim: int, dtype: np.dtype | type) -> np.ndarray:
    """Fetch ``batch[key]`` as a numpy array of the expected rank and dtype.

    Raises:
        KeyError: the column is missing (the message lists the columns present).
        ValueError: naming the column, the expected and the actual rank or dtype.
    """
    if key not in batch:
        raise KeyError(f"batch has no column {key!r}; columns: {sorted(batch)}")
    arr = np.asarray(batch[key])
    if arr.ndim != ndim:
        raise ValueError(f"column {key!r} must have {ndim} dimensions, got shape {arr.shape}")
    if arr.dtype != np.dtype(dtype):
        raise ValueError(f"column {key!r} must be {np.dtype(dtype)}, got {arr.dtype}")
    return arr


def check_upstream(upstream: Mapping[str, Any] | None) -> dict[str, Any]:
    """Validate the upstream preprocessing record an encoder is given (frame selection, face detector...).

    Returns:
        A copy as a plain dict (empty if ``upstream`` is None).

    Raises:
        ValueError: ``upstream`` is not a mapping of plain JSON data.
    """
    if upstream is None:
        return {}
    if not isinstance(upstream, Mapping):
        raise ValueError(f"upstream must be a mapping of preprocessing parameters, got {upstream!r}")
    try:
        canonical_json(dict(upstream))
    except (TypeError, ValueError) as e:
        raise ValueError(f"upstream {dict(upstream)!r} is not plain JSON data: {e}") from None
    return dict(upstream)


def chunks(n: int, size: int) -> list[tuple[int, int]]:
    """Split ``range(n)`` into consecutive ``(start, stop)`` pieces of at most ``size``."""
    return [(a, min(a + size, n)) for a in range(0, n, size)]
