"""Heavy dependencies stay at the edge: what each part loads, checked in a fresh
interpreter (every Ray worker and every CLI call pays for its imports)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "ray", "transformers", "webdataset")


def loaded_after(statement: str) -> set[str]:
    """The heavy top-level modules in sys.modules after running ``statement`` in a fresh interpreter."""
    code = f"import json, sys\n{statement}\nprint(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert out.returncode == 0, out.stderr
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


@pytest.mark.parametrize(
    "statement",
    [
        "import featstore",
        "import featstore.store",
        "import featstore.manifest",
        "from featstore import FeatureStore, FeatureSpec, load_manifest, export_wds, verify_store",
        "import featstore.cli",
        "import featstore.names",
    ],
)
def test_core_loads_no_torch_ray_or_transformers(statement):
    assert loaded_after(statement) == set()


def test_extraction_config_loads_no_ml_library():
    assert loaded_after("import featstore.extract.config") == set()


@pytest.mark.parametrize("module", ["featstore.extract.decode", "featstore.extract.sink", "featstore.extract.plan"])
def test_decode_and_sink_load_no_transformers(module):
    """A decode task or a write task imports its module: no encoder and no transformers
    (decoding resamples audio with torchaudio, so torch is allowed there)."""
    assert "transformers" not in loaded_after(f"import {module}")


def test_readers_load_torch_only_when_used():
    assert "torch" in loaded_after("from featstore import ShardDataset")
    assert loaded_after("import featstore.shards") == set()
