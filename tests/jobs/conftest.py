"""Fixtures for the extraction job: a dataset mixing good and bad clips, a way to run
the job as its own process (its own local Ray, like a user's run), and a clean
reference store to compare faulted runs against bitwise."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest

from featstore.demo.dataset import make_demo_dataset

REPO = Path(__file__).resolve().parents[2]
JOB = REPO / "jobs" / "extract.py"
GOOD = 4
# Cheap encoders keep each job run short; the pipeline treats every slot alike.
JOB_ARGS = ["--format", "csv", "--encoders", "local,audio", "--unit-size", "2", "--local-frames", "2"]
# `--ray-address local`: a fresh Ray per run, never a cluster another test left running.
ARGS = [*JOB_ARGS, "--ray-address", "local"]


# Store order is manifest order: with 2-sample units, every unit mixes a good clip with
# a bad one ([demo_0000, bad_text], [demo_0001, silent], [demo_0002, bad_trunc],
# [demo_0003]), so a fault at any unit hits real features.
MIXED_ORDER = ("demo_0000", "bad_text", "demo_0001", "silent", "demo_0002", "bad_trunc", "demo_0003")
BAD = ("bad_text", "bad_trunc", "silent")


def write_silent_clip(src: Path, dst: Path, width: int = 224, height: int = 224) -> None:
    """A real H.264 clip with no audio track: ``src``'s frames cropped to width x height."""
    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for frame in inp.decode(video=0):
            img = np.ascontiguousarray(frame.to_ndarray(format="rgb24")[:height, :width])
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


@pytest.fixture(scope="session")
def mixed_dataset(tmp_path_factory) -> Path:
    """4 demo clips plus a text file named .mp4, a truncated clip and a clip without
    audio, in MIXED_ORDER."""
    root = make_demo_dataset(tmp_path_factory.mktemp("mixed") / "data", n=GOOD, seconds=1.0)
    clips = root / "clips"
    (clips / "bad_text.mp4").write_text("this is not a video\n")
    whole = (clips / "demo_0000.mp4").read_bytes()
    (clips / "bad_trunc.mp4").write_bytes(whole[: len(whole) // 3])
    write_silent_clip(clips / "demo_0001.mp4", clips / "silent.mp4")
    with open(root / "manifest.csv", newline="", encoding="utf-8") as f:
        header, *rows = list(csv.reader(f))
    rows += [[sid, f"clips/{sid}.mp4", "", "words", "neutral"] for sid in BAD]
    by_id = {r[0]: r for r in rows}
    assert sorted(by_id) == sorted(MIXED_ORDER), sorted(by_id)
    write_manifest(root, header, [by_id[sid] for sid in MIXED_ORDER])
    return root


def write_manifest(root: Path, header: list[str], rows: list[list[str]]) -> None:
    with open(root / "manifest.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(header)
        w.writerows(rows)


@pytest.fixture(scope="session")
def sizes_dataset(tmp_path_factory) -> Path:
    """3 demo clips (224 x 224) and a 160 x 128 crop of each (audio from the original
    clip), interleaved, so that a 4-sample unit mixes two frame sizes."""
    root = make_demo_dataset(tmp_path_factory.mktemp("sizes") / "data", n=3, seconds=1.0)
    with open(root / "manifest.csv", newline="", encoding="utf-8") as f:
        header, *rows = list(csv.reader(f))
    mixed = []
    for row in rows:
        sid, video = row[0], row[1]
        write_silent_clip(root / video, root / "clips" / f"{sid}_small.mp4", width=160, height=128)
        mixed += [row, [f"{sid}_small", f"clips/{sid}_small.mp4", video, *row[3:]]]
    write_manifest(root, header, mixed)
    return root


def run_job(
    dataset: Path,
    out: Path,
    *extra: str,
    env: dict | None = None,
    timeout: int = 400,
) -> tuple[subprocess.CompletedProcess, dict | None]:
    """Run jobs/extract.py in its own process; returns the process and its JSON summary."""
    summary = out / "summary.json"
    cmd = [
        sys.executable,
        str(JOB),
        "--dataset",
        str(dataset),
        "--store",
        str(out / "store.zarr"),
        "--work-dir",
        str(out),
        "--summary-json",
        str(summary),
        *ARGS,
        *extra,
    ]
    proc = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "TRANSFORMERS_VERBOSITY": "error", **(env or {})},
    )
    return proc, (json.loads(summary.read_text()) if summary.exists() else None)


@pytest.fixture(scope="session")
def reference(mixed_dataset, tmp_path_factory):
    """One clean run: (store path, summary, completed process)."""
    out = tmp_path_factory.mktemp("reference")
    proc, summary = run_job(mixed_dataset, out)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out / "store.zarr", summary, proc
