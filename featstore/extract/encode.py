"""The encode stage: one Ray Data actor per encoder slot, model loaded once,
pinned to the GPU Ray assigned (or the CPU), fixed sub-batches per unit."""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np
import ray

from featstore.encoders import load_encoders
from featstore.errors import SpecMismatchError
from featstore.extract.plan import UnitWork
from featstore.extract.rates import device_name
from featstore.faults import maybe_fault
from featstore.media.clip import collate
from featstore.names import INPUT_KEY

__all__ = ["TINY_DIR", "EncodeStage", "load_one_encoder", "quiet_transformers"]

TINY_DIR = "/tmp/featstore-tiny-checkpoints"  # node-local: tiny checkpoints are rebuilt identically on each node


def quiet_transformers() -> None:
    """No per-model bars or reports from transformers in this process."""
    import transformers

    # Loading the *ForPreTraining checkpoints into the bare encoders lists every
    # unused decoder weight; that report is expected and would bury the job's log.
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()  # no "Loading weights" / "Writing model shards" bars


def load_one_encoder(slot: str, preset: str, source: str | None, options: dict[str, Any]) -> Any:
    """Load one slot's encoder on this process's device (the GPU Ray assigned, else CPU)."""
    quiet_transformers()
    overrides = {slot: source} if source else None
    # TINY_DIR is used only by presets with tiny checkpoints (tiny, tiny-*), which build theirs there.
    return load_encoders(preset, [slot], overrides=overrides, tiny_dir=TINY_DIR, options={slot: options})[slot]


class EncodeStage:
    """Ray Data ``map_batches`` callable for one slot; one instance per actor, model loaded once.

    Refuses to start if the model it loaded does not have the spec id the
    coordinator created the store group for (another GPU type or library
    version would otherwise write different bytes under the same id).
    """

    def __init__(
        self, slot: str, preset: str, source: str | None, options: dict[str, Any], spec_id: str, batch_size: int
    ) -> None:
        from featstore.encoders.presets import build_tiny_checkpoints

        quiet_transformers()
        if preset == "tiny":
            build_tiny_checkpoints(TINY_DIR)
        self.slot, self.batch_size = slot, batch_size
        self.encoder = load_one_encoder(slot, preset, source, options)
        ctx = ray.get_runtime_context()
        self.device = {
            "pid": os.getpid(),
            "node": ctx.get_node_id(),
            "gpu_ids": [str(g) for g in ray.get_gpu_ids()],
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
            "torch_device": str(self.encoder.device),
            "device_name": device_name(self.encoder.device),  # the device key of measured rates
        }
        if self.encoder.spec.id != spec_id:
            raise SpecMismatchError(
                f"{slot} encoder on this worker has spec id {self.encoder.spec.id}, "
                f"the store expects {spec_id}: mixed GPU types or library versions?"
            )

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        for work in batch["work"]:
            if self.slot in work.slots:
                t0 = time.perf_counter()
                work.features[self.slot] = self._encode(work)
                work.seconds[f"encode.{self.slot}"] = time.perf_counter() - t0
                work.devices[self.slot] = self.device
                maybe_fault(f"encode.{self.slot}", work.unit)
            key = INPUT_KEY[self.slot]
            if not any(INPUT_KEY[s] == key and s not in work.features for s in work.slots):
                for clip in work.clips:  # no slot downstream needs this input (slots may share one)
                    clip.arrays.pop(key, None)
        return batch

    def _encode(self, work: UnitWork) -> np.ndarray:
        spec = self.encoder.spec
        out = np.zeros((len(work.samples), *spec.shape), dtype=spec.dtype)
        row = {sid: i for i, sid in enumerate(work.ids)}
        ok = [c for c in work.clips if self.slot not in c.failures]
        # Fixed sub-batches in unit order; clips of other frame sizes go in their own batch.
        for start in range(0, len(ok), self.batch_size):
            group = ok[start : start + self.batch_size]
            for shape in dict.fromkeys(c.arrays[INPUT_KEY[self.slot]].shape for c in group):
                same = [c for c in group if c.arrays[INPUT_KEY[self.slot]].shape == shape]
                ids, inputs = collate(same, self.slot)
                feats = self.encoder(inputs)[self.slot]
                out[[row[i] for i in ids]] = feats
        return out
