"""Rate records: what a run's per-unit records give (clips that cost nothing left out),
pooling, the rates file, and the rates file the job keeps beside a store (local and S3)."""

from __future__ import annotations

import json

import pytest

from featstore.extract import rates
from featstore.extract.rates import (
    RateTable,
    append_store_rates,
    decode_key,
    load_rates_file,
    run_records,
    save_rates_file,
    store_rates,
    store_rates_url,
    write_key,
)
from featstore.spec import FeatureSpec
from featstore.store import FeatureStore


def spec(name: str) -> FeatureSpec:
    return FeatureSpec(
        name=name, encoder="E", weights=f"w-{name}", shape=(8,), dtype="float16", preprocess={"upstream": {"n": name}}
    )


SPECS = {"local": spec("local"), "audio": spec("audio")}
A10G = {"torch_device": "cuda:0", "device_name": "NVIDIA A10G"}
STATS = [
    {  # 4 clips: m1's media missing (nothing opened), a1 without an audio track
        "unit": 0,
        "clips": 4,
        "slots": ["local", "audio"],
        "seconds": {"decode": 2.0, "encode.local": 0.6, "encode.audio": 0.2, "write": 0.4},
        "failures": {
            "local": {"m1": ["manifest", "missing"]},
            "audio": {"m1": ["manifest", "missing"], "a1": ["decode_audio", "no_audio_stream"]},
        },
        "devices": {"local": A10G, "audio": {"torch_device": "cpu"}},
    },
    {
        "unit": 1,
        "clips": 2,
        "slots": ["local"],
        "seconds": {"decode": 0.5, "encode.local": 0.4, "write": 0.1},
        "failures": {"local": {}},
        "devices": {"local": A10G},
    },
]


def test_run_records_count_the_clips_each_stage_worked_on():
    got = {(r["kind"], r["key"], r["device"]): (r["clips"], r["seconds"]) for r in run_records(STATS, SPECS)}
    assert got == {
        ("encode", SPECS["local"].id, "NVIDIA A10G"): (3 + 2, 1.0),
        ("encode", SPECS["audio"].id, "cpu"): (2, 0.2),  # a1 and m1 never reached the encoder
        ("decode", decode_key(SPECS, ["local", "audio"]), "cpu"): (3, 2.0),  # m1: nothing decoded
        ("decode", decode_key(SPECS, ["local"]), "cpu"): (2, 0.5),
        ("write", write_key(SPECS, ["local", "audio"]), "cpu"): (4, 0.4),  # the unit is written whole
        ("write", write_key(SPECS, ["local"]), "cpu"): (2, 0.1),
    }
    assert all(r["source"] == "job" and r["measured_at"] for r in run_records(STATS, SPECS))
    assert decode_key(SPECS, ["local", "audio"]) == decode_key(SPECS, ["audio", "local"])  # order-free


def test_keys_follow_what_decides_the_work():
    other_weights = {**SPECS, "local": FeatureSpec(**{**SPECS["local"].to_dict(), "weights": "w2"})}
    other_frames = {**SPECS, "local": FeatureSpec(**{**SPECS["local"].to_dict(), "preprocess": {"upstream": {"n": 3}}})}
    assert decode_key(other_weights, ["local"]) == decode_key(SPECS, ["local"])  # same decoding
    assert write_key(other_weights, ["local"]) == write_key(SPECS, ["local"])  # same bytes written
    assert decode_key(other_frames, ["local"]) != decode_key(SPECS, ["local"])


def test_rates_pool_over_records():
    table = RateTable(run_records(STATS, SPECS) + run_records(STATS[1:], SPECS))
    assert table.per_clip("encode", SPECS["local"].id, "NVIDIA A10G") == pytest.approx(1.4 / 7)
    assert table.per_clip("encode", SPECS["local"].id, "cpu") is None
    assert table.devices("encode", SPECS["local"].id) == ["NVIDIA A10G"]


def test_rates_file_appends_and_refuses_other_files(tmp_path):
    path = tmp_path / "rates.json"
    save_rates_file(path, run_records(STATS, SPECS))
    assert len(save_rates_file(path, run_records(STATS[1:], SPECS))) == 6 + 3
    assert len(load_rates_file(path)) == 9
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="bad.json: not JSON"):
        load_rates_file(tmp_path / "bad.json")
    (tmp_path / "other.json").write_text(json.dumps({"records": []}))
    with pytest.raises(ValueError, match="other.json: not a featstore rates file"):
        load_rates_file(tmp_path / "other.json")
    (tmp_path / "rec.json").write_text(json.dumps({"featstore_rates": 1, "records": [{"kind": "guess"}]}))
    with pytest.raises(ValueError, match="record 0 must have kind in"):
        load_rates_file(tmp_path / "rec.json")


def _store_roundtrip(url: str, monkeypatch) -> None:
    """The job's rates go beside the store (STORE.rates.json), never into it: a store's
    bytes do not depend on a run's speed."""
    store = FeatureStore.create(url)
    before = store.attrs
    assert store_rates(url) == []
    records = run_records(STATS, SPECS)
    append_store_rates(url, records)
    assert store_rates(url) == records and FeatureStore.open(url).attrs == before
    assert store_rates_url(url) == url + ".rates.json"
    monkeypatch.setattr(rates, "STORE_KEEP", 7)
    more = run_records(STATS[1:], SPECS)
    append_store_rates(url, more)
    assert store_rates(url) == [*records, *more][-7:]  # appended, the newest kept


def test_store_rates_local(tmp_path, monkeypatch):
    _store_roundtrip(str(tmp_path / "s.zarr"), monkeypatch)
    assert len(load_rates_file(tmp_path / "s.zarr.rates.json")) == 7  # a rates file like calibrate's
    assert {p.name for p in tmp_path.iterdir()} == {"s.zarr", "s.zarr.rates.json"}


def test_store_rates_s3(s3, monkeypatch):
    _store_roundtrip(s3.url("s.zarr"), monkeypatch)
    assert s3.fs().exists(f"{s3.bucket}/s.zarr.rates.json")
