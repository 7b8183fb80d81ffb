"""Decode throughput on demo clips: decord vs PyAV (full, VideoMAE, random frames), face crops, audio.

Run: python benchmarks/bench_decode.py [--n 16] [--seconds 4] [--repeats 3] [--faces] [--out benchmarks/results/decode.json]

Makes ``--n`` demo clips (224x224 H.264 at 25 fps with a 16 kHz AAC track,
plus their wavs) in a temporary folder, times each task per clip through the
public API (so the time-limit thread is included), and prints a table. Every
figure is the median over ``--repeats`` passes after one warm-up pass, on one
thread per decode (decord ``num_threads=1``, PyAV ``thread_count=1``, torch
and OpenCV set to one thread), as a one-CPU decode task in the extraction
pipeline runs: Ray sets OMP_NUM_THREADS=1 for such tasks, and on a busy
2-core machine torch's default two threads made the 44.1 kHz resampling
four times slower, not faster.

The JSON file holds one self-describing section group per benchmark (this one
writes ``"decode"``, with the machine, command and date); :func:`merge_sections`
writes a group into the file and keeps the others, so the encoder-throughput
benchmark can add its own to the same file.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import statistics
import tempfile
import time
import wave
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from scipy.signal import resample_poly

from featstore.demo.dataset import make_demo_dataset
from featstore.media.audio import AudioDecodeConfig, decode_audio
from featstore.media.faces import FaceCropConfig, crop_faces
from featstore.media.video import FramePolicy, VideoDecodeConfig, decode_video

BACKENDS = ("decord", "pyav")
RANDOM_FRAMES = 4  # random single frames per clip, each from a fresh open (the global encoder's access pattern)


def machine() -> str:
    """CPU model and core count of this machine, for the record."""
    with open("/proc/cpuinfo", encoding="utf-8") as f:
        model = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), "unknown CPU")
    return f"{model}, {os.cpu_count()} cores, {platform.system()} {platform.machine()}"


def merge_sections(path: str | os.PathLike, sections: dict[str, Any]) -> None:
    """Write section groups into a JSON results file, keeping the groups already there.

    Args:
        path: the JSON file (created with its folder if missing).
        sections: group name -> JSON-able figures; a group of the same name is replaced.
    """
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    old = json.loads(out.read_text(encoding="utf-8")) if out.exists() else {}
    partial = out.with_name(out.name + ".partial")
    partial.write_text(json.dumps({**old, **sections}, indent=2) + "\n", encoding="utf-8")
    os.replace(partial, out)  # a reader never sees half a file


def time_per_clip(paths: list[Path], task: Callable[[Path], Any], repeats: int) -> float:
    """Median over passes of the mean seconds per clip of ``task``, after one warm-up pass."""
    for p in paths:
        task(p)
    passes = []
    for _ in range(repeats):
        start = time.perf_counter()
        for p in paths:
            task(p)
        passes.append((time.perf_counter() - start) / len(paths))
    return statistics.median(passes)


def video_rows(clips: list[Path], n_frames: int, repeats: int) -> list[dict]:
    """decord vs PyAV: a sequential full decode, a 16-frame VideoMAE clip, random single frames."""
    rng = np.random.default_rng(0)
    peaks = {p: [int(i) for i in rng.integers(0, n_frames, RANDOM_FRAMES)] for p in clips}
    rows = []
    for backend in BACKENDS:
        tasks = {
            "full decode": (VideoDecodeConfig(FramePolicy("uniform", n_frames=n_frames), backend), n_frames),
            "videomae 16": (VideoDecodeConfig(FramePolicy("videomae"), backend), 16),
        }
        for name, (cfg, frames) in tasks.items():
            sec = time_per_clip(clips, lambda p, c=cfg: decode_video(p, c), repeats)
            rows.append(_row("video", name, backend, sec, frames))
        single = VideoDecodeConfig(FramePolicy("peak"), backend)
        sec = time_per_clip(clips, lambda p, s=single: [decode_video(p, s, peak_index=k) for k in peaks[p]], repeats)
        rows.append(_row("video", "random single frame", backend, sec / RANDOM_FRAMES, 1))
    return rows


def face_rows(clips: list[Path], repeats: int) -> list[dict]:
    """VideoMAE decode (auto backend) + face crops per clip, and the crops alone; with the found fraction."""
    cfg, faces = VideoDecodeConfig(FramePolicy("videomae")), FaceCropConfig()
    frames = {p: decode_video(p, cfg).frames for p in clips}
    found = sum(crop_faces(f, faces).num_found for f in frames.values()) / (16 * len(clips))
    both = time_per_clip(clips, lambda p: crop_faces(decode_video(p, cfg).frames, faces), repeats)
    crop = time_per_clip(clips, lambda p: crop_faces(frames[p], faces), repeats)
    return [
        {**_row("face", "videomae 16 + crop", "auto", both, 16), "faces_found": round(found, 3)},
        {**_row("face", "crop only (16 frames)", "-", crop, 16), "faces_found": round(found, 3)},
    ]


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of matching ``(x0, y0, x1, y1)`` boxes, row by row."""
    x0, y0 = np.maximum(a[:, 0], b[:, 0]), np.maximum(a[:, 1], b[:, 1])
    x1, y1 = np.minimum(a[:, 2], b[:, 2]), np.minimum(a[:, 3], b[:, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area = lambda c: (c[:, 2] - c[:, 0]) * (c[:, 3] - c[:, 1])  # noqa: E731
    return inter / (area(a) + area(b) - inter)


FACE_BEFORE = FaceCropConfig(detect_every=1, detect_side=0)  # before issue 13: every frame, full size


def face_variant_rows(clips: list[Path], repeats: int) -> list[dict]:
    """Face crops before issue 13 against the default, side by side: the variants run in
    turn, ``repeats`` rounds with the order rotated each round; per-clip time is the median
    of the rounds, the speed-up the median of the rounds' ratios. Crops are compared with
    the former ones by the IoU of the squares they were cut from. The demo frames are
    224x224; the same frames enlarged to 448x448 show the cost of larger frames."""
    cfg = VideoDecodeConfig(FramePolicy("videomae"))
    small = {p: decode_video(p, cfg).frames for p in clips}
    large = {
        p: np.stack([cv2.resize(f, (448, 448), interpolation=cv2.INTER_LINEAR) for f in v]) for p, v in small.items()
    }
    variants = {
        ("224", "before: every frame, full size"): (small, FACE_BEFORE),
        ("224", "default"): (small, FaceCropConfig()),
        ("224", "every 6th frame, full size"): (small, FaceCropConfig(detect_side=0)),
        ("224", "every frame at 112 px"): (small, FaceCropConfig(detect_every=1, detect_side=112)),
        ("448", "before: every frame, full size"): (large, FACE_BEFORE),
        ("448", "default"): (large, FaceCropConfig()),
    }
    crops = {k: {p: crop_faces(f, c) for p, f in frames.items()} for k, (frames, c) in variants.items()}
    times: dict[tuple[str, str], list[float]] = {k: [] for k in variants}
    keys = list(variants)
    for r in range(repeats):
        for key in keys[r % len(keys) :] + keys[: r % len(keys)]:
            frames, c = variants[key]
            start = time.perf_counter()
            for f in frames.values():
                crop_faces(f, c)
            times[key].append((time.perf_counter() - start) / len(frames))
    rows = []
    for key in keys:
        side, name = key
        base = (side, "before: every frame, full size")
        ious = np.concatenate([box_iou(crops[key][p].boxes, crops[base][p].boxes) for p in clips])
        speedups = [b / t for b, t in zip(times[base], times[key])]
        n_frames = sum(len(v.found) for v in crops[key].values())
        rows.append(
            {
                "frames": f"{side}x{side}",
                "variant": name,
                "config": {k: v for k, v in variants[key][1].to_dict().items() if k in ("detect_every", "detect_side")},
                "ms_per_clip": round(statistics.median(times[key]) * 1000, 1),
                "speedup": round(statistics.median(speedups), 2),
                "speedup_min_max": [round(min(speedups), 2), round(max(speedups), 2)],
                "iou_median": round(float(np.median(ious)), 3),
                "iou_p05": round(float(np.percentile(ious, 5)), 3),
                "iou_min": round(float(ious.min()), 3),
                "faces_found": round(sum(c.num_found for c in crops[key].values()) / n_frames, 3),
            }
        )
    return rows


def audio_rows(clips: list[Path], wavs: list[Path], wavs44: list[Path], seconds: float, repeats: int) -> list[dict]:
    """Audio to 16 kHz mono: from the mp4's AAC track, from the 16 kHz wav, from a 44.1 kHz stereo wav."""
    cfg = AudioDecodeConfig()
    rows = []
    for name, paths in (("mp4 AAC track", clips), ("wav 16 kHz mono", wavs), ("wav 44.1 kHz stereo", wavs44)):
        sec = time_per_clip(paths, lambda p: decode_audio(p, cfg), repeats)
        rows.append({**_row("audio", name, "pyav", sec, 0), "x_realtime": round(seconds / sec, 1)})
    return rows


def _row(kind: str, task: str, backend: str, sec: float, frames: int) -> dict:
    """One table row: per-clip milliseconds, clips/s, and frames/s where frames were decoded."""
    row = {
        "kind": kind,
        "task": task,
        "backend": backend,
        "ms_per_clip": round(sec * 1000, 2),
        "clips_per_s": round(1 / sec, 1),
    }
    if frames:
        row["frames_per_s"] = round(frames / sec, 1)
    return row


def write_44k_stereo(src: Path, dst: Path) -> Path:
    """Resample a 16 kHz mono wav to 44.1 kHz and duplicate it into stereo, as 16-bit PCM."""
    with wave.open(str(src), "rb") as f:
        mono = np.frombuffer(f.readframes(f.getnframes()), dtype="<i2").astype(np.float64)
    up = np.clip(np.round(resample_poly(mono, 441, 160)), -32768, 32767).astype("<i2")
    with wave.open(str(dst), "wb") as f:
        f.setnchannels(2)
        f.setsampwidth(2)
        f.setframerate(44_100)
        f.writeframes(np.repeat(up[:, None], 2, axis=1).tobytes())
    return dst


def print_table(rows: list[dict]) -> None:
    """Print the rows as an aligned table."""
    cols = ["kind", "task", "backend", "ms_per_clip", "clips_per_s", "frames_per_s", "faces_found", "x_realtime"]
    print("  ".join(f"{c:>22}" if c == "task" else f"{c:>12}" for c in cols))
    for r in rows:
        print("  ".join(f"{r.get(c, ''):>22}" if c == "task" else f"{r.get(c, ''):>12}" for c in cols))


def main(argv: list[str] | None = None) -> None:
    """Make the clips, run every task, print the table and merge the "decode" group into --out."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=16, help="number of demo clips (default 16)")
    p.add_argument("--seconds", type=float, default=4.0, help="seconds per clip (default 4)")
    p.add_argument("--repeats", type=int, default=3, help="timed passes after the warm-up (default 3)")
    p.add_argument("--out", default="benchmarks/results/decode.json", help="JSON file to merge the figures into")
    p.add_argument(
        "--faces",
        action="store_true",
        help="only compare face-crop settings (former against default, side by side, "
        "IoU of the boxes); writes the 'faces' section",
    )
    args = p.parse_args(argv)
    torch.set_num_threads(1)  # one core per decode task (see the module docstring)
    cv2.setNumThreads(1)
    tmp = Path(tempfile.mkdtemp(prefix="bench_decode_"))
    try:
        root = make_demo_dataset(tmp / "ds", n=args.n, seconds=args.seconds, audio_source="synth")
        clips = sorted((root / "clips").glob("*.mp4"))
        wavs = sorted((root / "audio").glob("*.wav"))
        wavs44 = [write_44k_stereo(w, tmp / f"{w.stem}_44k.wav") for w in wavs]
        n_frames = decode_video(clips[0], VideoDecodeConfig(FramePolicy("first"))).num_frames
        if args.faces:
            rows = face_variant_rows(clips, args.repeats)
            return write_faces(rows, args, n_frames)
        rows = (
            video_rows(clips, n_frames, args.repeats)
            + face_rows(clips, args.repeats)
            + audio_rows(clips, wavs, wavs44, args.seconds, args.repeats)
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print_table(rows)
    group = {
        "machine": machine(),
        "threads_per_decode": 1,
        "python": platform.python_version(),
        "date": datetime.date.today().isoformat(),
        "command": f"python benchmarks/bench_decode.py --n {args.n} --seconds {args.seconds:g} "
        f"--repeats {args.repeats}",
        "clips": {
            "n": args.n,
            "seconds": args.seconds,
            "size": "224x224",
            "fps": 25,
            "frames": n_frames,
            "video": "H.264 yuv420p",
            "audio": "AAC mono 16 kHz",
        },
        "config": {
            "video": VideoDecodeConfig(FramePolicy("videomae")).to_dict(),
            "audio": AudioDecodeConfig().to_dict(),
            "face": FaceCropConfig().to_dict(),
        },
        "repeats": args.repeats,
        "rows": rows,
    }
    merge_sections(args.out, {"decode": group})
    print(f"\nwrote the 'decode' section of {args.out}")


def write_faces(rows: list[dict], args: argparse.Namespace, n_frames: int) -> None:
    """Print the face-crop comparison and merge the "faces" group into --out."""
    cols = ["frames", "variant", "ms_per_clip", "speedup", "iou_median", "iou_p05", "iou_min", "faces_found"]
    print("  ".join(f"{c:>32}" if c == "variant" else f"{c:>11}" for c in cols))
    for r in rows:
        print("  ".join(f"{r[c]!s:>32}" if c == "variant" else f"{r[c]!s:>11}" for c in cols))
    group = {
        "machine": machine(),
        "threads_per_decode": 1,
        "load_average_at_end": os.getloadavg(),
        "date": datetime.date.today().isoformat(),
        "command": f"python benchmarks/bench_decode.py --faces --n {args.n} --seconds {args.seconds:g} "
        f"--repeats {args.repeats}",
        "clips": {"n": args.n, "seconds": args.seconds, "frames": n_frames, "face_frames_per_clip": 16},
        "default": FaceCropConfig().to_dict(),
        "rows": rows,
    }
    merge_sections(args.out, {"faces": group})
    print(f"\nwrote the 'faces' section of {args.out}")


if __name__ == "__main__":
    main()
