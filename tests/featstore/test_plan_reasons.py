"""plan_extraction without Ray or encoders: each reason a sample is computed, and the plan
agreeing with the store's own pending units once the manifest and spec are added."""

from __future__ import annotations

import csv
import dataclasses
import shutil

import pytest

from featstore.demo.dataset import make_demo_dataset
from featstore.errors import StoreError
from featstore.extract.plan import check_plan_matches_store, plan_extraction, spec_changes
from featstore.manifest import load_manifest
from featstore.spec import FeatureSpec
from featstore.store import FeatureStore
from tests.featstore.store import store_worker as w

SPEC = FeatureSpec(name="local", encoder="E", weights="w1", shape=(4,), dtype="float32", preprocess={"frames": 8})


def test_reasons_and_agreement(tmp_path):
    data = make_demo_dataset(tmp_path / "data", n=6, seconds=1.0)
    store = FeatureStore.create(tmp_path / "store.zarr")
    store.add_manifest(load_manifest(data, format="csv"))
    feat = store.add_spec(SPEC, unit_size=2)
    for unit in (0, 1):  # unit 2 (demo_0004, demo_0005) never computed
        a, b = feat.unit_bounds(unit)
        fails = {"demo_0003": ("decode_audio", "no audio")} if unit == 1 else {}
        feat.write_unit(unit, w.features(SPEC, feat.ids(a, b)), failures=fails)
    # The dataset changes: demo_0000 edited, a new clip added.
    shutil.copy(data / "clips" / "demo_0002.mp4", data / "clips" / "demo_0000.mp4")
    shutil.copy(data / "clips" / "demo_0001.mp4", data / "clips" / "new_0006.mp4")
    with open(data / "manifest.csv", "a", newline="", encoding="utf-8") as f:
        csv.writer(f, lineterminator="\n").writerow(["new_0006", "clips/new_0006.mp4", "", "hi", "happy"])
    manifest = load_manifest(data, format="csv")

    store = FeatureStore.open(tmp_path / "store.zarr")
    plan = plan_extraction(store, {"local": SPEC}, manifest)
    sp = plan.specs["local"]
    assert sp.todo == {"new clip": 1, "edited clip": 1, "not computed yet": 2}
    assert (sp.done, sp.failed_kept, sp.units) == (2, 1, [0, 2, 3])
    assert (
        plan.new_samples == 1
        and plan.edited_samples == 1
        and plan.units() == {0: ["local"], 2: ["local"], 3: ["local"]}
    )
    assert any("failed kept" in line for line in plan.lines())
    retry = plan_extraction(store, {"local": SPEC}, manifest, retry_failed=True).specs["local"]
    assert retry.todo["failed, --retry-failed"] == 1 and retry.units == [0, 1, 2, 3]

    # Applied as the job applies it, the store's pending units are the plan's.
    rw = FeatureStore.open(tmp_path / "store.zarr", "r+")
    rw.add_manifest(manifest)
    check_plan_matches_store(plan, rw, {"local": SPEC.key})
    # ... and the guard notices a plan that disagrees.
    wrong = dataclasses.replace(plan, specs={"local": dataclasses.replace(sp, units=[0, 2])})
    with pytest.raises(StoreError, match="plan and store disagree"):
        check_plan_matches_store(wrong, rw, {"local": SPEC.key})

    # A new spec id: every sample, with what changed against the stored spec.
    new = dataclasses.replace(SPEC, preprocess={"frames": 4})
    sp = plan_extraction(FeatureStore.open(tmp_path / "store.zarr"), {"local": new}, manifest).specs["local"]
    assert sp.todo == {"new spec id": 7} and sp.replaces == [SPEC.key]
    assert sp.changes == ["preprocessing changed: preprocess.frames: 8 -> 4"]


def test_spec_changes_names_weights_and_other_fields():
    other = dataclasses.replace(SPEC, weights="w2", dtype="float16", source="elsewhere")
    changes = spec_changes(SPEC, other)
    assert changes[0].startswith("encoder weights changed (w1 -> w2")
    assert changes[1] == 'spec changed: dtype: "float32" -> "float16"'
    assert spec_changes(SPEC, dataclasses.replace(SPEC, source="elsewhere")) == []  # provenance only
