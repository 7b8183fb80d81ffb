"""One spec's features inside a store: chunk-owned work units, commit flags, failures."""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import numpy as np
import zarr

from featstore.errors import CorruptChunkError, StoreError
from featstore.faults import maybe_fault
from featstore.spec import FeatureSpec
from featstore.store.chunks import chunk_decodes, chunk_exists, drop_chunk, read_whole_local
from featstore.store.index import SampleIndex
from featstore.store.layout import (
    ARRAY_CONFIG,
    FAILED,
    HASH_BYTES,
    OK,
    PENDING,
    REASON_BYTES,
    STAGE_BYTES,
    decode_text,
    encode_text,
)

# Arrays of a spec group, in the order a unit writes them: the commit (status) last.
UNIT_ARRAYS = ("data", "media_hash", "fail_stage", "fail_reason", "status")


class FeatureArray:
    """Features of one spec, written in whole work units (one Zarr chunk per array
    each, or ``unit_size / chunk_size`` whole chunks of the data array).

    A writer owns a unit: it writes the unit's data, input hashes and failure
    records, then the unit's commit flags. Nothing else ever writes those chunks,
    so concurrent writers and retries can neither lose nor duplicate a sample.
    """

    def __init__(self, index: SampleIndex, group: zarr.Group) -> None:
        self._index = index
        self._group = group
        attrs = dict(group.attrs)
        self.spec = FeatureSpec.from_dict(attrs["spec"])
        self.unit_size = int(attrs["unit_size"])
        # Data chunk (samples); a power of two dividing the unit. Stores made before
        # chunk_size existed have one data chunk a unit.
        self.chunk_size = int(attrs.get("chunk_size", self.unit_size))
        self.codec = str(attrs["codec"])
        self._arrays = {k: group[k].with_config(ARRAY_CONFIG) for k in UNIT_ARRAYS}

    # ---- geometry -------------------------------------------------------
    @property
    def num_samples(self) -> int:
        return self._arrays["status"].shape[0]

    @property
    def num_units(self) -> int:
        return -(-self.num_samples // self.unit_size)

    def unit_bounds(self, unit: int) -> tuple[int, int]:
        """Sample index range ``[start, stop)`` of a unit.

        Raises:
            IndexError: naming the unit when it is out of range.
        """
        if not 0 <= unit < self.num_units:
            raise IndexError(f"unit {unit} out of range: spec {self.spec.name!r} has {self.num_units} units")
        start = unit * self.unit_size
        return start, min(start + self.unit_size, self.num_samples)

    def ids(self, start: int = 0, stop: int | None = None) -> list[str]:
        """Sample ids of rows ``[start, stop)``."""
        return self._index.sample_ids[start:stop]

    def extend_to(self, num_samples: int) -> None:
        """Grow every array to ``num_samples`` rows (new rows pending). Coordinator
        only: ``FeatureStore.add_samples`` calls it after appending to the index."""
        for arr in self._arrays.values():
            arr.resize((num_samples, *arr.shape[1:]))

    @property
    def attrs(self) -> dict:
        """The spec group's attributes (spec, unit size, codec, and e.g. ``import`` provenance)."""
        return dict(self._group.attrs)

    def set_attr(self, key: str, value: object) -> None:
        """Record metadata on the spec group (coordinator only); the layout keys are reserved."""
        if key in ("spec", "spec_id", "unit_size", "codec"):
            raise ValueError(f"spec group attribute {key!r} is reserved")
        self._group.attrs[key] = value

    # ---- state ------------------------------------------------------------
    def status(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Effective status of rows ``[start, stop)``: a committed sample whose input
        media changed since it was computed counts as pending.

        Raises:
            StoreError: when samples were appended through another store handle.
        """
        self._check_rows()
        status = self._read("status", start, stop).astype(np.int8)
        stale = np.any(self._read("media_hash", start, stop) != self._index.hash_rows(start, stop), axis=1)
        status[stale & (status != PENDING)] = PENDING
        return status

    def raw_status(self) -> np.ndarray:
        """Commit flags of every row as written (PENDING/OK/FAILED), stale or not."""
        self._check_rows()
        return self._read("status").astype(np.int8)

    def stale_rows(self) -> np.ndarray:
        """Bool per row: the hash the feature was computed from differs from the index's."""
        self._check_rows()
        return np.any(self._read("media_hash") != self._index.hash_rows(), axis=1)

    def _check_rows(self) -> None:
        if self._arrays["status"].shape[0] != len(self._index):
            raise StoreError(
                f"spec {self.spec.name!r} has {self._arrays['status'].shape[0]} rows but the index has "
                f"{len(self._index)}: samples were added through another handle; reopen the store"
            )

    def counts(self) -> dict[str, int]:
        """Samples committed, failed and pending."""
        s = self.status()
        return {
            "committed": int((s == OK).sum()),
            "failed": int((s == FAILED).sum()),
            "pending": int((s == PENDING).sum()),
        }

    def pending_units(self, retry_failed: bool = False) -> list[int]:
        """Units with any pending sample (or failed one, when ``retry_failed``)."""
        s = self.status()
        todo = (s == PENDING) | ((s == FAILED) if retry_failed else False)
        return sorted({int(i) // self.unit_size for i in np.flatnonzero(todo)})

    def nbytes_stored(self) -> int:
        """Bytes on storage for this spec's data array."""
        return int(self._arrays["data"].nbytes_stored())

    # ---- writes ---------------------------------------------------------
    def write_unit(
        self,
        unit: int,
        data: np.ndarray,
        failures: Mapping[str, tuple[str, str]] | None = None,
        media_hashes: np.ndarray | None = None,
        retry_failed: bool = False,
    ) -> bool:
        """Write one work unit, commit flags last. A rewrite of a committed unit is a no-op.

        A unit that holds committed or failed samples and needs writing again (a
        changed media hash, or ``retry_failed``) first has its commit withdrawn,
        so at every point of the rewrite each sample reads as pending, as failed
        with its reason, or as committed with the bytes of its current media hash.

        Args:
            unit: unit number.
            data: ``[n, *spec.shape]`` features for the unit's n samples; rows of
                failed samples are ignored and stored as zeros.
            failures: ``{sample_id: (stage, reason)}`` for samples that could not be made.
            media_hashes: ``[n, 32]`` uint8 digests of the inputs the features were
                computed from; defaults to the store's current index.
            retry_failed: rewrite a unit whose only non-ok samples are failures.

        Returns:
            True if the unit was written, False if it was already committed.

        Raises:
            ValueError: naming the unit when data has the wrong shape, is not
                finite, or failures name samples outside the unit.
        """
        start, stop = self.unit_bounds(unit)
        hashes = self._index.hash_rows(start, stop) if media_hashes is None else np.asarray(media_hashes, np.uint8)
        status = self._read("status", start, stop)
        if not self._needs_write(start, stop, status, hashes, retry_failed):
            return False
        ids = self._index.sample_ids[start:stop]
        rows = self._unit_rows(unit, ids, data, failures or {}, hashes)
        if np.any(status != PENDING):
            # A rewrite (edited clip, retried failure): withdraw the old commit
            # before touching anything else, so that no reader ever pairs an old
            # "ok" or "failed" flag with new hashes, zeroed data or a blank reason.
            self._write_pending(start, stop)
            maybe_fault("write_unit.after_withdraw", unit)
        for name in UNIT_ARRAYS:  # status is last: the commit
            self._arrays[name][start:stop] = rows[name]
            maybe_fault(f"write_unit.after_{name}", unit)
        return True

    def withdraw_unit(self, unit: int) -> list[str]:
        """Withdraw a unit's commit so that all its samples read as pending and the
        next extraction run recomputes the unit (``featstore verify --repair``).

        The commit flags go first, written as pending exactly as a rewrite
        withdraws them; then each other chunk of the unit that does not read back
        is dropped (it reads as zeros), so that whole-array reads such as
        ``status`` and ``failures`` work again. Data is never rewritten here: the
        next run writes the unit whole, commit last. Like ``write_unit`` this
        touches only the unit's own chunks; run it while no job writes the spec.

        Returns:
            Names of the arrays whose unreadable chunk was dropped.
        """
        start, stop = self.unit_bounds(unit)
        self._write_pending(start, stop)
        maybe_fault("withdraw_unit.after_status", unit)
        dropped = []
        for name in UNIT_ARRAYS[:-1]:
            arr = self._arrays[name]
            if chunk_exists(arr, unit, self.unit_size) and not chunk_decodes(arr, unit, self.unit_size):
                drop_chunk(arr, unit, self.unit_size)
                dropped.append(name)
                maybe_fault("withdraw_unit.after_drop", unit)
        return dropped

    def _write_pending(self, start: int, stop: int) -> None:
        # A whole-chunk write: zarr does not read the old chunk, so this works
        # over a status chunk that no longer decodes.
        self._arrays["status"][start:stop] = np.zeros(stop - start, np.int8)

    def _read(self, name: str, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Rows ``[start, stop)`` of array ``name``.

        Raises:
            CorruptChunkError: naming the store, spec, unit, array and the repair
                command when a chunk in the range does not read back.
        """
        if start == 0 and stop is None:
            whole = read_whole_local(self._arrays[name])  # fast path; None: let zarr read (and name errors)
            if whole is not None:
                return whole
        try:
            return self._arrays[name][start:stop]
        except Exception as e:  # a corrupt chunk raises whatever its codec raises
            stop = self.num_samples if stop is None else stop
            for unit in range(start // self.unit_size, -(-stop // self.unit_size)):
                if not chunk_decodes(self._arrays[name], unit, self.unit_size):
                    raise CorruptChunkError(self._index.url, self.spec.key, unit, name, e) from e
            raise

    def _needs_write(self, start: int, stop: int, status: np.ndarray, hashes: np.ndarray, retry_failed: bool) -> bool:
        if np.any(status == PENDING) or (retry_failed and np.any(status == FAILED)):
            return True
        return bool(np.any(self._read("media_hash", start, stop) != hashes))

    def _unit_rows(self, unit, ids, data, failures, hashes) -> dict[str, np.ndarray]:
        n = len(ids)
        spec = self.spec
        data = np.asarray(data)
        if data.shape != (n, *spec.shape):
            raise ValueError(f"spec {spec.name!r} unit {unit}: data shape {data.shape} != expected {(n, *spec.shape)}")
        if hashes.shape != (n, HASH_BYTES):
            raise ValueError(f"spec {spec.name!r} unit {unit}: media_hashes shape {hashes.shape} != {(n, HASH_BYTES)}")
        unknown = sorted(set(failures) - set(ids))
        if unknown:
            raise ValueError(f"spec {spec.name!r} unit {unit}: failures name samples outside the unit: {unknown}")
        failed = np.array([i in failures for i in ids], dtype=bool)
        out = data.astype(spec.dtype, copy=True)
        out[failed] = 0
        bad = ~np.isfinite(out.reshape(n, -1).astype(np.float32)).all(axis=1) & ~failed
        if bad.any():
            names = [ids[i] for i in np.flatnonzero(bad)]
            raise ValueError(f"spec {spec.name!r} unit {unit}: non-finite features for samples {names}")
        stage = np.zeros((n, STAGE_BYTES), np.uint8)
        reason = np.zeros((n, REASON_BYTES), np.uint8)
        for i, sid in enumerate(ids):
            if sid in failures:
                stage[i] = encode_text(str(failures[sid][0]), STAGE_BYTES)
                reason[i] = encode_text(str(failures[sid][1]), REASON_BYTES)
        status = np.where(failed, FAILED, OK).astype(np.int8)
        return {"data": out, "media_hash": hashes, "fail_stage": stage, "fail_reason": reason, "status": status}

    # ---- reads ------------------------------------------------------------
    def read(self, index: int) -> np.ndarray:
        """Feature of the sample at ``index``.

        Raises:
            KeyError: naming the sample when it is not committed (pending, failed or stale).
        """
        n = self.num_samples
        if not -n <= index < n:
            raise IndexError(f"sample index {index} out of range for {n} samples")
        index %= n
        st = self._read("status", index, index + 1)[0]
        fresh = np.array_equal(
            self._read("media_hash", index, index + 1)[0], self._index.hash_rows(index, index + 1)[0]
        )
        if st != OK or not fresh:
            what = "stale" if st == OK else {PENDING: "pending", FAILED: "failed"}[int(st)]
            raise KeyError(f"sample {self._index.sample_ids[index]!r} is {what} for spec {self.spec.name!r}")
        return self._read("data", index, index + 1)[0]

    def read_id(self, sample_id: str) -> np.ndarray:
        """Feature of a sample by id (see ``read``)."""
        return self.read(self._index.index_of(sample_id))

    def data_rows(self, start: int, stop: int | None = None) -> np.ndarray:
        """Stored data of rows ``[start, stop)`` whatever their status (callers check it).

        Raises:
            CorruptChunkError: naming the unit and the repair command when a chunk is unreadable.
        """
        return self._read("data", start, stop)

    def read_unit(self, unit: int) -> tuple[np.ndarray, np.ndarray]:
        """``(data, status)`` of a whole unit: whole chunks only."""
        start, stop = self.unit_bounds(unit)
        return self._read("data", start, stop), self.status(start, stop)

    def iter_committed(self) -> Iterator[tuple[str, np.ndarray]]:
        """Yield ``(sample_id, feature)`` for every committed sample, in index order, a unit at a time."""
        status = self.status()
        ids = self._index.sample_ids
        for unit in range(self.num_units):
            start, stop = self.unit_bounds(unit)
            ok = np.flatnonzero(status[start:stop] == OK)
            if ok.size == 0:
                continue
            block = self._read("data", start, stop)
            for i in ok:
                yield ids[start + i], block[i]

    def failures(self) -> list[dict]:
        """Failure records ``{sample_id, index, stage, reason}`` of failed samples."""
        status = self.status()
        idx = np.flatnonzero(status == FAILED)
        if idx.size == 0:
            return []
        stages, reasons = self._read("fail_stage"), self._read("fail_reason")
        ids = self._index.sample_ids
        return [
            {"sample_id": ids[i], "index": int(i), "stage": decode_text(stages[i]), "reason": decode_text(reasons[i])}
            for i in idx
        ]

    def raw(self, name: str) -> zarr.Array:
        """The underlying Zarr array ``name`` (one of UNIT_ARRAYS), for verification tools."""
        return self._arrays[name]
