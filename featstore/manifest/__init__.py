"""Manifests: a dataset folder (MERR, MER2023, DFEW, generic CSV/JSONL) as one
validated table of samples, with safe media paths and media hashes."""

from featstore.manifest.manifest import Manifest, Sample, load_manifest

__all__ = ["Manifest", "Sample", "load_manifest"]
