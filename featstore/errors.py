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


class SpecMismatchError(StoreError):
    """A store or shard set holds features of a different spec than expected."""
