"""The extraction pipeline on Ray Data: pending work units -> decode (CPU tasks) ->
one actor pool per encoder (pinned to GPUs) -> StoreSink (exactly-once unit commits).

A row of the pipeline is one work unit (``UnitWork``): its samples are decoded
once for every encoder, each encoder actor runs its slot over the unit's clips
in a fixed order and fixed sub-batches (so features never depend on what else
was in flight), and the sink writes each spec's unit chunk, commit flags last.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np
import ray
from ray.data.block import Block, BlockAccessor
from ray.data.datasource.datasink import Datasink, WriteResult

from featstore.clip_inputs import INPUT_KEY, ClipInputs, DecodeConfig, collate, decode_clip
from featstore.encoders import load_encoders
from featstore.faults import maybe_fault
from featstore.manifest import Sample
from featstore.store import FeatureStore

TINY_DIR = "/tmp/featstore-tiny-checkpoints"  # node-local: tiny checkpoints are rebuilt identically on each node


@dataclass
class UnitWork:
    """One work unit travelling through the pipeline."""

    unit: int
    samples: list[dict[str, Any]]  # manifest samples of the unit, in store order
    slots: list[str]  # slots still pending for this unit
    clips: list[ClipInputs] = field(default_factory=list)
    features: dict[str, np.ndarray] = field(default_factory=dict)  # slot -> [n, *shape]
    failures: dict[str, dict[str, tuple[str, str]]] = field(default_factory=dict)  # slot -> {id: (stage, reason)}
    seconds: dict[str, float] = field(default_factory=dict)  # stage -> seconds spent on this unit
    faces: tuple[int, int] = (0, 0)  # frames with a face found, frames searched
    devices: dict[str, dict[str, Any]] = field(default_factory=dict)  # slot -> the actor that encoded it

    @property
    def ids(self) -> list[str]:
        return [s["sample_id"] for s in self.samples]


def decode_unit(row: dict[str, Any], root: str, cfg: DecodeConfig) -> dict[str, Any]:
    """Ray Data ``map`` function: decode every clip of a unit for the unit's pending slots."""
    work: UnitWork = row["work"]
    t0 = time.perf_counter()
    work.clips = [decode_clip(Sample.from_dict(s), root, work.slots, cfg) for s in work.samples]
    for slot in work.slots:
        work.failures[slot] = {c.sample_id: c.failures[slot] for c in work.clips if slot in c.failures}
    work.faces = (sum(c.faces_found for c in work.clips), sum(c.faces_total for c in work.clips))
    work.seconds["decode"] = time.perf_counter() - t0
    maybe_fault("decode", work.unit)
    return {"work": work}


def load_one_encoder(slot: str, preset: str, source: str | None, options: dict[str, Any]) -> Any:
    """Load one slot's encoder on this process's device (the GPU Ray assigned, else CPU)."""
    import transformers

    # Loading the *ForPreTraining checkpoints into the bare encoders lists every
    # unused decoder weight; that report is expected and would bury the job's log.
    transformers.logging.set_verbosity_error()
    overrides = {slot: source} if source else None
    return load_encoders(preset, [slot], overrides=overrides, tiny_dir=TINY_DIR if preset == "tiny" else None,
                         options={slot: options})[slot]


class EncodeStage:
    """Ray Data ``map_batches`` callable for one slot; one instance per actor, model loaded once.

    Refuses to start if the model it loaded does not have the spec id the
    coordinator created the store group for (another GPU type or library
    version would otherwise write different bytes under the same id).
    """

    def __init__(self, slot: str, preset: str, source: str | None, options: dict[str, Any], spec_id: str,
                 batch_size: int) -> None:
        from featstore.encoders.presets import build_tiny_checkpoints

        if preset == "tiny":
            build_tiny_checkpoints(TINY_DIR)
        self.slot, self.batch_size = slot, batch_size
        self.encoder = load_one_encoder(slot, preset, source, options)
        ctx = ray.get_runtime_context()
        self.device = {"pid": os.getpid(), "node": ctx.get_node_id(), "gpu_ids": [str(g) for g in ray.get_gpu_ids()],
                       "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
                       "torch_device": str(self.encoder.device)}
        if self.encoder.spec.id != spec_id:
            raise RuntimeError(f"{slot} encoder on this worker has spec id {self.encoder.spec.id}, "
                               f"the store expects {spec_id}: mixed GPU types or library versions?")

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        for work in batch["work"]:
            if self.slot in work.slots:
                t0 = time.perf_counter()
                work.features[self.slot] = self._encode(work)
                work.seconds[f"encode.{self.slot}"] = time.perf_counter() - t0
                work.devices[self.slot] = self.device
                maybe_fault(f"encode.{self.slot}", work.unit)
            for clip in work.clips:  # this slot's inputs are no longer needed downstream
                clip.arrays.pop(INPUT_KEY[self.slot], None)
        return batch

    def _encode(self, work: UnitWork) -> np.ndarray:
        spec = self.encoder.spec
        out = np.zeros((len(work.samples), *spec.shape), dtype=spec.dtype)
        row = {sid: i for i, sid in enumerate(work.ids)}
        ok = [c for c in work.clips if self.slot not in c.failures]
        # Fixed sub-batches in unit order; clips of other frame sizes go in their own batch.
        for start in range(0, len(ok), self.batch_size):
            group = ok[start:start + self.batch_size]
            for shape in dict.fromkeys(c.arrays[INPUT_KEY[self.slot]].shape for c in group):
                same = [c for c in group if c.arrays[INPUT_KEY[self.slot]].shape == shape]
                ids, inputs = collate(same, self.slot)
                feats = self.encoder(inputs)[self.slot]
                out[[row[i] for i in ids]] = feats
        return out


class StoreSink(Datasink):
    """Writes each finished unit into the store: one chunk per spec, commit flags last.

    Units are owned by exactly one row, so retried or concurrent write tasks
    can only rewrite the same bytes; a committed unit is never rewritten.
    """

    def __init__(self, store_url: str, keys: dict[str, str]) -> None:
        self.store_url, self.keys = store_url, keys
        self.stats: list[dict[str, Any]] = []

    def write(self, blocks: Iterable[Block], ctx: Any) -> list[dict[str, Any]]:
        store = FeatureStore.open(self.store_url, "r+")
        done = []
        for block in blocks:
            for row in BlockAccessor.for_block(block).iter_rows(public_row_format=True):
                done.append(self._write_unit(store, row["work"]))
        return done

    def _write_unit(self, store: FeatureStore, work: UnitWork) -> dict[str, Any]:
        t0 = time.perf_counter()
        maybe_fault("sink.before", work.unit)
        written = {}
        for slot in work.slots:
            feat = store.feature(self.keys[slot])
            written[slot] = feat.write_unit(work.unit, work.features[slot], failures=work.failures[slot],
                                            retry_failed=True)
        maybe_fault("sink", work.unit)
        seconds = {**work.seconds, "write": time.perf_counter() - t0}
        failed = {slot: len(f) for slot, f in work.failures.items()}
        print(f"unit {work.unit}: {len(work.samples)} clips, slots {work.slots}, failed {failed}", flush=True)
        return {"unit": work.unit, "clips": len(work.samples), "slots": work.slots, "written": written,
                "failures": {s: {i: list(v) for i, v in f.items()} for s, f in work.failures.items()},
                "seconds": seconds, "faces": list(work.faces), "devices": work.devices}

    def on_write_complete(self, write_result: WriteResult) -> None:
        self.stats = [s for ret in write_result.write_returns for s in ret]


def unit_works(store: FeatureStore, keys: dict[str, str], retry_failed: bool) -> list[UnitWork]:
    """The pending work units and, for each, the slots still to compute. Samples
    come from the store's own annotations (media paths included), so a unit is
    complete even when this run's manifest covers only part of the store."""
    samples_by_id = {sid: {"sample_id": sid, "video": None, **ann} for sid, ann in zip(store.sample_ids, store.annotations())}
    todo: dict[int, list[str]] = {}
    for slot, key in keys.items():
        for unit in store.feature(key).pending_units(retry_failed):
            todo.setdefault(unit, []).append(slot)
    unit_size = store.feature(next(iter(keys.values()))).unit_size
    works = []
    for unit in sorted(todo):
        ids = store.sample_ids[unit * unit_size:(unit + 1) * unit_size]
        works.append(UnitWork(unit, [samples_by_id[i] for i in ids], todo[unit]))
    return works

