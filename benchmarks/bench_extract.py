"""Extraction pipeline on Ray Data: efficiency against its decode and encode stages, and scaling with GPU actors.

Run: python benchmarks/bench_extract.py [--quick] [--n 32] [--seconds 2] [--unit-size 2] [--out FILE]

Everything runs in one fresh local Ray (``--cpus`` CPUs, ``--fake-gpus`` fake
GPUs) on ``--n`` demo clips made in a temporary folder, so the figures of one
run compare side by side.

1. Efficiency of the real pipeline (tiny preset, ``--encoders``, one actor per
   encoder, no GPU): decode only (``decode_unit`` as a Ray Data map over the
   units, output materialized in the object store), encode only (those decoded
   rows fed to one ``EncodeStage`` pool per encoder, with ``build_dataset``'s
   arguments, into a no-op sink) and end to end (``prepare``, ``unit_works``,
   ``build_dataset`` and the real ``StoreSink`` into a fresh store). Efficiency =
   end to end / min(decode, encode). The tiny encoders run on the same CPUs as
   decoding, so the shared-CPU bound 1 / (1/decode + 1/encode) is given too.
2. Scaling: a simulated GPU encoder (``SleepEncoder``: sleeps T a unit, as a
   GPU-bound actor looks to the host, and returns zero features of step 1's
   shapes) with 1, 2 and 4 actors, one fake GPU each, behind the real decode
   stage, writing through the real ``StoreSink`` into a fresh store each run.
   T = ``--sim-factor`` x the unit interval of the decode-only run, so one actor
   is encode-bound and four could reach the decode ceiling.

The end-to-end and scaling runs are repeated per ``--variants``: ``default``
is what ``jobs/extract.py`` does now (``ExtractConfig``'s CPU requests: actors
0.01, decode tasks 0.9, one 0.05-CPU write task a unit committing it as it
arrives, ``commit_units``; Ray Data's per-operator reservation off);
``reserved`` is the same with the reservation on and Ray Data's default CPU
requests (actors 0.25, decode tasks 1). The ``old`` and ``tuned`` variants of
the issue-13 runs in BENCHMARKS.md wrote through a ``Datasink``; that write path
is gone from the job and from this benchmark.

Start-up: every actor pool loads its models before any unit starts
(``DataContext.wait_for_min_actors_s``), a warm-up decode run starts the task
workers first, and Ray keeps idle workers for ``--worker-idle-s`` (with its
default of 1 s it kills idle workers beyond its soft limit between bursts, and
each fresh worker spends ~12 s importing ``featstore.pipeline``). Each run's
clips/s is all its clips / (last unit committed - first unit started), so
actor start-up and Ray Data planning are out and the pipeline's fill latency
is in. The stamps: ``decode_unit`` is wrapped (``timed_decode``;
``build_dataset`` gets it through a patch of ``featstore.extract.decode_unit``
for that call only), the encode-only run's first stage stamps when it takes a
unit, and the sinks stamp each commit.
Wall clips/s, with all start-up, is given next to each figure, and the 1-minute
load average at the start and end of each run (the machine is shared).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import ray
from ray.data.block import Block, BlockAccessor
from ray.data.datasource.datasink import Datasink, WriteResult

from featstore.demo.dataset import make_demo_dataset
from featstore.extract import run as extract
from featstore.extract.config import ExtractConfig
from featstore.extract.decode import decode_unit
from featstore.extract.encode import EncodeStage
from featstore.extract.plan import unit_works
from featstore.extract.run import (
    RESERVATION,
    TASK_RETRIES,
    Prepared,
    build_dataset,
    commit_units,
    encoder_options,
    prepare,
)
from featstore.extract.sink import StoreSink
from featstore.media.clip import DecodeConfig
from featstore.spec import FeatureSpec
from featstore.store import FeatureStore

ACTOR_WAIT_S = 600  # actor pools block until their models are loaded (start-up out of the timed window)
WARMUP_UNITS = 4  # decode units run once to start and warm the decode workers (imports, page cache)


@dataclass(frozen=True)
class Variant:
    """Scheduling settings the end-to-end and scaling runs are repeated with."""

    name: str
    cpus_per_actor: float  # CPUs each encoder actor reserves
    decode_cpus: float  # CPUs each decode task reserves
    reservation: bool  # Ray Data's per-operator resource reservation (DataContext.op_resource_reservation_enabled)


VARIANTS = {
    # what jobs/extract.py does: ExtractConfig's CPU requests, run.RESERVATION, commit_units
    "default": Variant(
        "default",
        cpus_per_actor=ExtractConfig.cpus_per_actor,
        decode_cpus=ExtractConfig.decode_cpus,
        reservation=RESERVATION,
    ),
    # Ray Data's default CPU requests and per-operator reservation, with the job's write stage
    "reserved": Variant("reserved", cpus_per_actor=0.25, decode_cpus=1.0, reservation=True),
}


def machine() -> str:
    """CPU model, cores and memory of this machine; no GPU is used."""
    info = Path("/proc/cpuinfo").read_text()
    model = next((ln.split(":", 1)[1].strip() for ln in info.splitlines() if ln.startswith("model name")), "?")
    kib = next(int(ln.split()[1]) for ln in Path("/proc/meminfo").read_text().splitlines() if ln.startswith("MemTotal"))
    return f"{model}, {os.cpu_count()} cores, {kib / 2**20:.0f} GiB, {platform.system()} {platform.machine()}, no GPU"


def rates(records: list[dict[str, Any]], wall: float, load: tuple[float, float]) -> dict[str, Any]:
    """One run's figures from its per-unit records (``clips``, ``t_start``, ``t_done``, optional ``decode_s``).

    Steady clips/s = all clips / (last unit finished - first unit started): actor
    start-up happened before the first start; the pipeline's fill latency is in.
    """
    t0 = min(r["t_start"] for r in records)
    done = sorted(r["t_done"] - t0 for r in records)
    clips = sum(r["clips"] for r in records)
    out = {
        "units": len(records),
        "clips": clips,
        "seconds": round(done[-1], 2),
        "clips_per_s": round(clips / done[-1], 3),
        "wall_s": round(wall, 2),
        "wall_clips_per_s": round(clips / wall, 3),
        "first_unit_done_s": round(done[0], 2),
        # share of the units committed in the first half of the run: ~0.5 when units commit as they
        # finish, ~0 when they are written in a burst at the end
        "committed_by_half_time": round(sum(t <= done[-1] / 2 for t in done) / len(done), 2),
        "load_1min": [round(x, 2) for x in load],
        "done_at_s": [round(t, 2) for t in done],
    }
    decode = [r["decode_s"] for r in records if r.get("decode_s") is not None]
    if decode:
        out["decode_s_per_unit"] = round(float(np.mean(decode)), 3)
        out["decode_busy"] = round(sum(decode) / done[-1], 2)  # mean number of decodes running at once
    return out


# ---- stamps, sinks and the simulated encoder -------------------------------------------------------------


def timed_decode(row: dict[str, Any], root: str, cfg: DecodeConfig) -> dict[str, Any]:
    """``decode_unit``, stamping when the unit's decode started and ended."""
    t0 = time.time()
    out = decode_unit(row, root, cfg)
    work = out["work"]
    return {**out, "t_start": t0, "t_done": time.time(), "clips": len(work.samples), "decode_s": work.seconds["decode"]}


@contextmanager
def stamped_build_dataset() -> Iterator[None]:
    """Make ``build_dataset`` map ``timed_decode`` instead of ``decode_unit``; nothing else changes."""
    real = extract.decode_unit
    extract.decode_unit = timed_decode
    try:
        yield
    finally:
        extract.decode_unit = real


@contextmanager
def ray_data_reservation(enabled: bool) -> Iterator[None]:
    """Ray Data's per-operator resource reservation on or off for the datasets built inside."""
    ctx = ray.data.DataContext.get_current()
    before = ctx.op_resource_reservation_enabled
    ctx.op_resource_reservation_enabled = enabled
    try:
        yield
    finally:
        ctx.op_resource_reservation_enabled = before


class StampedEncodeStage(EncodeStage):
    """EncodeStage that stamps when it took each unit (the encode-only run's start)."""

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        batch["t_start"] = np.full(len(batch["work"]), time.time())
        return super().__call__(batch)


class TimedStoreSink(StoreSink):
    """The real StoreSink writing each unit (``_write_unit``), returning its start and commit times."""

    def commit_batch(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        store = FeatureStore.open(self.store_url, "r+")
        out = []
        for work, t_start in zip(batch["work"], batch["t_start"]):
            stats = self._write_unit(store, work)
            rec = {"unit": stats["unit"], "clips": stats["clips"], "t_start": float(t_start), "t_done": time.time()}
            out.append(json.dumps({**rec, "decode_s": stats["seconds"].get("decode")}))
        return {"stats": np.array(out, dtype=object)}


class NullSink(Datasink):
    """Drops every unit, returning its start time and when it arrived (the encode-only run's end)."""

    def __init__(self) -> None:
        self.stats: list[dict[str, Any]] = []

    def write(self, blocks: Iterable[Block], ctx: Any) -> list[dict[str, Any]]:
        return [
            {"clips": len(r["work"].samples), "t_start": float(r["t_start"]), "t_done": time.time()}
            for b in blocks
            for r in BlockAccessor.for_block(b).iter_rows(public_row_format=True)
        ]

    def on_write_complete(self, write_result: WriteResult) -> None:
        self.stats = [s for ret in write_result.write_returns for s in ret]


class SleepEncoder:
    """A simulated GPU encoder: holds its GPU for ``seconds`` a unit (no host CPU), returns zero features."""

    def __init__(self, seconds: float, shapes: dict[str, tuple[tuple[int, ...], str]]) -> None:
        # Import the row type (and with it torch) now, as a real encoder's __init__ does; else the
        # first unit would pay it, inside the timed window.
        import featstore.extract.encode  # noqa: F401

        self.seconds, self.shapes = seconds, shapes

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        for work in batch["work"]:
            time.sleep(self.seconds)
            for slot in work.slots:
                shape, dtype = self.shapes[slot]
                work.features[slot] = np.zeros((len(work.samples), *shape), dtype=dtype)
            for clip in work.clips:
                clip.arrays.clear()
        return batch


# ---- the runs -----------------------------------------------------------------------------------------------


def decode_ds(
    works: list, prep: Prepared, cfg: ExtractConfig, decode: DecodeConfig, decode_cpus: float | None = None
) -> ray.data.Dataset:
    """The pipeline's first two steps as ``build_dataset`` makes them, with ``timed_decode``."""
    ds = ray.data.from_items([{"work": w} for w in works], override_num_blocks=max(1, len(works)))
    return ds.map(
        timed_decode,
        fn_kwargs={"root": str(prep.manifest.root.resolve()), "cfg": decode},
        num_cpus=decode_cpus or cfg.decode_cpus,
        max_retries=TASK_RETRIES,
    )


def timed_write(ds: ray.data.Dataset, sink: Any, cfg: ExtractConfig | None = None):
    """Run ``ds`` into ``sink`` and return the run's figures: a ``StoreSink`` through the job's
    ``commit_units`` (with ``cfg``), the encode-only run's ``NullSink`` (``cfg`` None) as a Datasink."""
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    if cfg is not None:
        commit_units(ds, sink, cfg)
    else:
        ds.write_datasink(sink)
    return rates(sink.stats, time.perf_counter() - t0, (load0, os.getloadavg()[0]))


def run_decode_only(works: list, prep: Prepared, cfg: ExtractConfig, decode: DecodeConfig):
    """Decode every unit into the object store; returns (figures, the materialized rows)."""
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    decoded = decode_ds(works, prep, cfg, decode).materialize()
    wall = time.perf_counter() - t0
    recs = decoded.select_columns(["clips", "t_start", "t_done", "decode_s"]).take_all()
    return rates(recs, wall, (load0, os.getloadavg()[0])), decoded


def run_encode_only(decoded: Any, prep: Prepared, cfg: ExtractConfig, decode: DecodeConfig) -> dict[str, Any]:
    """Pre-decoded rows -> one EncodeStage pool per encoder (the arguments of ``build_dataset``) -> no-op sink."""
    ds = decoded
    for i, (slot, key) in enumerate(prep.keys.items()):
        ds = ds.map_batches(
            StampedEncodeStage if i == 0 else EncodeStage,
            batch_size=1,
            concurrency=cfg.actors,
            num_gpus=prep.gpus_per_actor,
            num_cpus=cfg.cpus_per_actor,
            fn_constructor_kwargs={
                "slot": slot,
                "preset": cfg.preset,
                "source": None,
                "options": encoder_options(cfg, decode, slot),
                "spec_id": prep.store.feature(key).spec.id,
                "batch_size": cfg.batch_size,
            },
        )
    return timed_write(ds, NullSink())


def run_end_to_end(cfg: ExtractConfig, decode: DecodeConfig, variant: Variant) -> dict[str, Any]:
    """The real pipeline into a fresh store: prepare, unit_works, build_dataset, StoreSink."""
    prep = prepare(cfg, decode)
    works = unit_works(prep.store, prep.keys, retry_failed=False)
    with ray_data_reservation(variant.reservation), stamped_build_dataset():
        sink = TimedStoreSink(prep.store.url, prep.keys)
        out = timed_write(build_dataset(cfg, decode, prep, works), sink, cfg)
    store = FeatureStore.open(prep.store.url)
    counts = {slot: store.feature(k).counts() for slot, k in prep.keys.items()}
    if any(c["pending"] for c in counts.values()):
        raise RuntimeError(f"end-to-end run left units pending: {counts}")
    return {**out, "committed": {slot: c["committed"] for slot, c in counts.items()}}


def run_scaled(
    store_url: str, prep: Prepared, cfg: ExtractConfig, actors: int, seconds: float, variant: Variant
) -> dict[str, Any]:
    """Real decode -> ``actors`` SleepEncoder actors (one fake GPU each) -> real StoreSink, fresh store."""
    store = FeatureStore.open_or_create(store_url)
    store.add_manifest(prep.manifest)
    shapes, keys = {}, {}
    for slot, key in prep.keys.items():
        real = prep.store.feature(key).spec
        sim = FeatureSpec(name=real.name, encoder="SleepEncoder", weights="none", shape=real.shape, dtype=real.dtype)
        keys[slot] = store.add_spec(sim, unit_size=cfg.unit_size).spec.key
        shapes[slot] = (tuple(real.shape), real.dtype)
    works = unit_works(store, keys, retry_failed=False)
    with ray_data_reservation(variant.reservation):
        ds = decode_ds(works, prep, cfg, decode_config(cfg), variant.decode_cpus).map_batches(
            SleepEncoder,
            batch_size=1,
            concurrency=actors,
            num_gpus=1,
            num_cpus=variant.cpus_per_actor,
            fn_constructor_kwargs={"seconds": seconds, "shapes": shapes},
        )
        return timed_write(ds, TimedStoreSink(store_url, keys), cfg)


# ---- the two sections ----------------------------------------------------------------------------------------


@ray.remote(num_cpus=0.05)
def _warm_worker() -> int:
    """Import what decode and write tasks import, and stay busy long enough that others start beside it."""
    import featstore.extract.decode  # noqa: F401
    import featstore.extract.sink  # noqa: F401

    time.sleep(3)
    return os.getpid()


def prestart_workers(n: int) -> None:
    """Start ``n`` task workers at once and warm their imports (kept for ``--worker-idle-s``), so that a
    variant whose write tasks run beside the decode tasks does not pay worker start-up in its timed
    window while one that writes after decoding reuses the decode workers."""
    ray.get([_warm_worker.remote() for _ in range(n)])


def decode_config(cfg: ExtractConfig) -> DecodeConfig:
    """The decode settings ``run_extract`` derives from its config."""
    return DecodeConfig(global_frame=cfg.global_frame, local_frames=cfg.local_frames, timeout_s=cfg.decode_timeout)


def efficiency(root: Path, tmp: Path, args: argparse.Namespace) -> tuple[dict[str, Any], Prepared, ExtractConfig]:
    """Step 1: decode only, encode only, end to end (once per variant) and their ratios."""
    base = {
        "dataset": str(root),
        "format": "merr",
        "work_dir": str(tmp),
        "preset": "tiny",
        "encoders": args.encoders,
        "unit_size": args.unit_size,
        "gpus_per_actor": 0.0,
    }
    cfg = ExtractConfig(**base, store=str(tmp / "decode.zarr"))
    decode = decode_config(cfg)
    prep = prepare(cfg, decode)
    works = unit_works(prep.store, prep.keys, retry_failed=False)
    prestart_workers(args.cpus + 2)  # decode tasks and write tasks run side by side in the new pipeline
    decode_ds(works[:WARMUP_UNITS], prep, cfg, decode).materialize()  # warm-up, not timed
    dec, decoded = run_decode_only(works, prep, cfg, decode)
    print(f"decode only: {dec['clips_per_s']} clips/s", flush=True)
    enc = run_encode_only(decoded, prep, cfg, decode)
    print(f"encode only: {enc['clips_per_s']} clips/s", flush=True)
    del decoded
    d, e = dec["clips_per_s"], enc["clips_per_s"]
    out = {
        "clips": args.n,
        "clip_seconds": args.seconds,
        "unit_size": args.unit_size,
        "units": len(works),
        "preset": "tiny",
        "encoders": cfg.slots(),
        "actors_per_encoder": cfg.actors,
        "gpus_per_actor": 0.0,
        "decode_cpus": cfg.decode_cpus,
        "encode_only_cpus_per_actor": cfg.cpus_per_actor,
        "decode_only": dec,
        "encode_only": enc,
        "bound_clips_per_s": min(d, e),
        "bound": "decode" if d <= e else "encode",
        "shared_cpu_bound_clips_per_s": round(1 / (1 / d + 1 / e), 3),
        "end_to_end": [],
    }
    for v in args.variants:
        run = ExtractConfig(
            **base, store=str(tmp / f"e2e_{v.name}.zarr"), cpus_per_actor=v.cpus_per_actor, decode_cpus=v.decode_cpus
        )
        e2e = {"variant": asdict(v), **run_end_to_end(run, decode, v)}
        e2e.update(
            efficiency=round(e2e["clips_per_s"] / min(d, e), 3),
            efficiency_vs_shared_cpu=round(e2e["clips_per_s"] / out["shared_cpu_bound_clips_per_s"], 3),
        )
        print(f"end to end ({v.name}): {e2e['clips_per_s']} clips/s", flush=True)
        out["end_to_end"].append(e2e)
    return out, prep, cfg


def scaling(eff: dict[str, Any], prep: Prepared, cfg: ExtractConfig, tmp: Path, args: argparse.Namespace) -> list:
    """Step 2: the simulated GPU encoder with 1, 2, 4 actors behind the real decode stage and StoreSink."""
    ceiling = eff["decode_only"]["clips_per_s"]
    unit_interval = cfg.unit_size / ceiling  # seconds between units at the decode ceiling
    seconds = args.sim_seconds or round(args.sim_factor * unit_interval, 3)
    rows = []
    for v in args.variants:
        for k in args.actors:
            r = run_scaled(str(tmp / f"sim_{v.name}_{k}.zarr"), prep, cfg, k, seconds, v)
            bound = k * cfg.unit_size / seconds
            rows.append(
                {
                    "actors": k,
                    "gpus_per_actor": 1,
                    "variant": asdict(v),
                    "sim_seconds_per_unit": seconds,
                    "encode_bound_clips_per_s": round(bound, 3),
                    "decode_ceiling_clips_per_s": ceiling,
                    "expected_clips_per_s": round(min(bound, ceiling), 3),
                    **r,
                    "of_expected": round(r["clips_per_s"] / min(bound, ceiling), 3),
                }
            )
            print(f"scaling ({v.name}): {k} actor(s): {r['clips_per_s']} clips/s", flush=True)
    return rows


def _load(r: dict[str, Any]) -> str:
    return "-".join(f"{x:.1f}" for x in r["load_1min"])


def print_tables(eff: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    """Both sections as aligned tables."""
    print(
        f"\n1. Efficiency: {eff['clips']} clips of {eff['clip_seconds']:g} s, {eff['units']} units of "
        f"{eff['unit_size']}, tiny {','.join(eff['encoders'])}, 1 actor each, no GPU\n"
        f"{'run':<56}{'clips/s':>8}{'wall c/s':>9}{'dec busy':>9}{'dec s/unit':>11}{'half':>6}{'load':>10}"
    )

    def line(name: str, r: dict[str, Any]) -> None:
        print(
            f"{name:<56}{r['clips_per_s']:>8}{r['wall_clips_per_s']:>9}{r.get('decode_busy', ''):>9}"
            f"{r.get('decode_s_per_unit', ''):>11}{r['committed_by_half_time']:>6}{_load(r):>10}"
        )

    line("decode only (map decode_unit, materialized)", eff["decode_only"])
    line(f"encode only (EncodeStage pools, {eff['encode_only_cpus_per_actor']:g} CPU, no-op sink)", eff["encode_only"])
    for r in eff["end_to_end"]:
        v = r["variant"]
        line(
            f"end to end {v['name']} ({v['cpus_per_actor']:g}/{v['decode_cpus']:g} CPU act/dec, "
            f"res. {'on' if v['reservation'] else 'off'}, {v['write']})",
            r,
        )
    print(
        f"bound min(decode, encode) = {eff['bound_clips_per_s']} ({eff['bound']}); shared-CPU bound "
        f"1/(1/decode + 1/encode) = {eff['shared_cpu_bound_clips_per_s']}"
    )
    for r in eff["end_to_end"]:
        print(
            f"efficiency {r['variant']['name']}: {r['efficiency']} of min(decode, encode), "
            f"{r['efficiency_vs_shared_cpu']} of the shared-CPU bound"
        )
    print(
        f"\n2. Scaling: SleepEncoder (1 fake GPU an actor), real decode + StoreSink\n"
        f"{'variant':<9}{'actors':>6}{'T s/unit':>9}{'enc bound':>10}{'expected':>9}{'clips/s':>8}"
        f"{'wall c/s':>9}{'of exp.':>8}{'dec busy':>9}{'half':>6}{'load':>10}"
    )
    for r in rows:
        print(
            f"{r['variant']['name']:<9}{r['actors']:>6}{r['sim_seconds_per_unit']:>9}"
            f"{r['encode_bound_clips_per_s']:>10}{r['expected_clips_per_s']:>9}{r['clips_per_s']:>8}"
            f"{r['wall_clips_per_s']:>9}{r['of_expected']:>8}{r.get('decode_busy', ''):>9}"
            f"{r['committed_by_half_time']:>6}{_load(r):>10}"
        )
    print(f"{'decode-only ceiling (step 1)':<34}{eff['decode_only']['clips_per_s']:>8}")


def int_list(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def variant_list(text: str) -> list[Variant]:
    names = [x for x in text.split(",") if x]
    if not names or any(n not in VARIANTS for n in names):
        raise argparse.ArgumentTypeError(f"{text!r}: expected a comma-separated list of {', '.join(VARIANTS)}")
    return [VARIANTS[n] for n in names]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="a smoke run of a few minutes: --n 12 --seconds 1 --encoders local,audio --actors 1,4 "
        "--variants default,reserved unless given",
    )
    p.add_argument("--n", type=int, default=None, help="demo clips to make and extract (default 32; quick 12)")
    p.add_argument("--seconds", type=float, default=None, help="seconds per demo clip (default 2; quick 1)")
    p.add_argument("--unit-size", type=int, default=2, help="samples per work unit, a power of two (default 2)")
    p.add_argument(
        "--encoders",
        default=None,
        help="tiny encoder slots for step 1, comma-separated (default all four: global,local,temporal,"
        "audio; quick local,audio)",
    )
    p.add_argument(
        "--actors",
        type=int_list,
        default=None,
        help="simulated-encoder actor counts for step 2 (default 1,2,4; quick 1,4)",
    )
    p.add_argument(
        "--variants",
        type=variant_list,
        default=None,
        help="scheduling settings the end-to-end and scaling runs repeat with, comma-separated: "
        "'default' (what jobs/extract.py does: actors 0.01 CPU, decode tasks 0.9, a write task a unit, "
        "no per-operator reservation) and 'reserved' (actors 0.25 CPU, decode 1, Ray Data's "
        "per-operator reservation, the same write stage) (default both)",
    )
    p.add_argument(
        "--sim-factor",
        type=float,
        default=3.0,
        help="simulated encoder time a unit = this x the decode-only unit interval (default 3)",
    )
    p.add_argument(
        "--sim-seconds", type=float, default=None, help="simulated encoder seconds a unit (overrides --sim-factor)"
    )
    p.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray (default 2)")
    p.add_argument("--fake-gpus", type=int, default=4, help="GPUs the local Ray pretends to have (default 4)")
    p.add_argument("--object-store-mb", type=int, default=1024, help="Ray object store size in MB (default 1024)")
    p.add_argument(
        "--worker-idle-s",
        type=float,
        default=600.0,
        help="seconds before Ray may kill an idle worker process (default 600, so warm workers survive "
        "between bursts of tasks; 0 keeps Ray's default of 1 s, with which fresh workers, each "
        "importing featstore.pipeline for ~12 s, stall short runs on a 2-CPU node)",
    )
    p.add_argument("--out", default="benchmarks/results/extract.json", help="JSON file for the figures")
    return p


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = build_parser()
    args = p.parse_args(argv)
    args.n = args.n or (12 if args.quick else 32)
    args.seconds = args.seconds or (1.0 if args.quick else 2.0)
    args.actors = args.actors or ([1, 4] if args.quick else [1, 2, 4])
    args.encoders = args.encoders or ("local,audio" if args.quick else "global,local,temporal,audio")
    args.variants = args.variants or list(VARIANTS.values())
    if args.unit_size < 1 or args.unit_size & (args.unit_size - 1):
        p.error(f"--unit-size {args.unit_size} must be a power of two")
    if args.n // args.unit_size < 4:
        p.error(f"--n {args.n} gives {args.n // args.unit_size} units of {args.unit_size}; at least 4 are needed")
    if max(args.actors) > args.fake_gpus or min(args.actors) < 1:
        p.error(f"--actors {args.actors} must be between 1 and --fake-gpus {args.fake_gpus}")
    return args


def start_ray(args: argparse.Namespace) -> None:
    """A fresh local Ray (never a running cluster), quiet Ray Data, actor pools ready before work starts."""
    system = {"idle_worker_killing_time_threshold_ms": int(args.worker_idle_s * 1000)} if args.worker_idle_s else {}
    ray.init(
        address="local",
        num_cpus=args.cpus,
        num_gpus=args.fake_gpus,
        include_dashboard=False,
        object_store_memory=args.object_store_mb * 2**20,
        log_to_driver=False,
        _system_config=system,
    )
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    ctx.wait_for_min_actors_s = ACTOR_WAIT_S


def main(argv: list[str] | None = None) -> None:
    """Make the clips, run both sections in one Ray, print the tables and write --out."""
    args = parse_args(argv)
    command = " ".join(["python benchmarks/bench_extract.py", *(sys.argv[1:] if argv is None else argv)])
    load = os.getloadavg()
    tmp = Path(tempfile.mkdtemp(prefix="bench_extract_"))
    try:
        root = make_demo_dataset(tmp / "data", n=args.n, seconds=args.seconds, audio_source="synth")
        start_ray(args)
        eff, prep, cfg = efficiency(root, tmp, args)
        rows = scaling(eff, prep, cfg, tmp, args)
    finally:
        ray.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)
    print_tables(eff, rows)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "machine": machine(),
                "command": command,
                "date": datetime.date.today().isoformat(),
                "python": platform.python_version(),
                "ray": ray.__version__,
                "ray_cpus": args.cpus,
                "fake_gpus": args.fake_gpus,
                "worker_idle_s": args.worker_idle_s,
                "load_average_at_start": [round(x, 2) for x in load],
                "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
                "method": "clips/s = all clips / (last unit committed - first unit started); actor pools load their "
                "models before any unit starts (wait_for_min_actors_s) and a warm-up decode run starts the "
                "task workers, so start-up is out and the pipeline's fill latency is in; wall clips/s includes "
                "all start-up",
                "efficiency": eff,
                "scaling": rows,
            },
            indent=2,
        )
        + "\n",
        encoding="utf-8",
    )
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
