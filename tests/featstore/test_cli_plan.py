"""`featstore plan --estimate` and `featstore calibrate` at the command line: bad values are
refused with what was expected, and an estimate without rates names every missing one."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from featstore.cli import main
from featstore.demo.dataset import make_demo_dataset

REPO = Path(__file__).resolve().parents[2]
# Cheap encoders, on the CPU (as tests/jobs/test_plan.py plans them).
ARGS = [
    "--format",
    "csv",
    "--encoders",
    "local,audio",
    "--unit-size",
    "2",
    "--local-frames",
    "2",
    "--gpus-per-actor",
    "0",
]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_demo_dataset(tmp_path_factory.mktemp("cli_plan") / "data", n=3, seconds=0.5)


def run(capsys, *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    out = capsys.readouterr()
    return rc, out.out, out.err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--price", "g5.2xlarge=cheap"], "--price 'g5.2xlarge=cheap': expected TYPE=USD_PER_HOUR"),
        (["--price", "g5.2xlarge"], "--price 'g5.2xlarge': expected TYPE=USD_PER_HOUR"),
        (["--cluster", "no-such-cluster.yaml"], "--cluster no-such-cluster.yaml: No such file"),
        (["--cluster", str(REPO / "cluster.yaml"), "--price", "p4d.24xlarge=30"], "--price p4d.24xlarge: no such node"),
        (["--rates", "no-such-rates.json"], "--rates no-such-rates.json: no such file"),
    ],
)
def test_bad_estimate_options_are_refused(capsys, tmp_path, data, extra, message):
    rc, out, err = run(capsys, "plan", str(tmp_path / "s.zarr"), "--dataset", str(data), *ARGS, "--estimate", *extra)
    assert rc == 2 and message in err and out == ""


def test_an_estimate_without_rates_names_each_missing_rate(capsys, tmp_path, data):
    rc, out, _ = run(
        capsys, "plan", str(tmp_path / "s.zarr"), "--dataset", str(data), *ARGS, "--estimate",
        "--cluster", str(REPO / "cluster.yaml"),
    )  # fmt: skip
    assert rc == 0
    estimate = out[out.index("estimate: 3 clips in 2 unit(s) on 1 x m5.2xlarge (0 CPU, 0 GPU); 8 x g5.2xlarge") :]
    missing = estimate[estimate.index("missing (run `featstore calibrate`") :].splitlines()[1:]
    assert [m.strip().split(" (")[0] for m in missing] == [
        "decode of local+audio on cpu",
        "encode local",
        "encode audio",
        "write of local+audio on cpu",
    ]
    assert "on cpu; measured on: no device" in missing[1] and "wall time" not in estimate and "cost $" not in estimate
    assert (
        not (tmp_path / "s.zarr").exists() and not (tmp_path / "s.zarr.rates.json").exists()
    )  # planning writes nothing


def calibrate(*argv: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "featstore.cli", "calibrate", *argv]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=REPO, env=dict(os.environ))


def test_calibrate_refuses_what_it_cannot_time(tmp_path):
    proc = calibrate("--dataset", str(tmp_path), "--clips", "0")
    assert proc.returncode == 2 and "--clips 0 must be at least 1" in proc.stderr
    (tmp_path / "manifest.csv").write_text("sample_id,video\ngone,clips/gone.mp4\n")
    proc = calibrate("--dataset", str(tmp_path), "--format", "csv", "--out", str(tmp_path / "r.json"))
    assert proc.returncode == 2 and "no usable clip in" in proc.stderr and not (tmp_path / "r.json").exists()
