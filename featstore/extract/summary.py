"""The run summary of an extraction: what the store holds now, what this run did, and why samples failed."""

from __future__ import annotations

from collections import Counter
from typing import Any

from featstore.manifest.hashing import is_problem_hash
from featstore.store import FeatureStore

__all__ = ["plan_summary", "rates_line", "summarize", "summary_lines"]


def summarize(store: FeatureStore, prep: Any, stats: list[dict], wall: float) -> dict[str, Any]:
    reasons: Counter = Counter()
    for feat in (store.feature(k) for k in prep.keys.values()):
        for r in feat.failures():
            reasons[f"{feat.spec.name}: {r['stage']}: {r['reason'].split(':')[0]}"] += 1
    seconds: Counter = Counter()
    for s in stats:
        seconds.update(s["seconds"])
    clips = sum(s["clips"] for s in stats)
    faces = [sum(s["faces"][i] for s in stats) for i in (0, 1)]
    return {
        "store": store.url,
        "samples": store.num_samples,
        "units_run": len(stats),
        "units": {slot: sorted(s["unit"] for s in stats if slot in s["slots"]) for slot in prep.keys},
        "clips_run": clips,
        # In the store as failures (stage manifest), or "kept": committed before the media went missing.
        "manifest_problems": [
            {"sample_id": s.sample_id, "reason": s.error, "kept": not is_problem_hash(store.media_hash(s.sample_id))}
            for s in prep.manifest.problems
        ],
        "specs": {slot: {"key": k, **store.feature(k).counts()} for slot, k in prep.keys.items()},
        "failed_by_reason": dict(reasons),
        "stage_seconds": {k: round(v, 2) for k, v in seconds.items()},
        "faces_found": faces,
        "wall_seconds": round(wall, 2),
        "actors": _actors(stats),
        "unit_writers": {str(s["unit"]): s["pid"] for s in stats},  # unit -> the process whose write succeeded
        "clips_per_second": round(clips / wall, 3) if wall else None,
    }


def _actors(stats: list[dict]) -> dict[str, list[dict]]:
    """Per slot, the distinct encoder actors that ran units: pid, node, GPU ids, CUDA_VISIBLE_DEVICES."""
    seen: dict[str, dict[tuple, dict]] = {}
    for s in stats:
        for slot, dev in s["devices"].items():
            seen.setdefault(slot, {})[(dev["node"], dev["pid"])] = dev
    return {slot: list(d.values()) for slot, d in seen.items()}


def summary_lines(s: dict[str, Any]) -> list[str]:
    """The summary as a person reads it: per spec counts, failures by reason, time per stage, outputs."""
    lines = [
        f"store {s['store']}: {s['samples']} samples; this run: {s['clips_run']} clips in {s['units_run']} "
        f"units, {s['wall_seconds']} s ({s['clips_per_second']} clips/s)"
    ]
    for slot, c in s["specs"].items():
        lines.append(
            f"  {slot:<9} {c['key']:<28} committed {c['committed']:>6}  failed {c['failed']:>5}  "
            f"pending {c['pending']:>5}"
        )
    lines += [f"  failed: {n} x {reason}" for reason, n in sorted(s["failed_by_reason"].items())]
    lines += [
        f"  media unusable now, features kept from its earlier bytes: {p['sample_id']}: {p['reason']}"
        for p in s["manifest_problems"]
        if p["kept"]
    ]
    lines.append(
        f"  time per stage (summed over workers): {s['stage_seconds']}; faces found in "
        f"{s['faces_found'][0]}/{s['faces_found'][1]} frames"
    )
    if s.get("rates"):
        lines.append("  " + rates_line(s["rates"], s.get("startup_seconds")))
    if "shards" in s:
        lines.append(f"  shards: {s['shards']['samples']} samples in {s['shards']['out']}")
    if s.get("engine_log"):
        lines.append(f"  Ray's own output: {s['engine_log']} (--verbose shows it here)")
    return lines


def rates_line(records: list[dict], startup: float | None = None, where: str = "the store's .rates.json") -> str:
    """Measured rates in one line: seconds per clip of each stage, per slot and device."""
    parts = []
    for r in records:
        what = r.get("slot") or "+".join(r.get("slots", []))
        parts.append(f"{r['kind']} {what} {r['seconds'] / r['clips']:.4f} s/clip on {r['device']}")
    tail = f"; start-up {startup} s (wall time beyond the model of its units)" if startup is not None else ""
    return f"rates measured (appended to {where}): " + ", ".join(parts) + tail


def plan_summary(plan: Any) -> dict[str, Any]:
    """The plan's per-slot counts and reasons, for the run summary."""
    return {
        slot: {"to_compute": sp.to_compute, "todo": dict(sp.todo), "units": len(sp.units), "changes": sp.changes}
        for slot, sp in plan.specs.items()
    }
