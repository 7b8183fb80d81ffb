"""The input manifest: a dataset folder turned into one validated, ordered table of samples."""

from __future__ import annotations

import copy
import dataclasses
import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from featstore.errors import ManifestError
from featstore.manifest.detect import Sources, plan_sources
from featstore.manifest.formats import (
    Record,
    read_dfew_csv,
    read_generic_csv,
    read_generic_jsonl,
    read_label_list,
    read_merr_json,
    read_text,
)
from featstore.manifest.hashing import problem_hash
from featstore.manifest.join import check_unique, join_labels, join_transcripts
from featstore.manifest.media_files import check_media, hash_all, locate_videos

__all__ = ["Manifest", "Sample", "load_manifest"]

# Version of the saved-manifest JSONL layout (header line + one sample per line).
JSONL_VERSION = 1
_READERS = {
    "csv": read_generic_csv,
    "jsonl": read_generic_jsonl,
    "merr": read_merr_json,
    "mer2023": read_label_list,
    "dfew": read_dfew_csv,
}
# Formats that name clips, not paths: the video is found by file stem under the root.
_STEM_FORMATS = ("merr", "mer2023", "dfew")
_OPTIONAL_TEXT = ("video", "audio", "transcript", "label", "caption", "reasoning", "media_hash", "error")


@dataclass(frozen=True)
class Sample:
    """One clip of a dataset, with its annotations and the state of its media.

    Attributes:
        sample_id: Unique id within the manifest.
        video: POSIX path of the clip relative to the dataset root, or None.
        audio: Relative path of a separate audio file; None means the video's own track.
        transcript: What is said in the clip.
        label: Lower-case emotion name.
        caption: MERR coarse ``caption``.
        reasoning: MERR fine ``smp_reason_caption``.
        extra: Every other annotation field, JSON-able (peak_index, n_frames, valence, ...).
        media_hash: sha256 hex of the media bytes (:func:`featstore.manifest.hashing.hash_media`);
            for a sample with ``error``, a hash that marks the problem
            (:func:`featstore.manifest.hashing.problem_hash`); None when hashing was turned off.
        error: Why the sample cannot be processed (missing, unsafe or unreadable
            media, naming the path), or None. The store records it as the
            sample's failure (stage ``manifest``) in every spec.
    """

    sample_id: str
    video: str | None
    audio: str | None = None
    transcript: str | None = None
    label: str | None = None
    caption: str | None = None
    reasoning: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict, hash=False)  # compared, but dicts cannot be hashed
    media_hash: str | None = None
    error: str | None = None

    def __post_init__(self) -> None:
        """Check field types and take a private copy of ``extra``.

        Raises:
            ManifestError: An empty or non-string id, a non-string text field,
                or an ``extra`` that is not a mapping.
        """
        if not isinstance(self.sample_id, str) or not self.sample_id:
            raise ManifestError(f"sample_id must be a non-empty string, got {self.sample_id!r}")
        for name in _OPTIONAL_TEXT:
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                raise ManifestError(f"sample {self.sample_id!r}: {name} must be a string or None, got {value!r}")
        if not isinstance(self.extra, Mapping):
            raise ManifestError(f"sample {self.sample_id!r}: extra must be a mapping, got {self.extra!r}")
        object.__setattr__(self, "extra", copy.deepcopy(dict(self.extra)))

    def to_dict(self) -> dict[str, Any]:
        """Return every field as a JSON-able dict (``extra`` deep-copied)."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["extra"] = copy.deepcopy(out["extra"])
        return out

    def annotation(self) -> dict[str, Any]:
        """What a trainer needs besides features: media paths, label, texts, extra
        fields, and ``error`` for a sample that cannot be processed; empty ones left
        out. This is what the store keeps per sample (the extraction job reads
        ``error`` back to record the failure without opening any file)."""
        skip = ("sample_id", "media_hash")
        return {k: v for k, v in self.to_dict().items() if k not in skip and v not in (None, {})}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Sample:
        """Build a Sample from :meth:`to_dict` output.

        Raises:
            ManifestError: ``d`` is not a mapping, lacks sample_id or video, or has unknown keys.
        """
        if not isinstance(d, Mapping):
            raise ManifestError(f"a sample must be a mapping, got {d!r}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        missing = [name for name in ("sample_id", "video") if name not in d]
        if unknown or missing:
            raise ManifestError(f"sample {d.get('sample_id')!r}: unknown keys {unknown}, missing keys {missing}")
        return cls(**d)


@dataclass(frozen=True)
class Manifest:
    """A dataset's samples in annotation order, with the root their paths are relative to.

    Attributes:
        root: The dataset root folder.
        format: The annotation format it was loaded from (one of FORMATS).
        samples: The samples, ids unique.
    """

    root: Path
    format: str
    samples: tuple[Sample, ...]
    _by_id: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        """Normalise ``root`` and ``samples`` and index the ids.

        Raises:
            TypeError: An item of ``samples`` is not a Sample.
            DuplicateSampleError: Two samples share an id (every such id is named).
        """
        object.__setattr__(self, "root", Path(self.root))
        object.__setattr__(self, "samples", tuple(self.samples))
        for sample in self.samples:
            if not isinstance(sample, Sample):
                raise TypeError(f"Manifest.samples must hold Sample objects, got {sample!r}")
        check_unique(
            [s.sample_id for s in self.samples], [f"position {i}" for i in range(len(self.samples))], "manifest"
        )
        object.__setattr__(self, "_by_id", {s.sample_id: i for i, s in enumerate(self.samples)})

    def __len__(self) -> int:
        return len(self.samples)

    def __iter__(self) -> Iterator[Sample]:
        return iter(self.samples)

    def __getitem__(self, index: int) -> Sample:
        return self.samples[index]

    @property
    def ids(self) -> list[str]:
        """Sample ids in manifest order."""
        return [s.sample_id for s in self.samples]

    def get(self, sample_id: str) -> Sample:
        """Return the sample with this id.

        Raises:
            KeyError: No sample has this id (the id is named).
        """
        try:
            return self.samples[self._by_id[sample_id]]
        except KeyError:
            raise KeyError(f"no sample {sample_id!r} in the manifest of {self.root}") from None

    @property
    def usable(self) -> list[Sample]:
        """Samples whose media can be processed (``error`` is None)."""
        return [s for s in self.samples if s.error is None]

    @property
    def problems(self) -> list[Sample]:
        """Samples that cannot be processed, each with its ``error``."""
        return [s for s in self.samples if s.error is not None]

    def to_jsonl(self, path: str | os.PathLike) -> None:
        """Write the manifest as JSONL: a header line (root, format, count), then one sample per line.

        The file is written beside ``path`` and renamed into place, so a reader
        never sees half of it.

        Raises:
            ManifestError: A sample's ``extra`` is not JSON-able (names the sample).
        """
        lines = [
            json.dumps(
                {
                    "featstore_manifest": JSONL_VERSION,
                    "root": str(self.root),
                    "format": self.format,
                    "samples": len(self.samples),
                },
                ensure_ascii=False,
            )
        ]
        for sample in self.samples:
            try:
                lines.append(json.dumps(sample.to_dict(), ensure_ascii=False, allow_nan=False))
            except (TypeError, ValueError) as err:
                raise ManifestError(f"sample {sample.sample_id!r}: cannot be written as JSON: {err}") from err
        target = Path(path)
        partial = target.with_name(target.name + ".partial")
        partial.write_text("\n".join(lines) + "\n", encoding="utf-8")
        os.replace(partial, target)

    @classmethod
    def from_jsonl(cls, path: str | os.PathLike) -> Manifest:
        """Read a manifest written by :meth:`to_jsonl`.

        Raises:
            ManifestError: Not a featstore manifest, malformed JSON, a bad
                sample, or a sample count that disagrees with the header (names file and line).
        """
        source = Path(path)
        lines = read_text(source).split("\n")  # not splitlines(): U+2028 may sit inside a JSON string
        while lines and not lines[-1].strip():
            lines.pop()
        header = _json_line(source, lines, 0)
        if (
            not isinstance(header, dict)
            or header.get("featstore_manifest") != JSONL_VERSION
            or not isinstance(header.get("root"), str)
            or not isinstance(header.get("format"), str)
        ):
            raise ManifestError(
                f"{source}: line 1: not a featstore manifest header (version {JSONL_VERSION}, "
                f"with root and format), got {lines[0][:200]!r}"
            )
        samples = []
        for i in range(1, len(lines)):
            entry = _json_line(source, lines, i)
            try:
                samples.append(Sample.from_dict(entry))
            except ManifestError as err:
                raise ManifestError(f"{source}: line {i + 1}: {err}") from err
        if len(samples) != header.get("samples"):
            raise ManifestError(f"{source}: header says {header.get('samples')!r} samples, file holds {len(samples)}")
        return cls(root=Path(header["root"]), format=header["format"], samples=tuple(samples))


def load_manifest(
    root: str | os.PathLike,
    format: str = "auto",
    *,
    annotation: str | os.PathLike | None = None,
    labels: str | os.PathLike | None = None,
    transcripts: str | os.PathLike | None = None,
    hash_media: bool = True,
) -> Manifest:
    """Load a dataset folder into one validated table of samples.

    Args:
        root: The dataset root; every media path stays inside it.
        format: "auto" (detect from the files in ``root``, see
            :func:`featstore.manifest.detect.plan_sources`) or one of FORMATS.
        annotation: The annotation file, relative to ``root`` or the working directory.
        labels: A MER2023-style label list to join into a MERR annotation.
        transcripts: A ``name,sentence`` CSV joined by sample id.
        hash_media: Hash every present media file (the cache key needs it);
            False leaves ``media_hash`` None, for a quick look.

    Returns:
        The Manifest, in annotation-file order. A sample whose media is missing,
        outside ``root`` (absolute, ``..``, a symlink out) or unreadable is kept,
        with ``error`` saying why and naming the path, and a ``media_hash`` that
        marks the problem; a file outside ``root`` is never opened.

    Raises:
        ManifestError: No root, no or several candidate annotation files,
            malformed or empty annotation (names file and line), a sample id
            the store cannot hold (names file and line), an unknown label, or
            annotations that disagree on a field.
        DuplicateSampleError: Ids repeat in a file (every such id is named).
    """
    base = Path(root).absolute()
    if not base.is_dir():
        raise ManifestError(f"dataset root {os.fspath(root)!r} is not a folder")
    sources = plan_sources(base, format, annotation, labels, transcripts)
    records = _read_records(sources)
    if sources.format in _STEM_FORMATS:
        locate_videos(base, records, fuzzy_digits=sources.format == "dfew")
    return Manifest(base, sources.format, tuple(_build_samples(base, records, hash_media)))


def _read_records(sources: Sources) -> list[Record]:
    """Read the annotation, check its ids, and join the label list and transcripts into it."""
    records = _READERS[sources.format](sources.annotation)
    if not records:
        raise ManifestError(f"{sources.annotation}: no samples in this {sources.format} annotation")
    check_unique([r["sample_id"] for r in records], [r["where"] for r in records], str(sources.annotation))
    _check_keys(records)
    if sources.labels is not None:
        join_labels(records, sources.labels)
    if sources.transcripts is not None:
        join_transcripts(records, sources.transcripts)
    return records


def _build_samples(root: Path, records: list[Record], hash_media: bool) -> list[Sample]:
    """Check every record's media (unsafe paths are never opened), hash what is present.

    A sample whose media is missing, unsafe or unreadable gets ``error`` (every
    problem's reason) and a media hash that marks the problems
    (:func:`featstore.manifest.hashing.problem_hash`), so the store keeps it as a
    failed sample and recomputes it once its media is in place.
    """
    checked = [check_media(root, record) for record in records]
    todo = [i for i, (_, _, problems) in enumerate(checked) if not problems] if hash_media else []
    digests = dict(zip(todo, hash_all(root, [checked[i][:2] for i in todo])))
    samples = []
    for i, (record, (video, audio, problems)) in enumerate(zip(records, checked)):
        digest, read_problem = digests.get(i, (None, None))
        problems = problems + ([read_problem] if read_problem is not None else [])
        error = None
        if problems:
            digest = problem_hash([p.marker for p in problems])
            error = "; ".join(p.reason for p in problems)
        fields = {name: record[name] for name in ("transcript", "label", "caption", "reasoning", "extra")}
        samples.append(Sample(record["sample_id"], video, audio, **fields, media_hash=digest, error=error))
    return samples


def _check_keys(records: list[Record]) -> None:
    """Raise ManifestError naming the row of the first id the store cannot hold as a key."""
    from featstore.store.index import check_sample_id

    for record in records:
        try:
            check_sample_id(record["sample_id"])
        except ValueError as err:
            raise ManifestError(f"{record['where']}: {err}") from None


def _json_line(source: Path, lines: list[str], index: int) -> Any:
    """Parse line ``index`` of a saved manifest, naming file and line on failure."""
    if index >= len(lines):
        raise ManifestError(f"{source}: the file is empty")
    try:
        return json.loads(lines[index])
    except json.JSONDecodeError as err:
        raise ManifestError(f"{source}: line {index + 1}: invalid JSON: {err.msg} (column {err.colno})") from err
