"""The featstore CLI: info, verify (catches missing and corrupt chunks), failures."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from featstore.cli import main
from tests.featstore.store import store_worker as w


@pytest.fixture()
def filled(tmp_path) -> Path:
    root = tmp_path / "s.zarr"
    store = w.make_store(root, 20)
    w.write_units(store, "pooled", [0, 1])  # unit 2 stays pending
    w.write_units(store, "tokens", list(range(store.feature("tokens").num_units)))
    return root


def run(capsys, *argv) -> tuple[int, str, str]:
    rc = main(list(argv))
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_info_json(filled, capsys):
    rc, out, _ = run(capsys, "info", str(filled), "--json")
    info = json.loads(out)
    assert rc == 0 and info["samples"] == 20
    by_name = {s["name"]: s for s in info["specs"]}
    assert {k: by_name["pooled"][k] for k in ("committed", "failed", "pending", "shape", "dtype")} == {
        "committed": 15,
        "failed": 1,
        "pending": 4,
        "shape": [64],
        "dtype": "float16",
    }
    assert by_name["tokens"]["committed"] == 20 and by_name["tokens"]["id"] == w.SPECS[1].id
    assert by_name["tokens"]["bytes_stored"] > 0 and by_name["tokens"]["compression_ratio"] > 0


def test_info_table(filled, capsys):
    rc, out, _ = run(capsys, "info", str(filled))
    assert rc == 0 and "pooled" in out and "17x32" in out and "samples 20" in out


def test_failures(filled, capsys):
    rc, out, _ = run(capsys, "failures", str(filled), "--json")
    assert rc == 0
    assert json.loads(out) == [
        {
            "spec": "pooled",
            "spec_id": w.SPECS[0].id,
            "sample_id": "clip_0007",
            "index": 7,
            "stage": "decode",
            "reason": "corrupt file: moov atom not found",
        }
    ]


def test_verify_ok(filled, capsys):
    rc, out, _ = run(capsys, "verify", str(filled))
    assert rc == 0 and out.strip().endswith("checked 7 units, 35 committed samples")


def test_verify_names_corrupt_chunk(filled, capsys):
    key = w.SPECS[1].key
    # tokens: units of 4 in data chunks of 2, so chunk 5 is the second half of unit 2
    (filled / "specs" / key / "data" / "c" / "5" / "0" / "0").write_bytes(b"not a blosc frame")
    rc, _, err = run(capsys, "verify", str(filled))
    assert rc == 1 and f"spec {key} unit 2: chunk does not decode" in err


def test_verify_names_missing_chunk(filled, capsys):
    key = w.SPECS[0].key
    (filled / "specs" / key / "data" / "c" / "1" / "0").unlink()
    rc, _, err = run(capsys, "verify", str(filled))
    assert rc == 1 and f"spec {key} unit 1: committed but chunk(s) missing for ['data']" in err


def test_verify_names_one_missing_chunk_of_several(filled, capsys):
    key = w.SPECS[1].key
    (filled / "specs" / key / "data" / "c" / "4" / "0" / "0").unlink()  # first of unit 2's two data chunks
    rc, _, err = run(capsys, "verify", str(filled))
    assert rc == 1 and f"spec {key} unit 2: committed but chunk(s) missing for ['data']" in err


def test_missing_store_is_a_clear_error(tmp_path, capsys):
    rc, _, err = run(capsys, "info", str(tmp_path / "nope"))
    assert rc == 2 and "no featstore at" in err


@pytest.mark.parametrize("cmd", [[], ["info"], ["verify"], ["failures"]])
def test_help_on_every_command(cmd):
    # The installed console script, next to this interpreter.
    exe = Path(sys.executable).parent / "featstore"
    assert exe.exists(), "featstore console script not installed (pip install -e .)"
    argv = [str(exe), *cmd, "--help"]
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    assert "usage: featstore" in out and ("--json" in out or cmd in ([], ["verify"]))
