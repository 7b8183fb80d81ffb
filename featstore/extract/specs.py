"""The spec each encoder slot of a run will have, computed without running any encoder.

A spec id covers the weights fingerprint (a hash of the loaded state dict), the
model config hash and every preprocessing parameter, including the device type
and compute dtype the actors run with. ``planned_spec`` loads the checkpoint
on the CPU (the state dict must be read to hash it: there is no cheaper exact
way, since the fingerprint is over the tensors the model class keeps after
loading), never calls a forward pass, and records the device type the job's
actors would use, so a CPU-only machine can plan a GPU run.
"""

from __future__ import annotations

from typing import Any

from featstore.extract.config import ExtractConfig
from featstore.media.clip import DecodeConfig
from featstore.spec import FeatureSpec
from featstore.store import FeatureStore

__all__ = ["decode_config", "encoder_options", "plan_device_type", "planned_spec", "planned_specs"]

DEVICE_TYPES = ("cpu", "cuda")


def decode_config(cfg: ExtractConfig) -> DecodeConfig:
    """The decode settings of a job config (they enter every spec's ``upstream``)."""
    return DecodeConfig(
        global_frame=cfg.global_frame, local_frames=cfg.local_frames, frames=cfg.frames, timeout_s=cfg.decode_timeout
    )


def encoder_options(cfg: ExtractConfig, decode: DecodeConfig, slot: str) -> dict[str, Any]:
    """Keyword arguments the job gives a slot's encoder."""
    opts: dict[str, Any] = {"upstream": decode.upstream(slot)}
    if slot != "audio":  # HuBERT runs each clip alone, at its own length
        opts["clips_per_forward"] = cfg.batch_size
    if slot == "global" and cfg.global_output != "auto":
        opts["output"] = cfg.global_output
    if slot == "frames":
        opts.update(frames=decode.frames, image_size=decode.frames_size)
    if slot == "whisper" and cfg.whisper_pooling != "mean":
        opts["pooling"] = cfg.whisper_pooling
    return opts


def plan_device_type(cfg: ExtractConfig, store: FeatureStore | None, name: str) -> str:
    """Device type the run's actors would use: ``--gpus-per-actor`` > 0 means cuda, 0 cpu;
    unset, the device type of the store's existing spec of this name, else this machine's."""
    if cfg.gpus_per_actor is not None:
        return "cuda" if cfg.gpus_per_actor > 0 else "cpu"
    if store is not None:
        for f in store.features():
            dev = f.spec.preprocess.get("device_type")
            if f.spec.name == name and dev in DEVICE_TYPES:
                return str(dev)
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def planned_spec(slot: str, preset: str, source: str | None, options: dict[str, Any], device_type: str) -> FeatureSpec:
    """The spec a slot's encoder would have on ``device_type``: loads the weights on the
    CPU to fingerprint them, runs nothing.

    Raises:
        ValueError: naming an unknown device type.
        CheckpointNotFoundError, CheckpointError: as loading the encoder does.
    """
    if device_type not in DEVICE_TYPES:
        raise ValueError(f"device type {device_type!r} is not one of {DEVICE_TYPES}")
    import torch

    from featstore.encoders import base, load_encoders
    from featstore.extract.encode import TINY_DIR, quiet_transformers

    quiet_transformers()
    enc = load_encoders(
        preset,
        [slot],
        overrides={slot: source} if source else None,
        device="cpu",
        tiny_dir=TINY_DIR,
        options={slot: {**options, "deterministic": False}},
    )[slot]
    # The spec records the device type and the compute dtype the actors would
    # choose there (float16 on a GPU); the loaded CPU model is only hashed.
    enc.device = torch.device(device_type)
    enc.compute_dtype = base.choose_dtype(enc.device, None)
    return enc.spec


def planned_specs(cfg: ExtractConfig, store: FeatureStore | None) -> dict[str, FeatureSpec]:
    """Slot -> planned spec for every slot of a job config (see ``planned_spec``)."""
    decode = decode_config(cfg)
    overrides = cfg.overrides()
    return {
        slot: planned_spec(
            slot,
            cfg.preset,
            overrides.get(slot),
            encoder_options(cfg, decode, slot),
            plan_device_type(cfg, store, slot),
        )
        for slot in cfg.slots()
    }
