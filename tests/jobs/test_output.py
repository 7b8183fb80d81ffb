"""The README's main command as a newcomer sees it: a progress bar and a summary,
no warnings from our own calls, Ray's output in the session's log folder."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.jobs.conftest import JOB

pytestmark = pytest.mark.slow
SCREEN_LINES = 24


def test_demo_job_output_is_a_bar_and_a_summary(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(JOB), "--work-dir", str(tmp_path), "--ray-address", "local"],
        capture_output=True,
        text=True,
        timeout=600,
        env={k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "TRANSFORMERS_"))},
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    shown = (proc.stdout + proc.stderr).splitlines()
    assert len(shown) <= SCREEN_LINES, "\n".join(shown)
    noisy = [line for line in shown if re.search(r"warn|deprecat|error|traceback|loading weights|it/s\]", line, re.I)]
    assert noisy == [], noisy
    assert any(line.startswith("extract [") and "clips 8/8" in line for line in shown), shown
    assert any("committed      8" in line for line in shown)
    logs = [line for line in shown if "Ray's own output:" in line]
    assert len(logs) == 1
    log_file = Path(logs[0].split("Ray's own output: ")[1].split(" (")[0])
    assert log_file.parent.name == "logs" and "session_" in str(log_file)
    assert "Started a local Ray instance" in log_file.read_text()  # Ray's lines went there, not to the terminal


def test_verbose_shows_the_engine(tmp_path):
    """--verbose leaves Ray's output on the terminal (the store from the demo run makes it quick)."""
    proc = subprocess.run(
        [
            sys.executable,
            str(JOB),
            "--work-dir",
            str(tmp_path),
            "--ray-address",
            "local",
            "--verbose",
            "--encoders",
            "audio",
            "--limit",
            "2",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Started a local Ray instance" in proc.stdout + proc.stderr
    assert "Ray's own output:" not in proc.stdout
