"""TrainConfig: every option of the training recipe, with help, defaults that run the demo, and checks.

A YAML file (``--config``) maps onto the same dataclass; options given on the
command line override it. The resolved config is saved in every checkpoint.
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence, TypeVar

from trainer.data.tasks import parse_tasks
from trainer.model.layout import LAYOUTS, get_layout
from trainer.model.tiny import DEFAULT_TINY_DIR

__all__ = ["TrainConfig", "build_parser", "load_yaml", "opt", "parse_config", "parse_dataclass"]

T = TypeVar("T")
CACHE_KINDS = ("shards", "zarr")
SCHEDULES = ("cosine", "constant")
DEVICES = ("auto", "cpu", "cuda")
RESUME = ("auto", "never")
LLM_DTYPES = ("auto", "float32", "bfloat16")


def opt(default: Any, help: str, **kw: Any) -> Any:
    """A dataclass field with a default and help text (``choices``, ``positional``, ``secret``
    in its metadata); a dict or list default is copied for each instance."""
    meta, shown = {"help": help, **kw}, not kw.get("secret", False)
    if isinstance(default, (dict, list)):
        return field(default_factory=lambda: type(default)(default), metadata=meta, repr=shown)
    return field(default=default, metadata=meta, repr=shown)


@dataclass
class TrainConfig:
    """Options of ``jobs/train.py``; the defaults train the tiny model on the demo store for a few steps."""

    # ---- data
    cache: str = opt(
        "shards", "read features from WebDataset 'shards' (streamed) or the 'zarr' store", choices=CACHE_KINDS
    )
    shards: str = opt("demo_out/shards", "shard folder (local path or fsspec URL) holding shards.json")
    store: str = opt("demo_out/store.zarr", "feature store (local path or fsspec URL), for --cache zarr and --online")
    split: str | None = opt(None, "zarr only: train on this split (train/val/test) of the store")
    expect: dict[str, str] = opt(
        {},
        "spec id each slot must have, SLOT=ID (repeatable; see `featstore info`); "
        "a cache with other ids is refused. Empty: whatever the cache holds, then "
        "pinned by the first checkpoint",
        metavar="SLOT=ID",
    )
    layout: str = opt(
        "emotion-llama",
        "feature layout: which cached slots the model reads and how they become tokens (trainer.model.layout): "
        "emotion-llama (global patches + CLS, local, temporal, audio), affectgpt (8 CLIP frames, audio), "
        "emotion-llama-v2 (global patches + CLS, whisper)",
        choices=tuple(LAYOUTS),
    )
    tasks: str = opt("emotion,reason", "comma-separated tasks: emotion, reason, reason_v2")
    shuffle_buffer: int = opt(64, "shuffle buffer in samples (0: index order)")
    prefetch: int = opt(
        2,
        "batches read, collated (and pinned, on GPU) ahead of the step in a background thread; same batches, "
        "same order (0: in the step's thread)",
    )
    loader_workers: int = opt(
        0,
        "DataLoader worker processes reading samples from the cache (0: the prefetch thread reads them). "
        "Zarr keeps its order with any number; shards are split between workers by file, so their order "
        "is fixed per number, and a shard epoch resumed mid-way needs the number it started with",
    )
    max_txt_len: int = opt(
        1024,
        "answer tokens kept (with </s>), as the original's max_txt_len (its training configs use 1024; "
        "cut it to fit a smaller card)",
    )
    # ---- model
    llm: str = opt("tiny", "causal LM: a folder or hub name for from_pretrained, or 'tiny' (built offline)")
    tiny_dir: str = opt(DEFAULT_TINY_DIR, "where the tiny LLaMA is built (llm=tiny)")
    llm_dtype: str = opt("auto", "dtype of the frozen LLM: auto (bfloat16 on GPU, float32 on CPU)", choices=LLM_DTYPES)
    lora_r: int = opt(64, "LoRA rank")
    lora_alpha: int = opt(16, "LoRA alpha")
    lora_dropout: float = opt(0.05, "LoRA dropout")
    lora_targets: str = opt("q_proj,v_proj", "comma-separated module names that get LoRA")
    grad_checkpointing: bool = opt(
        False,
        "recompute the frozen LLaMA's activations in the backward pass instead of keeping them "
        "(the original's use_grad_checkpoint_llm): much less memory, about a third more compute, same losses",
    )
    init_from: str | None = opt(
        None,
        "start from the projector and adapter weights of this checkpoint, or of "
        "the newest one under this run folder (stage 2 from stage 1), or of an "
        "original .pth (Emotion-LLaMA's, or MiniGPT-v2's minigptv2_checkpoint.pth "
        "whose four feature projectors then keep their initialisation); optimizer "
        "and schedule start fresh",
    )
    # ---- optimisation
    epochs: int = opt(1, "passes over the cache")
    max_steps: int | None = opt(None, "stop after this many optimizer steps (default: all epochs)")
    batch_size: int = opt(2, "examples per micro-batch per worker")
    grad_accum: int = opt(1, "micro-batches per optimizer step")
    lr: float = opt(1e-5, "peak learning rate (after warm-up)")
    warmup_lr: float = opt(1e-6, "learning rate at step 0 of the linear warm-up")
    min_lr: float = opt(1e-6, "learning rate at the end of the cosine decay")
    warmup_steps: int = opt(1000, "linear warm-up steps (cosine schedule)")
    schedule: str = opt("cosine", "'cosine' (warm-up then cosine to min_lr) or 'constant' (lr)", choices=SCHEDULES)
    weight_decay: float = opt(0.05, "AdamW weight decay (none on biases, norms and other 1-D parameters)")
    max_grad_norm: float = opt(1.0, "clip the gradient norm to this (0: no clipping)")
    seed: int = opt(42, "seed of weights init, dropout, data order and instruction choice")
    # ---- outputs
    out_dir: str = opt("demo_out/train", "checkpoints, TensorBoard logs and losses.jsonl go here")
    checkpoint_every: int = opt(0, "save a checkpoint every N optimizer steps (0: only at the end)")
    keep_checkpoints: int = opt(3, "keep the newest N checkpoints (0: all)")
    resume: str = opt("auto", "'auto' (newest checkpoint in out_dir, if any), 'never', or a checkpoint folder")
    log_every: int = opt(1, "write TensorBoard scalars every N steps")
    progress: bool = opt(True, "show a progress bar")
    log_samples: bool = opt(False, "each rank appends the sample ids of every step to OUT_DIR/samples-rankR.jsonl")
    # ---- hardware
    device: str = opt("auto", "auto (GPU if available), cpu or cuda", choices=DEVICES)
    bf16: bool = opt(True, "bf16 autocast on GPU (never on CPU)")
    num_workers: int = opt(0, "Ray Train workers (DDP); 0 runs in this process without Ray")
    use_gpu: bool = opt(False, "one GPU per Ray Train worker")
    ray_address: str | None = opt(None, "Ray address for --num-workers (default: the job's cluster, else local)")
    # ---- online path
    online: bool = opt(
        False,
        "run the four encoders on the raw clips each step instead of reading the cache "
        "(the store's annotations locate the clips)",
    )
    encoders: str = opt("tiny", "encoder preset for --online: tiny or emotion-llama", choices=("tiny", "emotion-llama"))
    dataset_root: str | None = opt(
        None,
        "--online: folder the clip paths are relative to (default: the store's "
        "extract config, else the store's parent folder / data)",
    )

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "grad_accum", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} {getattr(self, name)!r} must be at least 1")
        for name in (
            "shuffle_buffer",
            "checkpoint_every",
            "keep_checkpoints",
            "num_workers",
            "warmup_steps",
            "lora_r",
            "lora_alpha",
            "prefetch",
            "loader_workers",
        ):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} {getattr(self, name)!r} must be >= 0")
        if self.max_txt_len < 1:
            raise ValueError(f"max_txt_len {self.max_txt_len!r} must be at least 1")
        if self.online and self.loader_workers:
            raise ValueError(
                f"loader_workers {self.loader_workers!r}: --online runs the encoders in the training process; "
                "loader workers read the cache only (use --loader-workers 0)"
            )
        if self.lora_r < 1:
            raise ValueError(f"lora_r {self.lora_r!r} must be at least 1")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"max_steps {self.max_steps!r} must be at least 1")
        for name in ("lr", "warmup_lr", "min_lr"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} {getattr(self, name)!r} must be positive")
        if not 0 <= self.lora_dropout < 1 or self.weight_decay < 0 or self.max_grad_norm < 0:
            raise ValueError(
                f"lora_dropout {self.lora_dropout!r} must be in [0, 1), weight_decay "
                f"{self.weight_decay!r} and max_grad_norm {self.max_grad_norm!r} >= 0"
            )
        for f in dataclasses.fields(self):
            choices = f.metadata.get("choices")
            if choices and getattr(self, f.name) not in choices:
                raise ValueError(f"{f.name} {getattr(self, f.name)!r} must be one of {list(choices)}")
        parse_tasks(self.tasks)
        self.expect = dict(self.expect or {})
        slots = get_layout(self.layout).slots
        stray = sorted(set(self.expect) - set(slots))
        if stray:
            raise ValueError(f"expect names slots {stray}; the {self.layout} layout's slots are {list(slots)}")
        if self.init_from and Path(self.init_from).suffix in (".pth", ".pt") and self.layout != "emotion-llama":
            raise ValueError(
                f"init_from {self.init_from!r} is an original .pth, whose projectors fit the emotion-llama layout, not {self.layout!r}"
            )
        if self.online and self.layout != "emotion-llama":
            raise ValueError(
                f"--online runs Emotion-LLaMA's four encoders; layout {self.layout!r} trains from the cache"
            )
        if not self.lora_target_list():
            raise ValueError(f"lora_targets {self.lora_targets!r} names no module")

    def lora_target_list(self) -> tuple[str, ...]:
        return tuple(t.strip() for t in self.lora_targets.split(",") if t.strip())

    def source(self) -> str:
        """The cache this config reads: the shard folder or the store."""
        return self.shards if self.cache == "shards" else self.store

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str = "config") -> TrainConfig:
        """Build from a mapping (a YAML file, a checkpoint's config).

        Raises:
            ValueError: naming unknown keys and the file they came from.
        """
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"{where}: unknown options {unknown}; options are {sorted(known)}")
        return cls(**dict(d))


def load_yaml(path: str | Path) -> dict[str, Any]:
    """A YAML config file as a dict (keys with dashes or underscores).

    Raises:
        ValueError: naming the file when it is not a mapping.
    """
    import yaml

    data = yaml.safe_load(Path(path).read_text()) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a config file must be a mapping of options, got {type(data).__name__}")
    return {str(k).replace("-", "_"): v for k, v in data.items()}


def _kv_pairs(items: Sequence[str]) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key or not value:
            raise ValueError(f"{item!r} must be SLOT=ID")
        out[key] = value
    return out


def build_parser(description: str = "") -> argparse.ArgumentParser:
    """An argparse parser with ``--config`` and one option per TrainConfig field (defaults shown, not applied:
    unset options keep the YAML's or the dataclass's value)."""
    p = argparse.ArgumentParser(
        description=description,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        argument_default=argparse.SUPPRESS,
    )
    p.add_argument("--config", help="YAML file of options (any field below); command-line options override it")
    for f in dataclasses.fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        kw: dict[str, Any] = {"help": f"{f.metadata['help']} (default: {default})"}
        t = str(f.type)
        if isinstance(default, bool):
            p.add_argument(flag, action=argparse.BooleanOptionalAction, **kw)
        elif isinstance(default, dict):
            p.add_argument(flag, action="append", metavar=f.metadata.get("metavar", "K=V"), **kw)
        else:
            caster = float if t.startswith("float") else int if t.startswith("int") else str
            p.add_argument(flag, type=caster, choices=f.metadata.get("choices"), **kw)
    return p


def parse_config(argv: Sequence[str] | None = None, description: str = "") -> TrainConfig:
    """Command line (and ``--config`` YAML) -> TrainConfig; a bad value exits with usage and the reason."""
    parser = build_parser(description)
    args = vars(parser.parse_args(argv))
    try:
        values = load_yaml(args.pop("config")) if "config" in args else {}
        if "expect" in args:
            args["expect"] = {**values.get("expect", {}), **_kv_pairs(args["expect"])}
        values.update(args)
        return TrainConfig.from_dict(values)
    except (ValueError, OSError) as e:
        parser.error(str(e))


# Other jobs' configs (evaluate, predict): one flag per dataclass field, help from its metadata.
def _dataclass_parser(cls: type, description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    for f in dataclasses.fields(cls):
        meta, default = f.metadata, f.default
        shown = "" if meta.get("secret") or default is None else f" (default: {default})"
        kw: dict[str, Any] = {"help": meta["help"] + shown, "default": default}
        if meta.get("positional"):
            p.add_argument(f.name, nargs="?", **kw)
        elif isinstance(default, bool):
            p.add_argument("--" + f.name.replace("_", "-"), action=argparse.BooleanOptionalAction, **kw)
        else:
            t = str(f.type)
            caster = float if t.startswith("float") else int if t.startswith("int") else str
            p.add_argument("--" + f.name.replace("_", "-"), type=caster, choices=meta.get("choices"), **kw)
    return p


def parse_dataclass(cls: type[T], argv: Sequence[str] | None, description: str = "") -> T:
    """Parse ``argv`` into ``cls``; a value its ``__post_init__`` refuses exits with usage and the reason."""
    parser = _dataclass_parser(cls, description)
    args = vars(parser.parse_args(argv))
    try:
        return cls(**args)
    except ValueError as e:
        parser.error(str(e))
