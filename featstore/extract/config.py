"""ExtractConfig: every option of the extraction job, with help, defaults that run, and checks."""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from featstore.names import FORMATS as MANIFEST_FORMATS
from featstore.names import PRESET_TABLE, PRESETS, preset_slots

FORMATS = ("auto", *MANIFEST_FORMATS)


# Fields saved in the store (see ExtractConfig.saved).
SAVED_FIELDS = (
    "format",
    "annotation",
    "preset",
    "encoders",
    "checkpoint",
    "batch_size",
    "unit_size",
    "global_frame",
    "local_frames",
    "decode_timeout",
    "global_output",
    "frames",
    "whisper_pooling",
)
# --global-output choices: auto is the original's ln_vision for weights from its own files
# (eva_vit_g.pth, or a folder converted from it), BLIP-2's post_layernorm otherwise.
GLOBAL_OUTPUTS = ("auto", "post_layernorm", "ln_vision")
# --whisper-pooling choices (featstore.encoders.audio_whisper.POOLINGS).
WHISPER_POOLINGS = ("mean", "none")
_PRESET_HELP = "; ".join(f"{p}: {','.join(row)}" for p, row in PRESET_TABLE.items())


def _opt(default: Any, help: str, **kw: Any) -> Any:
    return field(default=default, metadata={"help": help, **kw})


@dataclass
class ExtractConfig:
    """Options of ``jobs/extract.py``; with none given it runs the demo end to end."""

    dataset: str | None = _opt(None, "dataset root folder; default: make the demo dataset under --work-dir")
    format: str = _opt("auto", "annotation format: " + ", ".join(FORMATS), choices=FORMATS)
    annotation: str | None = _opt(
        None, "annotation file (relative to the dataset root) when auto-detection is ambiguous"
    )
    store: str | None = _opt(
        None,
        "feature store: local path or fsspec URL (s3://bucket/x.zarr: the bucket must exist; endpoint and "
        "credentials from the AWS_* variables, which Ray workers inherit; see README); default: WORK_DIR/store.zarr",
    )
    work_dir: str = _opt("demo_out", "folder for the demo dataset, tiny checkpoints and default outputs")
    preset: str = _opt(
        "tiny",
        "encoders and checkpoints: 'emotion-llama', 'emotion-llama-v2', 'affectgpt' (the real ones), or "
        "'tiny', 'tiny-emotion-llama-v2', 'tiny-affectgpt' (the same classes, small and random, CPU); "
        "slots: " + _PRESET_HELP,
        choices=PRESETS,
    )
    encoders: str | None = _opt(None, "comma-separated subset of the preset's encoder slots; default: all of them")
    checkpoint: list[str] = _opt(
        (), "override one slot's checkpoint: SLOT=PATH_OR_HUB_NAME (repeatable)", action="append"
    )
    actors: int = _opt(1, "actors per encoder (each loads its model once)")
    gpus_per_actor: float | None = _opt(
        None, "GPUs per encoder actor (fractions share a GPU); default: 1 if the cluster has GPUs, else 0 (CPU)"
    )
    cpus_per_actor: float = _opt(
        0.01,
        "CPUs reserved per encoder actor: tiny, so decode tasks keep the CPUs (an actor "
        "that reserves a whole CPU can starve decoding and hang; a GPU actor's host work is small)",
    )
    decode_cpus: float = _opt(
        0.9,
        "CPUs per decode task: a little under 1, so one decode task a CPU still leaves room "
        "for the actors' and write tasks' small reservations",
    )
    write_cpus: float = _opt(
        0.05,
        "CPUs per write task (one a unit, committing it as soon as it is encoded): small, "
        "so that writes are never queued behind decoding",
    )
    write_tasks: int = _opt(
        2,
        "most write tasks running at once; their worker processes are reused from unit to unit "
        "(without a cap, tiny CPU requests let Ray start a new worker for every unit that arrives "
        "while the others still import)",
    )
    batch_size: int = _opt(1, "clips per forward pass of the vision encoders (audio always runs one clip at a time)")
    unit_size: int = _opt(
        16,
        "samples per work unit, a power of two; each spec's Zarr chunk is the smaller of this and its "
        "best size from the store benchmark (4 for the EVA tokens), so a unit spans whole chunks",
    )
    limit: int | None = _opt(None, "only the first N samples of the manifest")
    retry_failed: bool = _opt(False, "recompute samples recorded as failed (default: only pending ones)")
    export_wds: str | None = _opt(
        None,
        "after extraction, write WebDataset shards here (local path or fsspec URL such as s3://bucket/shards); "
        "default with no --dataset: WORK_DIR/shards",
    )
    strict: bool = _opt(False, "exit non-zero if any sample failed")
    global_frame: str = _opt(
        "peak",
        "frame for the global encoder: peak (MERR peak_index, else middle), middle, first",
        choices=("peak", "middle", "first"),
    )
    local_frames: int = _opt(8, "frames sampled for the MAE face crops")
    frames: int = _opt(8, "frames sampled uniformly for the frames slot (AffectGPT's CLIP), at 224 px")
    whisper_pooling: str = _opt(
        "mean",
        "the whisper slot's pooling: 'mean' over the frames holding real audio ([1280]), or 'none' "
        "(every frame of the 30 s window, [1500, 1280])",
        choices=WHISPER_POOLINGS,
    )
    global_output: str = _opt(
        "auto",
        "the global feature's final norm: 'ln_vision' (the original's untrained LayerNorm: what the published "
        "Emotion-LLaMA projectors saw), 'post_layernorm' (BLIP-2's trained one, transformers' last_hidden_state), "
        "or 'auto' (ln_vision for an original eva_vit_g.pth or a folder converted from it, else post_layernorm)",
        choices=GLOBAL_OUTPUTS,
    )
    decode_timeout: float = _opt(60.0, "seconds allowed per clip and modality before it is recorded as failed")
    summary_json: str | None = _opt(None, "also write the run summary as JSON to this local path")
    verbose: bool = _opt(
        False,
        "show Ray's and Ray Data's own output on the terminal (default: a progress bar and "
        "the summary; the engine's output goes to a log file in the Ray session's folder)",
    )
    ray_address: str | None = _opt(
        None,
        "Ray cluster address; default: the one `ray job submit` gives, else a "
        "cluster running on this machine, else a local Ray started for this run; "
        "'local' always starts a fresh local Ray",
    )

    def __post_init__(self) -> None:
        valid = preset_slots(self.preset)
        if not self.encoders:
            self.encoders = ",".join(valid)
        slots = self.slots()
        bad = [s for s in slots if s not in valid]
        if bad or not slots:
            raise ValueError(
                f"--encoders {self.encoders!r}: unknown slots {bad} for preset {self.preset!r}; choose from {list(valid)}"
            )
        if self.unit_size < 1 or self.unit_size & (self.unit_size - 1):
            raise ValueError(f"--unit-size {self.unit_size} must be a power of two")
        for name in ("actors", "batch_size", "local_frames", "frames", "write_tasks"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} {getattr(self, name)} must be at least 1")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"--limit {self.limit} must be at least 1")
        if self.gpus_per_actor is not None and self.gpus_per_actor < 0:
            raise ValueError(f"--gpus-per-actor {self.gpus_per_actor} must be >= 0")
        if self.cpus_per_actor < 0 or self.decode_cpus <= 0 or self.write_cpus <= 0 or self.decode_timeout <= 0:
            raise ValueError(
                f"--cpus-per-actor {self.cpus_per_actor} must be >= 0; --decode-cpus {self.decode_cpus}, "
                f"--write-cpus {self.write_cpus} and --decode-timeout {self.decode_timeout} must be > 0"
            )
        self.checkpoint = list(self.checkpoint or ())
        self.overrides()  # validates SLOT=SOURCE

    def slots(self) -> list[str]:
        return [s.strip() for s in self.encoders.split(",") if s.strip()]

    def overrides(self) -> dict[str, str]:
        """``--checkpoint SLOT=SOURCE`` as a dict."""
        out = {}
        valid = preset_slots(self.preset)
        for item in self.checkpoint:
            slot, sep, source = item.partition("=")
            if not sep or slot not in valid or not source:
                raise ValueError(
                    f"--checkpoint {item!r} must be SLOT=PATH_OR_NAME with SLOT in {list(valid)} (preset {self.preset!r})"
                )
            out[slot] = source
        return out

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def saved(self) -> dict[str, Any]:
        """The options that decide the store's bytes, saved in it. Locations and
        scheduling (actors, GPUs, CPUs, addresses) are left out: they change
        nothing in the result, and a store made by a resumed or rescaled run
        must be bitwise the same as one made in one go."""
        return {k: v for k, v in self.to_dict().items() if k in SAVED_FIELDS}


def add_config_options(p: argparse.ArgumentParser, names: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """Add one option per ExtractConfig field (only ``names``, when given) to ``p``,
    with the field's help and default, so other commands reuse the job's options."""
    for f in dataclasses.fields(ExtractConfig):
        if names is not None and f.name not in names:
            continue
        flag = "--" + f.name.replace("_", "-")
        kw = {"help": f.metadata["help"] + (f" (default: {f.default})" if f.default not in (None, ()) else "")}
        if isinstance(f.default, bool):
            p.add_argument(flag, action="store_true", **kw)
            continue
        if f.metadata.get("action") == "append":
            p.add_argument(flag, action="append", default=[], metavar="SLOT=SOURCE", **kw)
            continue
        t = str(f.type)
        caster = float if t.startswith("float") else int if t.startswith("int") else str
        p.add_argument(flag, type=caster, default=f.default, choices=f.metadata.get("choices"), **kw)
    return p


def build_parser(description: str = "") -> argparse.ArgumentParser:
    """An argparse parser with one option per ExtractConfig field."""
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    return add_config_options(p)


def parse_config(argv: Sequence[str] | None = None, description: str = "") -> ExtractConfig:
    """Command line -> ExtractConfig; a bad value exits with the parser's usage and the reason."""
    parser = build_parser(description)
    args = parser.parse_args(argv)
    try:
        return ExtractConfig(**vars(args))
    except ValueError as e:
        parser.error(str(e))
