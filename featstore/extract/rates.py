"""Measured extraction rates: seconds per clip of each stage, per spec and per device.

A rate is never guessed: every record comes from a run that timed it, either
``featstore calibrate`` (the job's pipeline on a few clips, saved to a rates
file) or an extraction job (appended by the coordinator, after the run, to the
store's rates file ``<store>.rates.json`` beside it: the store's own bytes must
not depend on a run's speed). A record says what was timed and where:

- ``kind``: ``encode`` (one encoder slot; ``key`` is its spec id), ``decode``
  (the decode stage for a set of slots; ``key`` is ``decode_key`` of their
  decode settings), ``write`` (the write stage for a set of specs; ``key`` is
  ``write_key``: their features' names, shapes and dtypes), or ``startup``
  (the seconds of a run not spent in its units: Ray, planning, worker and actor
  start-up; ``key`` is ``spec_set_key`` of the run's specs).
- ``device``: ``cpu``, or the CUDA device name an actor saw
  (``torch.cuda.get_device_name``, e.g. ``NVIDIA A10G``).
- ``clips`` and ``seconds``: what was measured (a rate is seconds / clips, pooled
  over every record of the same kind, key and device).

Plain JSON, numpy-free and torch-free at import: ``featstore plan`` reads it.
"""

from __future__ import annotations

import hashlib
import json
import socket
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from featstore.names import MANIFEST_STAGE
from featstore.spec import FeatureSpec, canonical_json

__all__ = [
    "FORMAT",
    "RateTable",
    "RATES_SUFFIX",
    "append_store_rates",
    "decode_key",
    "device_name",
    "load_rates_file",
    "run_records",
    "save_rates_file",
    "spec_set_key",
    "store_rates",
    "store_rates_url",
    "write_key",
]

FORMAT = 1
RATES_SUFFIX = ".rates.json"  # the store's rates file, beside it
FILE_KEY = "featstore_rates"
KINDS = ("encode", "decode", "write", "startup")
# Records kept in the store's attribute: the newest, so that zarr.json stays small
# (a record is ~300 bytes) while every spec of a few dozen runs keeps its figures.
STORE_KEEP = 400


def decode_key(specs: Mapping[str, FeatureSpec], slots: Iterable[str]) -> str:
    """Key of the decode work for ``slots``: a hash of their decode settings
    (``preprocess.upstream`` of each slot's spec), so that any change that changes
    what is decoded changes the key, and nothing else does."""
    upstream = {s: specs[s].preprocess.get("upstream") for s in sorted(slots)}
    return "decode:" + hashlib.sha256(canonical_json(upstream).encode()).hexdigest()[:16]


def spec_set_key(specs: Mapping[str, FeatureSpec], slots: Iterable[str]) -> str:
    """Key of the work that depends on every spec of a set (a run's start-up: which
    models load, on which device type)."""
    ids = sorted(specs[s].id for s in slots)
    return "specs:" + hashlib.sha256("+".join(ids).encode()).hexdigest()[:16]


def feature_layouts(specs: Mapping[str, FeatureSpec], slots: Iterable[str]) -> list[str]:
    """``name:shape:dtype`` of each slot's feature: what decides the bytes a unit writes."""
    return sorted(f"{specs[s].name}:{'x'.join(map(str, specs[s].shape))}:{specs[s].dtype}" for s in slots)


def write_key(specs: Mapping[str, FeatureSpec], slots: Iterable[str]) -> str:
    """Key of the write work for a set of slots: their features' names, shapes and
    dtypes (the same bytes are written whichever device computed them)."""
    return "write:" + hashlib.sha256("+".join(feature_layouts(specs, slots)).encode()).hexdigest()[:16]


def device_name(device: Any) -> str:
    """``cpu``, or the CUDA device name of ``device`` (a torch device or string)."""
    text = str(device)
    if not text.startswith("cuda"):
        return text.split(":")[0]
    import torch

    return str(torch.cuda.get_device_name(torch.device(text)))


def _device_of(dev: Mapping[str, Any]) -> str:
    """The device label of an actor record (``EncodeStage.device``)."""
    if dev.get("device_name"):
        return str(dev["device_name"])
    return str(dev.get("torch_device", "cpu")).split(":")[0]


def _record(kind: str, key: str, device: str, clips: int, units: int, seconds: float, **extra: Any) -> dict[str, Any]:
    return {"kind": kind, "key": key, "device": device, "clips": clips, "units": units, "seconds": seconds, **extra}


def run_records(
    stats: Sequence[Mapping[str, Any]], specs: Mapping[str, FeatureSpec], source: str = "job"
) -> list[dict[str, Any]]:
    """Rate records from a run's per-unit records (the sink's ``stats``: ``clips``,
    ``slots``, ``seconds`` per stage, ``failures`` per slot, ``devices`` per slot).

    Encode rates count the clips an encoder actually ran on (a clip that failed to
    decode costs it nothing); decode rates leave out clips whose media the
    manifest found unusable (nothing is opened for them).

    Args:
        stats: one record per unit the run committed.
        specs: slot -> the run's spec (for the keys).
        source: ``job`` or ``calibrate``, recorded with each record.
    """
    groups: dict[tuple[str, str, str], dict[str, Any]] = {}

    def add(kind: str, key: str, device: str, clips: int, seconds: float, **extra: Any) -> None:
        g = groups.setdefault((kind, key, device), _record(kind, key, device, 0, 0, 0.0, **extra))
        g["clips"] += clips
        g["units"] += 1
        g["seconds"] += seconds

    for s in stats:
        slots = list(s["slots"])
        failures = s.get("failures", {})
        unusable = set.intersection(
            *({sid for sid, (stage, _) in failures.get(slot, {}).items() if stage == MANIFEST_STAGE} for slot in slots)
        )
        secs = s["seconds"]
        for slot in slots:
            encoded = s["clips"] - len(failures.get(slot, {}))
            spec = specs[slot]
            dev = _device_of(s.get("devices", {}).get(slot, {}))
            add("encode", spec.id, dev, encoded, secs.get(f"encode.{slot}", 0.0), slot=slot, spec_key=spec.key)
        ordered = sorted(slots)
        add(
            "decode",
            decode_key(specs, slots),
            "cpu",
            s["clips"] - len(unusable),
            secs.get("decode", 0.0),
            slots=ordered,
        )
        layouts = feature_layouts(specs, slots)
        add(
            "write", write_key(specs, slots), "cpu", s["clips"], secs.get("write", 0.0), slots=ordered, features=layouts
        )
    stamp = {"source": source, "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "host": socket.gethostname()}
    return [{**g, "seconds": round(g["seconds"], 4), **stamp} for g in groups.values() if g["clips"] > 0]


class RateTable:
    """Records pooled into rates: seconds per clip by (kind, key, device)."""

    def __init__(self, records: Iterable[Mapping[str, Any]] = ()) -> None:
        self.records = [dict(r) for r in records]
        self._pooled: dict[tuple[str, str, str], list[float]] = {}
        for r in self.records:
            p = self._pooled.setdefault((r["kind"], r["key"], r["device"]), [0.0, 0.0])
            p[0] += float(r["seconds"])
            p[1] += float(r.get("clips", 0))

    def per_clip(self, kind: str, key: str, device: str) -> float | None:
        """Pooled seconds per clip, or None when nothing was measured."""
        seconds, clips = self._pooled.get((kind, key, device), (0.0, 0.0))
        return seconds / clips if clips > 0 else None

    def startup(self, key: str, device: str) -> float | None:
        """Start-up seconds of a run (the newest record), or None."""
        found = [r for r in self.records if (r["kind"], r["key"], r["device"]) == ("startup", key, device)]
        return float(found[-1]["seconds"]) if found else None

    def superset(self, kind: str, field: str, items: Iterable[str], device: str) -> tuple[float, list[str]] | None:
        """For work measured only together with more: among the records of ``kind`` on
        ``device`` whose ``field`` (``features`` of a write, ``spec_ids`` of a
        start-up) holds all of ``items``, the smallest such set's figure (per clip for
        a write, the newest for a start-up) and its slots; None when there is none."""
        want = set(items)
        found = [
            r
            for r in self.records
            if r["kind"] == kind and r["device"] == device and r["clips"] and want <= set(r.get(field, ()))
        ]
        if not found:
            return None
        best = min(len(r[field]) for r in found)
        newest = [r for r in found if len(r[field]) == best][-1]
        figure = float(newest["seconds"]) if kind == "startup" else self.per_clip(kind, newest["key"], device)
        return figure or 0.0, list(newest.get("slots", []))

    def devices(self, kind: str, key: str) -> list[str]:
        """Devices that have a rate for (kind, key)."""
        return sorted({d for k, kk, d in self._pooled if (k, kk) == (kind, key)})

    def __len__(self) -> int:
        return len(self.records)


def _check_records(records: Any, where: str) -> list[dict[str, Any]]:
    if not isinstance(records, list):
        raise ValueError(f"{where}: 'records' must be a list, got {type(records).__name__}")
    for i, r in enumerate(records):
        missing = [k for k in ("kind", "key", "device", "clips", "seconds") if not isinstance(r, dict) or k not in r]
        if missing or r["kind"] not in KINDS:
            raise ValueError(f"{where}: record {i} must have kind in {KINDS}, key, device, clips, seconds; got {r!r}")
    return records


def _parse(text: str, where: str) -> list[dict[str, Any]]:
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{where}: not JSON ({e})") from e
    if not isinstance(doc, dict) or doc.get(FILE_KEY) != FORMAT:
        raise ValueError(f"{where}: not a featstore rates file (expected {{'{FILE_KEY}': {FORMAT}, 'records': [...]}})")
    return _check_records(doc.get("records"), where)


def _dump(records: Sequence[Mapping[str, Any]]) -> str:
    return json.dumps({FILE_KEY: FORMAT, "records": list(records)}, indent=1, sort_keys=True) + "\n"


def load_rates_file(path: str | Path) -> list[dict[str, Any]]:
    """Records of a rates file (``featstore calibrate``'s, or a store's ``.rates.json``):
    a local path or an fsspec URL.

    Raises:
        FileNotFoundError: when the file does not exist.
        ValueError: naming the file when it is not a rates file.
    """
    fs, where = _fs_path(str(path))
    return _parse(fs.cat_file(where).decode(), str(path))


def save_rates_file(
    path: str | Path, records: Sequence[Mapping[str, Any]], keep: int | None = None
) -> list[dict[str, Any]]:
    """Append ``records`` to the rates file at ``path`` (a local path or an fsspec URL;
    created if missing), keeping the newest ``keep`` (default all); returns its records."""
    try:
        old = load_rates_file(path)
    except FileNotFoundError:
        old = []
    kept = [*old, *map(dict, records)][-keep if keep else None :]
    fs, where = _fs_path(str(path))
    fs.pipe_file(where, _dump(kept).encode())
    return kept


def store_rates_url(store_url: str) -> str:
    """Where a store's job rates are kept: ``<store>.rates.json`` beside it (a rates
    file). Not inside the store, whose bytes must not depend on how fast a run was
    (DESIGN: a finished store is bitwise the same however it was made)."""
    return str(store_url).rstrip("/") + RATES_SUFFIX


def _fs_path(url: str) -> tuple[Any, str]:
    import fsspec

    if "://" in url and not url.startswith("file://"):  # no cached listing or instance: another run may have written
        return fsspec.core.url_to_fs(url, use_listings_cache=False, skip_instance_cache=True)
    return fsspec.core.url_to_fs(url)


def store_rates(store_url: str) -> list[dict[str, Any]]:
    """Rate records the extraction jobs appended beside a store (empty when none).

    Raises:
        ValueError: naming the file when it is not a rates file.
    """
    try:
        return load_rates_file(store_rates_url(store_url))
    except FileNotFoundError:
        return []


def append_store_rates(store_url: str, records: Sequence[Mapping[str, Any]]) -> None:
    """Append a run's records to the store's rates file (one small object, rewritten
    whole; the newest ``STORE_KEEP`` kept). Coordinator only, after the workers are done."""
    if records:
        save_rates_file(store_rates_url(store_url), records, keep=STORE_KEEP)
