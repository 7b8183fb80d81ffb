"""featstore calibrate, the rates the job records, and featstore plan --estimate, on the
demo: an estimate made from a calibration on 2 clips predicts the job's measured wall time
for 8 clips within 30% on this machine, and the job's own rates serve the next plan."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from featstore.demo.dataset import make_demo_dataset
from featstore.extract.rates import store_rates
from featstore.store import FeatureStore
from tests.jobs.conftest import JOB_ARGS, run_job

pytestmark = pytest.mark.slow
CLIPS = 12  # the dataset; the job runs the first RUN of them
RUN = 8
CALIBRATE = 2
TOLERANCE = 0.30
ATTEMPTS = 3
CPUS = os.cpu_count() or 1
QUIET_AFTER = 2 * CPUS + 1  # a pair's own Ray processes raise the load average by 2-3 here
SLOTS = ("local", "audio")
# The job's options as plan takes them (on the CPU, as the job runs here); calibrate takes the
# same (it runs one clip a unit, and times the write of a unit of --unit-size).
PLAN_ARGS = [*JOB_ARGS, "--gpus-per-actor", "0"]
CALIBRATE_ARGS = JOB_ARGS
ENV = {**os.environ, "TRANSFORMERS_VERBOSITY": "error"}


def featstore(*argv: str) -> subprocess.CompletedProcess:
    """The featstore command as a user runs it: its own process (calibrate: its own local Ray)."""
    cmd = [sys.executable, "-m", "featstore.cli", *argv]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=400, env=ENV)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def plan(store: Path, data: Path, *extra: str) -> dict:
    out = featstore("plan", str(store), "--dataset", str(data), *PLAN_ARGS, *extra, "--estimate", "--json").stdout
    return json.loads(out)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_demo_dataset(tmp_path_factory.mktemp("estimate") / "data", n=CLIPS, seconds=1.0)


def calibrated_run(out: Path, data: Path) -> tuple[dict, dict]:
    """Calibrate on 2 clips, estimate the 8-clip run from that file alone, run it."""
    rates = out / "rates.json"
    cal = featstore(
        "calibrate",
        "--dataset",
        str(data),
        "--clips",
        str(CALIBRATE),
        "--out",
        str(rates),
        "--work-dir",
        str(out),
        *CALIBRATE_ARGS,
        "--ray-address",
        "local",
    )
    assert f"calibrated on {CALIBRATE} clip(s) in {CALIBRATE} unit(s)" in cal.stdout
    est = plan(out / "store.zarr", data, "--limit", str(RUN), "--rates", str(rates))["estimate"]
    job, summary = run_job(data, out, "--limit", str(RUN))
    assert summary is not None, job.stdout[-3000:] + job.stderr[-3000:]
    return est, summary


def wait_quiet(timeout: float = 90.0) -> float:
    """The 1-minute load average, once it is at most the CPU count (or when ``timeout`` ends)."""
    end = time.monotonic() + timeout
    while os.getloadavg()[0] > CPUS and time.monotonic() < end:
        time.sleep(5)
    return os.getloadavg()[0]


@pytest.fixture(scope="module")
def measured(tmp_path_factory, data):
    """(estimate, summary, store folder, tries). The machine is shared with other test runs
    whose load comes and goes: the demo job's wall time was seen at 21, 35, 58 and 77 s in
    consecutive runs under load averages of 4 to 34 on 2 CPUs. So each pair (calibration,
    estimate, job) waits for a quiet machine and records the load average before and after
    it; up to ATTEMPTS pairs are run until one is within the tolerance."""
    tries = []
    for _ in range(ATTEMPTS):
        out = tmp_path_factory.mktemp("pair")
        before = wait_quiet()
        est, summary = calibrated_run(out, data)
        tries.append((round(est["wall_s"], 2), summary["wall_seconds"], round(before, 1), round(os.getloadavg()[0], 1)))
        print(f"estimate from {CALIBRATE} clips {est['wall_s']:.2f} s, job on {RUN} clips {summary['wall_seconds']} s")
        if abs(est["wall_s"] / summary["wall_seconds"] - 1) <= TOLERANCE:
            break
    return est, summary, out, tries


def test_calibration_on_2_clips_predicts_the_8_clip_run(measured):
    """Within 30% on a quiet machine. A pair that ran while other work loaded the machine
    (load average above the CPU count before it, or above QUIET_AFTER after it, our own
    processes included) gives no verdict: when every pair missed under load, the test is
    skipped with the figures; one miss on a quiet machine fails it."""
    est, summary, _, tries = measured
    assert est["missing"] == [] and est["units"] == RUN // 2
    assert all(est["slots"][s]["clips"] == RUN for s in SLOTS)
    assert est["wall_s"] == pytest.approx(est["startup_s"] + est["units_s"])
    assert summary["units_run"] == RUN // 2 and summary["clips_run"] == RUN
    predicted, wall, *_ = tries[-1]
    if abs(predicted / wall - 1) <= TOLERANCE:
        return
    figures = f"(predicted s, measured s, load average before, after): {tries}"
    quiet = [t for t in tries if t[2] <= CPUS and t[3] <= QUIET_AFTER]
    if not quiet:
        pytest.skip(f"every pair ran on a loaded machine, no verdict: {figures}")
    pytest.fail(f"off by more than {TOLERANCE:.0%} on a quiet machine: {figures}")


def test_the_job_appends_its_rates_to_the_store(measured):
    _, summary, out, _ = measured
    store = FeatureStore.open(out / "store.zarr")
    records = store_rates(str(out / "store.zarr"))
    assert records == summary["rates"]  # written by the coordinator after the run, beside the store
    encode = {r["slot"]: r for r in records if r["kind"] == "encode"}
    assert {s: (r["key"], r["device"], r["clips"]) for s, r in encode.items()} == {
        s: (store.feature(s).spec.id, "cpu", RUN) for s in SLOTS
    }
    # The per-unit stage seconds the job reports, summed: the same figures.
    for stage, got in [(f"encode.{s}", encode[s]["seconds"]) for s in SLOTS] + [
        (kind, sum(r["seconds"] for r in records if r["kind"] == kind)) for kind in ("decode", "write")
    ]:
        assert got == pytest.approx(summary["stage_seconds"][stage], abs=0.006), stage
    assert sum(r["clips"] for r in records if r["kind"] == "decode") == RUN


def test_the_next_plan_uses_the_jobs_rates(measured, data):
    """The 4 clips the job left: their rates come from the store; the start-up, which only
    a calibration measures, is named as missing until the calibration's file is given."""
    _, _, out, _ = measured
    store = out / "store.zarr"
    records = store_rates(str(store))
    per_clip = {r["slot"]: r["seconds"] / r["clips"] for r in records if r["kind"] == "encode"}
    est = plan(store, data)["estimate"]
    assert est["units"] == 2 and all(est["slots"][s]["clips"] == CLIPS - RUN for s in SLOTS)
    for s in SLOTS:
        assert est["slots"][s]["encode_s"] == pytest.approx(per_clip[s] * (CLIPS - RUN))
    assert len(est["missing"]) == 1 and est["missing"][0].startswith("start-up of a run of local+audio on cpu")
    assert est["wall_s"] is None and est["units_s"] > 0
    est = plan(store, data, "--rates", str(out / "rates.json"))["estimate"]
    assert est["missing"] == [] and est["wall_s"] == pytest.approx(est["startup_s"] + est["units_s"])
