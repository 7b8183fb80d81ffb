"""Import and export the original Emotion-LLaMA feature folders: one ``.npy`` per clip.

The original training code (``minigpt4/datasets/datasets/first_face.py``,
``FeatureFaceDataset.get``) reads, beside its annotation file,
``mae_340_UTT/<video_name>.npy`` (MAE face features, our ``local``),
``maeV_399_UTT/<video_name>.npy`` (VideoMAE, ``temporal``) and
``HL-UTT/<video_name>.npy`` (HuBERT, ``audio``), each a 1024-d vector, ``[1024]``
or ``[1, 1024]`` (it adds the leading axis when missing).

``import_npy`` reads such a folder into an *imported* spec: files are read with
``np.load(allow_pickle=False)`` (never unpickled), must be float16 or float32,
``[D]`` or ``[1, D]``, finite. The spec records that the encoder and the
preprocessing are unknown, the folder name, the files' shape and a digest of
every file's sha256 (so another folder gives another spec id); the per-file
hashes are kept in the spec group's ``import`` attribute. A sample without a
file, or with a file that does not pass, gets a failure record saying why.

``export_npy`` writes the same layout from a store's committed samples, with the
stored dtype and the shape the files had on import, so an import followed by an
export gives back the same arrays (and the same bytes for files ``np.save`` wrote).
"""

from __future__ import annotations

import hashlib
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from featstore.errors import StoreError
from featstore.paths import resolve
from featstore.spec import DTYPES, FeatureSpec
from featstore.store import FeatureStore
from featstore.store.layout import FAILED, OK

__all__ = ["ORIGINAL_FOLDERS", "ExportReport", "ImportReport", "export_npy", "import_npy", "parse_folder_args"]

# The original folder of each slot (first_face.py); global has none (the original
# code computes it from the frame at training time).
ORIGINAL_FOLDERS = {"local": "mae_340_UTT", "temporal": "maeV_399_UTT", "audio": "HL-UTT"}
IMPORT_STAGE = "import"
EXPORT_SHAPES = ("flat", "row", "as-imported")


def parse_folder_args(items: Sequence[str]) -> dict[str, str]:
    """``["mae_340_UTT=local", ...]`` -> ``{"mae_340_UTT": "local"}``.

    Raises:
        ValueError: naming an item that is not FOLDER=NAME, or a folder given twice.
    """
    out: dict[str, str] = {}
    for item in items:
        folder, sep, name = item.partition("=")
        if not sep or not folder or not name:
            raise ValueError(f"--folder {item!r} must be FOLDER=SPEC_NAME, e.g. mae_340_UTT=local")
        if folder in out:
            raise ValueError(f"--folder {folder!r} given twice")
        out[folder] = name
    return out


@dataclass
class ImportReport:
    """What ``import_npy`` did for one folder."""

    folder: str
    spec: FeatureSpec
    imported: int
    failures: list[dict[str, str]] = field(default_factory=list)  # sample_id, reason
    units_written: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "folder": self.folder,
            "spec": self.spec.key,
            "imported": self.imported,
            "failed": len(self.failures),
            "failures": self.failures,
            "units_written": self.units_written,
        }


def _read_one(path: Path) -> np.ndarray:
    """One feature file, checked: ``[D]`` or ``[1, D]``, float16/float32, finite.

    Raises:
        ValueError: saying what is wrong with it (object arrays are refused, never unpickled).
    """
    try:
        arr = np.load(path, allow_pickle=False)
    except ValueError as e:  # an object (pickled) array, or a malformed header
        raise ValueError(f"not a plain .npy array ({e})") from None
    except (OSError, EOFError) as e:
        raise ValueError(f"unreadable ({type(e).__name__}: {e})") from None
    if not isinstance(arr, np.ndarray):
        raise ValueError(f"holds a {type(arr).__name__}, not one array")
    if arr.dtype.name not in DTYPES:
        raise ValueError(f"dtype {arr.dtype} is not one of {DTYPES}")
    if not (arr.ndim == 1 or (arr.ndim == 2 and arr.shape[0] == 1)) or arr.shape[-1] < 1:
        raise ValueError(f"shape {list(arr.shape)} is not [D] or [1, D]")
    if not np.isfinite(arr.astype(np.float32)).all():
        raise ValueError("has non-finite values")
    return arr


def _scan(folder: Path, ids: Sequence[str]) -> tuple[dict[str, np.ndarray], dict[str, str], dict[str, str]]:
    """Read every sample's file: (arrays, file sha256, failure reasons), by sample id."""
    arrays, hashes, fails = {}, {}, {}
    for sid in ids:
        if "/" in sid or "\\" in sid or sid in (".", ".."):
            fails[sid] = f"sample id {sid!r} cannot be a file name"
            continue
        path = folder / f"{sid}.npy"
        if not path.is_file():
            fails[sid] = f"missing file {folder.name}/{sid}.npy"
            continue
        raw = path.read_bytes()
        try:
            arrays[sid] = _read_one(path)
        except ValueError as e:
            fails[sid] = f"malformed file {folder.name}/{sid}.npy: {e}"
            continue
        hashes[sid] = hashlib.sha256(raw).hexdigest()
    return arrays, hashes, fails


def import_npy(
    store: FeatureStore, root: str | os.PathLike, folders: Mapping[str, str], unit_size: int | None = None
) -> list[ImportReport]:
    """Import original feature folders (relative to the dataset ``root``) into imported specs.

    Every sample of the store gets a row in each imported spec: the file's
    vector, or a failure record (stage ``import``) saying the file is missing or
    why it is malformed. Files of another dimension, dtype or shape than most of
    the folder's files are malformed. Re-running it with the same files is a
    no-op (same spec id, committed units are not rewritten).

    Args:
        store: an open read-write store, with the dataset's samples already added.
        root: the dataset root; each folder must lie inside it.
        folders: folder (relative to root) -> spec name (``local``, ``temporal``, ``audio``).
        unit_size: samples per unit of the new specs (default: from the shape).

    Returns:
        One ImportReport per folder.

    Raises:
        StoreError: naming the folder when it has no usable file at all.
        UnsafePathError: a folder outside the dataset root.
        ValueError: a bad spec name.
    """
    reports = []
    ids = store.sample_ids
    for rel, name in folders.items():
        folder = resolve(root, rel)
        if not folder.is_dir():
            raise StoreError(f"import: folder {rel!r} does not exist under {root}")
        arrays, hashes, fails = _scan(folder, ids)
        if not arrays:
            raise StoreError(f"import: folder {rel!r} has no usable .npy file for the store's {len(ids)} samples")
        dim, dtype, shape = (Counter(f(a) for a in arrays.values()).most_common(1)[0][0] for f in _KEYS)
        for sid, a in list(arrays.items()):
            if (a.shape[-1], a.dtype.name, a.shape) != (dim, dtype, shape):
                fails[sid] = (
                    f"malformed file {folder.name}/{sid}.npy: {a.dtype} {list(a.shape)}, "
                    f"the folder's files are {dtype} {list(shape)}"
                )
                del arrays[sid], hashes[sid]
        digest = hashlib.sha256("".join(f"{s}\t{hashes[s]}\n" for s in sorted(hashes)).encode("utf-8")).hexdigest()
        spec = FeatureSpec(
            name=name,
            encoder="unknown (imported .npy folder)",
            weights="unknown",
            shape=(dim,),
            dtype=dtype,
            preprocess={
                "imported": True,
                "encoder": "unknown",
                "preprocessing": "unknown",
                "folder": Path(rel).name,
                "file_shape": list(shape),
                "files": len(hashes),
                "files_sha256": digest,
            },
            pooling="unknown",
            source=f"npy folder {rel}",
        )
        feat = store.add_spec(spec, unit_size=unit_size)
        feat.set_attr("import", {"folder": rel, "file_shape": list(shape), "files": hashes})
        written = 0
        for unit in feat.pending_units(retry_failed=True):
            a, b = feat.unit_bounds(unit)
            unit_ids = ids[a:b]
            data = np.zeros((b - a, dim), dtype=dtype)
            for i, sid in enumerate(unit_ids):
                if sid in arrays:
                    data[i] = arrays[sid].reshape(-1)
            failures = {sid: (IMPORT_STAGE, fails[sid]) for sid in unit_ids if sid in fails}
            written += feat.write_unit(unit, data, failures=failures, retry_failed=True)
        reports.append(
            ImportReport(
                rel, spec, len(arrays), [{"sample_id": s, "reason": r} for s, r in sorted(fails.items())], written
            )
        )
    return reports


_KEYS = (lambda a: a.shape[-1], lambda a: a.dtype.name, lambda a: a.shape)


@dataclass
class ExportReport:
    """What ``export_npy`` wrote: per folder, the spec and the number of files; samples left out."""

    out: str
    folders: dict[str, dict[str, Any]]
    left_out: list[dict[str, str]]


def _default_specs(store: FeatureStore) -> list[str]:
    names = {f.spec.name for f in store.features()}
    chosen = [n for n in ORIGINAL_FOLDERS if n in names]
    if not chosen:
        raise StoreError(f"store {store.url} has no spec named {sorted(ORIGINAL_FOLDERS)}; name them with --spec")
    return chosen


def export_npy(
    store: FeatureStore, out: str | os.PathLike, specs: Sequence[str] | None = None, shape: str = "as-imported"
) -> ExportReport:
    """Write the original layout: ``OUT/<folder>/<sample_id>.npy`` for committed samples.

    Args:
        store: the store.
        out: output folder (created); existing files of the same name are replaced.
        specs: ``SPEC`` or ``SPEC=FOLDER`` items; SPEC a name, id or key. The folder
            defaults to the original one of the spec's name (local -> mae_340_UTT,
            temporal -> maeV_399_UTT, audio -> HL-UTT). Default: the store's
            local, temporal and audio specs.
        shape: ``flat`` writes ``[D]``, ``row`` writes ``[1, D]``, ``as-imported``
            the shape the files had when imported (else ``[D]``).

    Raises:
        KeyError: naming a spec the store lacks or has several of (name it by id).
        ValueError: naming a spec whose features are not vectors, or an unknown shape.
    """
    if shape not in EXPORT_SHAPES:
        raise ValueError(f"shape {shape!r} is not one of {EXPORT_SHAPES}")
    out = Path(out)
    folders: dict[str, dict[str, Any]] = {}
    left: list[dict[str, str]] = []
    for item in specs or _default_specs(store):
        query, _, folder = item.partition("=")
        feat = store.feature(query)
        if len(feat.spec.shape) != 1:
            raise ValueError(
                f"spec {feat.spec.key} has shape {list(feat.spec.shape)}; the original folders hold vectors [D]"
            )
        folder = folder or ORIGINAL_FOLDERS.get(feat.spec.name)
        if not folder:
            raise ValueError(f"spec {feat.spec.key}: no original folder for {feat.spec.name!r}; give SPEC=FOLDER")
        if folder in folders:
            raise ValueError(f"two specs export to folder {folder!r}")
        imported = feat.spec.preprocess.get("file_shape")
        row = shape == "row" or (shape == "as-imported" and isinstance(imported, list) and len(imported) == 2)
        dest = out / folder
        dest.mkdir(parents=True, exist_ok=True)
        status = feat.status()
        n = 0
        for sid, vec in feat.iter_committed():
            if "/" in sid or "\\" in sid or sid in (".", ".."):
                left.append({"sample_id": sid, "spec": feat.spec.key, "reason": "id cannot be a file name"})
                continue
            tmp = dest / f".{sid}.npy.partial"
            with open(tmp, "wb") as f:
                np.save(f, vec.reshape(1, -1) if row else vec, allow_pickle=False)
            os.replace(tmp, dest / f"{sid}.npy")
            n += 1
        for i in np.flatnonzero(status != OK):
            left.append(
                {
                    "sample_id": store.sample_ids[i],
                    "spec": feat.spec.key,
                    "reason": "failed" if status[i] == FAILED else "not computed",
                }
            )
        dim = feat.spec.shape[0]
        folders[folder] = {"spec": feat.spec.key, "files": n, "shape": [1, dim] if row else [dim]}
    return ExportReport(str(out), folders, left)
