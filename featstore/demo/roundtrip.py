"""Demo round trip without GPUs or encoders: demo clips -> manifest -> store -> verify -> info.

Run: ``python -m featstore.demo.roundtrip [OUT_DIR] [--n N]``. It writes the demo dataset
to ``OUT_DIR/data``, loads its manifest, and caches one cheap but real feature per
clip (an 8x8 grey thumbnail of the middle frame, decoded with PyAV) in
``OUT_DIR/store.zarr``, one work unit at a time. Run it again and it finds every
unit committed and does nothing. The extraction job (jobs/extract.py) replaces
this with the four frozen encoders on Ray.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import av
import numpy as np

from featstore.cli import main as cli_main
from featstore.demo.dataset import make_demo_dataset
from featstore.manifest import Manifest, load_manifest
from featstore.media.clip import MANIFEST_STAGE
from featstore.spec import FeatureSpec
from featstore.store import FeatureStore
from featstore.store.verify import verify_store

THUMB = 8  # thumbnail side: 64 numbers, enough to tell clips apart
THUMB_SPEC = FeatureSpec(
    name="thumb",
    encoder="grey_thumbnail",
    weights="none",  # no learned weights: the feature is a fixed function of the pixels
    shape=(THUMB * THUMB,),
    dtype="float32",
    preprocess={"frame": "middle", "decoder": f"pyav-{av.__version__}", "size": THUMB, "colour": "bt601-luma"},
    pooling="area-mean",
)


def thumbnail(path: Path) -> np.ndarray:
    """8x8 mean-luma thumbnail of a clip's middle frame, in [0, 1]."""
    with av.open(str(path)) as container:
        frames = [f.to_ndarray(format="gray") for f in container.decode(video=0)]
    if not frames:
        raise ValueError(f"{path}: no video frames")
    img = frames[len(frames) // 2].astype(np.float32) / 255.0
    h, w = (img.shape[0] // THUMB) * THUMB, (img.shape[1] // THUMB) * THUMB
    return img[:h, :w].reshape(THUMB, h // THUMB, THUMB, w // THUMB).mean(axis=(1, 3)).ravel()


def fill(store: FeatureStore, manifest: Manifest) -> int:
    """Compute and commit every pending unit of the thumbnail spec; returns units written."""
    feat = store.add_spec(THUMB_SPEC)
    written = 0
    for unit in feat.pending_units():
        start, stop = feat.unit_bounds(unit)
        rows, failures = np.zeros((stop - start, *THUMB_SPEC.shape), np.float32), {}
        for i, sid in enumerate(feat.ids(start, stop)):
            sample = manifest.get(sid)
            if sample.error is not None:  # missing, unsafe or unreadable media: never opened
                failures[sid] = (MANIFEST_STAGE, sample.error)
                continue
            try:
                rows[i] = thumbnail(manifest.root / sample.video)
            except (av.error.FFmpegError, ValueError, OSError) as e:
                failures[sid] = ("decode_video", f"{type(e).__name__}: {e}")
        written += feat.write_unit(unit, rows, failures=failures)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", nargs="?", default="demo_out", help="output folder (default: demo_out)")
    p.add_argument("--n", type=int, default=8, help="number of demo clips (default: 8)")
    args = p.parse_args(argv)
    out = Path(args.out)
    t0 = time.perf_counter()
    data = out / "data"
    if not (data / "manifest.csv").exists():
        make_demo_dataset(data, n=args.n, progress=print)
    manifest = load_manifest(data, format="merr")
    store = FeatureStore.open_or_create(out / "store.zarr")
    added = store.add_manifest(manifest)
    print(f"manifest: {len(manifest)} samples ({len(manifest.problems)} with problems); store: {added}")
    units = fill(store, manifest)
    report = verify_store(store)
    print(f"wrote {units} unit(s) in {time.perf_counter() - t0:.1f}s; verify: {'ok' if report.ok else report.problems}")
    cli_main(["info", str(out / "store.zarr")])
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
