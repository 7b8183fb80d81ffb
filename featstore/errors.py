"""Typed errors raised at featstore's boundaries; each names the bad value."""


class FeatstoreError(Exception):
    """Base class for every error featstore raises on purpose."""


class ManifestError(FeatstoreError, ValueError):
    """A dataset folder or annotation file cannot be turned into a manifest."""


class UnsafePathError(ManifestError):
    """A media path is absolute or escapes the dataset root."""


class DuplicateSampleError(ManifestError):
    """Two samples share one id."""


class StoreError(FeatstoreError):
    """The feature store is missing, malformed, or used inconsistently."""


class StorageAccessError(StoreError):
    """The storage behind a URL cannot be used: no such bucket, access denied, or the
    endpoint cannot be reached. The message names the URL, never the credentials."""


class SpecMismatchError(StoreError):
    """A store or shard set holds features of a different spec than expected."""


class ShardFormatError(FeatstoreError):
    """A shard member is missing, unreadable, or does not match the shard index."""


class MediaError(FeatstoreError):
    """A clip's media cannot be decoded or cropped; ``reason`` and ``stage`` say why and where.

    Attributes:
        reason: A short fixed code for the kind of failure ("unreadable",
            "no_video_stream", "no_audio_stream", "too_short", "timeout"), the
            same for every instance of a subclass, so failures can be counted.
        stage: Where it happened: one of MEDIA_STAGES.
        path: The media file, or None when there is none (frames already in memory).
    """

    reason = "media"
    MEDIA_STAGES = ("decode_video", "decode_audio", "face")

    def __init__(self, message: str, *, stage: str, path: str | None = None) -> None:
        if stage not in self.MEDIA_STAGES:
            raise ValueError(f"stage must be one of {self.MEDIA_STAGES}, got {stage!r}")
        super().__init__(message)
        self.stage = stage
        self.path = None if path is None else str(path)

    def __reduce__(self):
        # Errors cross process boundaries (Ray tasks); the default pickling passes
        # only args to __init__ and would lose the keyword-only stage and path.
        return (_rebuild_media_error, (type(self), str(self), self.stage, self.path))


def _rebuild_media_error(cls: type, message: str, stage: str, path: str | None) -> MediaError:
    """Unpickle a MediaError subclass with its stage and path."""
    return cls(message, stage=stage, path=path)


class UnreadableMediaError(MediaError):
    """The file is missing, empty, not a media container, truncated or corrupt."""

    reason = "unreadable"


class NoVideoStreamError(MediaError):
    """Video was requested from a file that has no video stream (an audio-only file)."""

    reason = "no_video_stream"


class NoAudioStreamError(MediaError):
    """Audio was requested from a file that has no audio stream (a silent clip)."""

    reason = "no_audio_stream"


class MediaTooShortError(MediaError):
    """The media holds fewer frames or samples than the decode needs (the minimum is named)."""

    reason = "too_short"


class DecodeTimeout(MediaError):
    """A decode ran past its time limit and was abandoned."""

    reason = "timeout"


class CheckpointError(FeatstoreError):
    """An encoder checkpoint cannot be loaded: wrong model type, or weights that do not fit the model."""


class CheckpointNotFoundError(CheckpointError):
    """An encoder checkpoint is neither a local folder nor a hub name that can be fetched (or found in the cache)."""


class FaceDetectorError(MediaError):
    """The face detector cannot be loaded (a broken OpenCV install), so no crop can be made."""

    reason = "detector_unavailable"


class CorruptChunkError(StoreError):
    """A chunk of a store cannot be read back; the message names the store, spec,
    unit and array, and the command that withdraws the unit so it is recomputed."""

    def __init__(self, store: str, spec: str, unit: int, array: str, cause: BaseException) -> None:
        super().__init__(
            f"store {store}: spec {spec} unit {unit}: {array} chunk is unreadable "
            f"({type(cause).__name__}: {cause}); run `featstore verify {store} --repair` to withdraw "
            f"the unit, then run extraction again to recompute it"
        )
        self.store, self.spec, self.unit, self.array = store, spec, unit, array
        self._cause = f"{type(cause).__name__}: {cause}"

    def __reduce__(self):
        # Keep the message when the error crosses a process boundary (Ray, DataLoader workers).
        return (_rebuild_corrupt_chunk_error, (self.store, self.spec, self.unit, self.array, str(self)))


def _rebuild_corrupt_chunk_error(store: str, spec: str, unit: int, array: str, message: str) -> CorruptChunkError:
    err = CorruptChunkError.__new__(CorruptChunkError)
    StoreError.__init__(err, message)
    err.store, err.spec, err.unit, err.array = store, spec, unit, array
    return err
