"""FeatureStore: one Zarr v3 group holding a sample index and one feature group per spec."""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import zarr

from featstore.errors import SpecMismatchError, StorageAccessError, StoreError
from featstore.manifest.hashing import manifest_hashes
from featstore.spec import FORMAT_VERSION, FeatureSpec, canonical_json
from featstore.store.array import FeatureArray
from featstore.store.index import SampleIndex, check_sample_id, hash_row
from featstore.store.layout import (
    ARRAY_CONFIG,
    DEFAULT_CODEC,
    FORMAT_KEY,
    HASH_BYTES,
    REASON_BYTES,
    STAGE_BYTES,
    compressors_for,
    create_index_arrays,
    default_unit_size,
)
from featstore.store.remote import probe_bucket, raise_described, store_options

if TYPE_CHECKING:
    from featstore.manifest import Manifest

SPECS_GROUP = "specs"


class FeatureStore:
    """A featstore: sample ids and media hashes shared by every spec, one group per spec.

    Open with ``FeatureStore.create(url)`` or ``FeatureStore.open(url)``; ``url`` is a
    local path or an fsspec URL (``s3://bucket/store.zarr``, ``memory://x``).
    Coordinator operations (``add_samples``, ``add_spec``) change metadata; workers
    only call ``FeatureArray.write_unit``, which touches nothing but its own chunks.
    """

    def __init__(self, group: zarr.Group, url: str) -> None:
        if group.attrs.get(FORMAT_KEY) is None:
            raise StoreError(f"{url} is a Zarr group but not a featstore (no {FORMAT_KEY!r} attribute)")
        version = int(group.attrs[FORMAT_KEY])
        if version != FORMAT_VERSION:
            raise StoreError(f"{url} has featstore format {version}; this featstore reads format {FORMAT_VERSION}")
        self.url = url
        self._group = group
        self._features: dict[str, FeatureArray] = {}
        self.index = SampleIndex(group["samples/id"], group["samples/media_hash"], url)
        self._annotations: list[str] | None = None

    # ---- opening ----------------------------------------------------------
    @classmethod
    def create(
        cls, url: str | Path, storage_options: dict | None = None, attributes: dict | None = None
    ) -> FeatureStore:
        """Create an empty store; refuses to overwrite anything at ``url``.

        Raises:
            StoreError: naming ``url`` when something already exists there.
            StorageAccessError: naming ``url`` when its bucket is missing, access is
                denied or the endpoint cannot be reached.
        """
        url = str(url)
        storage_options = store_options(url, storage_options)
        try:
            group = zarr.open_group(url, mode="w-", storage_options=storage_options, zarr_format=3)
            group.attrs.update({FORMAT_KEY: FORMAT_VERSION, **(attributes or {})})
        except (FileExistsError, zarr.errors.ContainsGroupError, zarr.errors.ContainsArrayError) as e:
            raise StoreError(f"cannot create a store at {url}: something is already there ({e})") from None
        except Exception as e:  # no such bucket, access denied, endpoint unreachable
            raise_described(url, e, storage_options)
            raise
        create_index_arrays(group)
        group.require_group(SPECS_GROUP)
        return cls(group, url)

    @classmethod
    def open(cls, url: str | Path, mode: str = "r", storage_options: dict | None = None) -> FeatureStore:
        """Open an existing store (``mode`` "r" read-only or "r+" read-write).

        Raises:
            StoreError: naming ``url`` when there is no featstore there.
            StorageAccessError: naming ``url`` when its bucket is missing, access is
                denied or the endpoint cannot be reached.
        """
        if mode not in ("r", "r+"):
            raise ValueError(f"mode {mode!r} must be 'r' or 'r+' (use FeatureStore.create for a new store)")
        url = str(url)
        storage_options = store_options(url, storage_options)
        try:
            group = zarr.open_group(url, mode=mode, storage_options=storage_options, zarr_format=3)
        except (FileNotFoundError, zarr.errors.GroupNotFoundError, zarr.errors.NodeTypeValidationError) as e:
            if "://" not in url and Path(url + ".gc-new").exists():
                raise StoreError(
                    f"no featstore at {url}: a `featstore gc` was interrupted while switching in the compacted "
                    f"store ({url}.gc-new); run `featstore gc {url}` again to finish it"
                ) from None
            # Object stores answer "not found" for a missing bucket too: say which it is.
            problem = probe_bucket(url, storage_options)
            if problem:
                raise StorageAccessError(problem) from None
            raise StoreError(f"no featstore at {url}: {e}") from None
        except Exception as e:  # access denied, endpoint unreachable
            raise_described(url, e, storage_options)
            raise
        return cls(group, url)

    @classmethod
    def open_or_create(cls, url: str | Path, storage_options: dict | None = None) -> FeatureStore:
        """Open ``url`` read-write if a store is there, else create one.

        Raises:
            StorageAccessError: naming the URL when its bucket is missing, access
                is denied or the endpoint cannot be reached (nothing is created).
        """
        try:
            return cls.open(url, "r+", storage_options)
        except StorageAccessError:
            raise
        except StoreError:
            return cls.create(url, storage_options)

    # ---- sample index -----------------------------------------------------
    @property
    def sample_ids(self) -> list[str]:
        """Sample ids in row order."""
        return self.index.sample_ids

    @property
    def num_samples(self) -> int:
        return len(self.index)

    def index_of(self, sample_id: str) -> int:
        """Row of a sample id. Raises KeyError naming the id when it is not in the store."""
        return self.index.index_of(sample_id)

    def media_hash(self, sample_id: str) -> str:
        """Hex sha256 of a sample's media bytes, as recorded in the index."""
        return self.index.media_hash(sample_id)

    def hash_rows(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Raw ``[n, 32]`` uint8 media digests of rows ``[start, stop)``."""
        return self.index.hash_rows(start, stop)

    def add_samples(
        self, ids: Sequence[str], media_hashes: Sequence[str], annotations: Sequence[dict] | None = None
    ) -> dict[str, int]:
        """Append new samples; for known ids whose media changed, record the new hash
        (their features in every spec become pending). Coordinator only.

        Args:
            ids: sample ids.
            media_hashes: sha256 hex of each sample's media bytes.
            annotations: optional JSON-able dict per sample (label, transcript,
                caption, ...); replaces the stored one. Changing it never
                invalidates features: only media bytes do.

        Returns:
            ``{"added": n, "changed": n, "unchanged": n}`` (changed: media changed).

        Raises:
            ValueError: naming the id on a bad or duplicated id or a malformed hash.
        """
        if len(ids) != len(media_hashes):
            raise ValueError(f"{len(ids)} ids but {len(media_hashes)} media hashes")
        if len(set(ids)) != len(ids):
            dup = sorted({i for i in ids if list(ids).count(i) > 1})
            raise ValueError(f"duplicate sample ids: {dup}")
        new_ids, new_rows, changed = [], [], 0
        for sid, h in zip(ids, media_hashes):
            check_sample_id(sid)
            row = hash_row(h, sid)
            if sid in self.index:
                changed += self.index.set_hash(sid, row)
            else:
                new_ids.append(sid)
                new_rows.append(row)
        if new_ids:
            self.index.append(new_ids, np.stack(new_rows))
            for feat in self.features():
                feat.extend_to(self.num_samples)
        self._annotations = None
        if annotations is not None:
            self._set_annotations(ids, annotations)
        return {"added": len(new_ids), "changed": changed, "unchanged": len(ids) - len(new_ids) - changed}

    def manifest_hashes(self, manifest: Manifest) -> list[str]:
        """The media hash each manifest sample gets in this store (``add_manifest``'s
        rule, read-only; the planner uses it to predict what a run adds or edits)."""
        return manifest_hashes(manifest, self.index)

    def add_manifest(self, manifest: Manifest) -> dict[str, int]:
        """``add_samples`` for every sample of a manifest, with its annotation.

        A sample whose media cannot be used goes in with the media hash that marks
        its problem (``manifest_hashes``), so it is pending until a run records its
        failure (stage ``manifest``), and pending again once its media is in place.
        A sample already in the store with a content hash keeps that hash when its
        media goes missing: the features computed from those bytes stay (its
        annotation carries the error, so a spec that still needs it records the
        failure, and the extraction job retries that failure once the annotation
        has no error).
        """
        return self.add_samples(
            [s.sample_id for s in manifest.samples],
            self.manifest_hashes(manifest),
            [s.annotation() for s in manifest.samples],
        )

    def _load_annotations(self) -> list[str]:
        if self._annotations is None:
            offsets = self._group["samples/annotation_offsets"][:]
            blob = self._group["samples/annotation_bytes"][:].tobytes()
            if int(offsets[-1]) != len(blob):
                # A coordinator died between writing the blob and its offsets: the
                # annotations are unreadable until the next add_samples rewrites them.
                warnings.warn(f"{self.url}: annotations were interrupted mid-write; re-add them", stacklevel=2)
                offsets = np.zeros(1, np.int64)
            self._annotations = [blob[a:b].decode("utf-8") for a, b in zip(offsets[:-1], offsets[1:])]
            self._annotations += ["{}"] * (self.num_samples - len(self._annotations))
        return self._annotations

    def annotation(self, sample_id: str) -> dict[str, Any]:
        """A sample's annotation dict (``{}`` if none was given)."""
        return json.loads(self._load_annotations()[self.index_of(sample_id)])

    def annotations(self) -> list[dict[str, Any]]:
        """Every sample's annotation dict, in index order."""
        return [json.loads(a) for a in self._load_annotations()]

    def _set_annotations(self, ids: Sequence[str], annotations: Sequence[dict]) -> None:
        if len(annotations) != len(ids):
            raise ValueError(f"{len(ids)} ids but {len(annotations)} annotations")
        texts = list(self._load_annotations())
        for sid, ann in zip(ids, annotations):
            try:
                texts[self.index_of(sid)] = canonical_json(ann)
            except (TypeError, ValueError) as e:
                raise ValueError(f"sample {sid!r}: annotation is not JSON data: {e}") from None
        if texts == self._annotations:
            return
        raw = [t.encode("utf-8") for t in texts]
        offsets = np.concatenate([[0], np.cumsum([len(r) for r in raw])]).astype(np.int64)
        offs_arr, blob_arr = self._group["samples/annotation_offsets"], self._group["samples/annotation_bytes"]
        blob_arr.resize((int(offsets[-1]),))
        blob_arr[:] = np.frombuffer(b"".join(raw), dtype=np.uint8)
        offs_arr.resize((len(offsets),))
        offs_arr[:] = offsets  # last, so an interrupted rewrite shows as a length mismatch
        self._annotations = texts

    # ---- specs ------------------------------------------------------------
    def add_spec(
        self,
        spec: FeatureSpec,
        unit_size: int | None = None,
        codec: str = DEFAULT_CODEC,
        chunk_size: int | None = None,
    ) -> FeatureArray:
        """Add a feature group for ``spec`` (or return the existing one). Coordinator only.

        Args:
            spec: the feature spec; its group is ``specs/<name>-<id>``.
            unit_size: samples per work unit, a power of two; default from the
                feature size (``layout.default_unit_size``).
            codec: compression, a name from ``layout.CODECS``.
            chunk_size: samples per data chunk, a power of two <= unit_size (so a
                unit spans whole chunks); default the smaller of unit_size and the
                feature's own best chunk (``layout.default_unit_size``: 4 for the
                2.9 MB EVA tokens, the whole unit for pooled features).

        Raises:
            ValueError: naming the value when unit_size or chunk_size is not a power
                of two, or chunk_size is larger than unit_size.
            SpecMismatchError: when the spec exists with another unit or chunk size.
        """
        unit = default_unit_size(spec.shape, spec.dtype) if unit_size is None else int(unit_size)
        if unit < 1 or unit & (unit - 1):
            raise ValueError(f"unit_size {unit_size!r} must be a positive power of two")
        chunk = min(unit, default_unit_size(spec.shape, spec.dtype)) if chunk_size is None else int(chunk_size)
        if chunk < 1 or chunk & (chunk - 1) or chunk > unit:
            raise ValueError(f"chunk_size {chunk_size!r} must be a power of two no larger than unit_size {unit}")
        specs = self._group[SPECS_GROUP]
        if spec.key in (self._group.attrs.get("gc_removing") or ()):
            raise StoreError(f"spec {spec.key} is being removed by an interrupted gc; run `featstore gc` again first")
        if spec.key in specs:
            feat = self._feature_by_key(spec.key)
            if unit_size is not None and feat.unit_size != unit:
                raise SpecMismatchError(f"spec {spec.key} exists with unit_size {feat.unit_size}, not {unit}")
            if chunk_size is not None and feat.chunk_size != chunk:
                raise SpecMismatchError(f"spec {spec.key} exists with chunk_size {feat.chunk_size}, not {chunk}")
            return feat
        g = specs.create_group(
            spec.key,
            attributes={
                "spec": spec.to_dict(),
                "spec_id": spec.id,
                "unit_size": unit,
                "chunk_size": chunk,
                "codec": codec,
            },
        )
        self._create_arrays(g, spec, unit, codec, chunk)
        return self._feature_by_key(spec.key)

    def _create_arrays(self, g: zarr.Group, spec: FeatureSpec, unit: int, codec: str, chunk: int) -> None:
        n = self.num_samples
        small = compressors_for("zstd3", "uint8")
        layout = {
            "data": ((n, *spec.shape), spec.dtype, compressors_for(codec, spec.dtype)),
            "media_hash": ((n, HASH_BYTES), "uint8", small),
            "fail_stage": ((n, STAGE_BYTES), "uint8", small),
            "fail_reason": ((n, REASON_BYTES), "uint8", small),
            "status": ((n,), "int8", small),
        }
        for name, (shape, dtype, comp) in layout.items():
            g.create_array(
                name,
                shape=shape,
                chunks=(chunk if name == "data" else unit, *shape[1:]),
                dtype=dtype,
                fill_value=0,
                compressors=comp,
                config=ARRAY_CONFIG,
            )

    def _feature_by_key(self, key: str) -> FeatureArray:
        # One FeatureArray per spec per handle, so that appends resize the arrays
        # every caller of this handle holds.
        if key not in self._features:
            self._features[key] = FeatureArray(self.index, self._group[SPECS_GROUP][key])
        return self._features[key]

    def features(self) -> list[FeatureArray]:
        """Every spec's feature array, sorted by group key (groups an interrupted gc
        was removing are left out: they may be half deleted)."""
        removing = set(self._group.attrs.get("gc_removing") or ())
        keys = sorted(k for k in self._group[SPECS_GROUP].group_keys() if k not in removing)
        return [self._feature_by_key(k) for k in keys]

    def feature(self, name_or_id: str) -> FeatureArray:
        """A spec's features by name, id or ``name-id`` key.

        Raises:
            KeyError: naming the query and the specs present when none or several match.
        """
        hits = [f for f in self.features() if name_or_id in (f.spec.name, f.spec.id, f.spec.key)]
        if len(hits) != 1:
            have = [f.spec.key for f in self.features()]
            what = "no spec" if not hits else "several specs"
            raise KeyError(f"{what} named {name_or_id!r} in store {self.url}; specs: {have}")
        return hits[0]

    @property
    def attrs(self) -> dict[str, Any]:
        """Store-level attributes (format version, saved job configs)."""
        return dict(self._group.attrs)

    def set_attr(self, key: str, value: Any) -> None:
        """Record store-level metadata such as a job's resolved config. Coordinator only."""
        if key == FORMAT_KEY:
            raise ValueError(f"{FORMAT_KEY!r} is reserved")
        self._group.attrs[key] = value

    # ---- housekeeping -----------------------------------------------------
    def local_root(self) -> Path | None:
        """The store's folder when it is on the local filesystem, else None."""
        if "://" in self.url and not self.url.startswith("file://"):
            return None
        return Path(self.url.removeprefix("file://"))

    def partial_files(self) -> list[Path]:
        """Temp files left by writers killed mid-write (local stores only)."""
        root = self.local_root()
        return [] if root is None else sorted(root.rglob("*.partial"))

    def cleanup_partials(self) -> list[str]:
        """Remove ``partial_files()``. Only safe while no writer is running:
        a job calls it before it starts workers. Returns the removed paths."""
        removed = []
        for p in self.partial_files():
            p.unlink(missing_ok=True)
            removed.append(str(p))
        return removed


def store_files(root: str | Path) -> Iterable[Path]:
    """Every file of a local store, sorted, for comparisons and size reports."""
    return sorted(p for p in Path(root).rglob("*") if p.is_file())
