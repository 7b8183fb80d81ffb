"""ExtractConfig and jobs/extract.py --help: every option explained, bad values named."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest

from featstore.extract.config import SAVED_FIELDS, ExtractConfig, parse_config
from tests.jobs.conftest import JOB


def test_help_explains_every_option():
    out = subprocess.run([sys.executable, str(JOB), "--help"], capture_output=True, text=True, check=True).stdout
    assert "ray job submit" in out
    for f in dataclasses.fields(ExtractConfig):
        assert "--" + f.name.replace("_", "-") in out, f.name
        assert f.metadata["help"], f.name


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["--encoders", "global,face"], "'face'"),
        (["--unit-size", "12"], "12"),
        (["--actors", "0"], "--actors 0"),
        (["--checkpoint", "video=/x"], "'video=/x'"),
        (["--limit", "0"], "--limit 0"),
        (["--write-cpus", "0"], "--write-cpus 0"),
        (["--write-tasks", "0"], "--write-tasks 0"),
        (["--cpus-per-actor", "-1"], "--cpus-per-actor -1"),
    ],
)
def test_bad_values_are_named(argv, needle, capsys):
    with pytest.raises(SystemExit) as exit_:
        parse_config(argv)
    assert exit_.value.code == 2 and needle in capsys.readouterr().err


def test_defaults_run_the_demo_and_saved_fields_decide_bytes():
    cfg = parse_config([])
    assert cfg.dataset is None and cfg.preset == "tiny" and cfg.slots() == ["global", "local", "temporal", "audio"]
    assert set(cfg.saved()) == set(SAVED_FIELDS)
    moved = parse_config(["--store", "/elsewhere.zarr", "--actors", "3", "--ray-address", "local"])
    assert moved.saved() == cfg.saved()  # locations and scheduling do not change the bytes
    assert parse_config(["--local-frames", "4"]).saved() != cfg.saved()
    assert parse_config(["--checkpoint", "audio=/m/hubert"]).overrides() == {"audio": "/m/hubert"}
