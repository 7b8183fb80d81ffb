"""featstore plan --estimate's arithmetic on a hand-made plan: clips, decode and encoder
seconds and bytes per slot, the wall time on a node set, dollars from the price table or
--price, and every missing rate named instead of guessed."""

from __future__ import annotations

import dataclasses

import pytest

from featstore.extract.cluster import NodeGroup, load_prices
from featstore.extract.estimate import estimate_plan
from featstore.extract.plan import Plan, SpecPlan
from featstore.extract.rates import RateTable, decode_key, spec_set_key, write_key
from featstore.extract.throughput import Options
from featstore.spec import FeatureSpec

UNIT = 4
ROWS = 10  # units 0-3, 4-7, 8-9
UNUSABLE = [9]  # missing media: recorded as failed, nothing decoded or encoded
TWO_CPUS = [NodeGroup("local", 1, 2.0, 0.0)]
G5 = [
    NodeGroup("head.cpu", 1, 0.0, 0.0, "m5.2xlarge"),
    NodeGroup("worker.gpu", 2, 8.0, 1.0, "g5.2xlarge", "NVIDIA A10G"),
]


def spec(name: str, device: str = "cpu") -> FeatureSpec:
    return FeatureSpec(
        name=name,
        encoder="TestEncoder",
        weights=f"w-{name}",
        shape=(1024,),
        dtype="float16",
        preprocess={"device_type": device, "upstream": {"what": name}},
    )


def make_plan(device: str = "cpu", units: dict[str, list[int]] | None = None) -> Plan:
    units = units or {"local": [0, 1, 2], "audio": [0, 1, 2]}
    specs = {
        slot: SpecPlan(slot, spec(slot, device), False, UNIT, ROWS, 0, 0, {"new spec id": ROWS}, u)
        for slot, u in units.items()
    }
    unusable = [{"sample_id": "s9", "reason": "missing"}]
    return Plan("x.zarr", 0, ROWS, 0, unusable, False, specs, unusable_rows=UNUSABLE)


def rec(kind: str, key: str, seconds: float, clips: int = 10, device: str = "cpu", **kw) -> dict:
    return {"kind": kind, "key": key, "device": device, "clips": clips, "units": 1, "seconds": seconds, **kw}


def rates(device: str = "cpu", encode_device: str = "cpu") -> list[dict]:
    """Per clip: decode of both 0.5 (alone: local 0.3, audio 0.1), encoders local 0.2 and
    audio 0.1, write 0.05; start-up 10 s."""
    specs = {s: spec(s, device) for s in ("local", "audio")}
    return [
        rec("decode", decode_key(specs, ["local", "audio"]), 5.0),
        rec("decode", decode_key(specs, ["local"]), 3.0),
        rec("decode", decode_key(specs, ["audio"]), 1.0),
        rec("encode", specs["local"].id, 2.0, device=encode_device),
        rec("encode", specs["audio"].id, 1.0, device=encode_device),
        rec(
            "write",
            write_key(specs, ["local", "audio"]),
            0.5,
            features=["audio:1024:float16", "local:1024:float16"],
            slots=["audio", "local"],
        ),
        rec(
            "startup",
            spec_set_key(specs, ["local", "audio"]),
            10.0,
            2,
            encode_device,
            spec_ids=[s.id for s in specs.values()],
            slots=["audio", "local"],
        ),
    ]


def test_per_slot_figures_and_wall_time_on_this_machine():
    est = estimate_plan(make_plan(), RateTable(rates()), TWO_CPUS)
    # 9 usable clips; decode shared 0.3:0.1 of 0.5 s/clip; 10 rows of 1024 float16 + 545 bytes of row records.
    assert est.slots["local"] == {
        "key": spec("local").key,
        "device": "cpu",
        "units": 3,
        "clips": 9,
        "decode_s": pytest.approx(0.375 * 9),
        "encode_s": pytest.approx(0.2 * 9),
        "bytes": 10 * (2048 + 545),
    }
    assert est.slots["audio"]["decode_s"] == pytest.approx(0.125 * 9)
    assert (est.decode_s, est.encode_s, est.write_s) == (pytest.approx(4.5), pytest.approx(2.7), pytest.approx(0.45))
    # First unit 2 + 0.8 + 0.4 + 0.2 = 3.4 s; all units on 2 shared CPUs (4.5 + 2.7 + 0.45) / 2 = 3.825 s.
    assert (est.fill_s, est.work_s, est.bound) == (pytest.approx(3.4), pytest.approx(3.825), "shared CPUs")
    assert est.wall_s == pytest.approx(10 + 3.4 + 3.825 * 2 / 3)
    assert est.missing == [] and est.usd is None  # no instance type: no dollars
    assert any("--price local=" in n for n in est.notes)
    assert est.units == 3 and "9 clips in 3 unit(s)" in est.lines()[0]


def test_gpu_cluster_wall_time_and_dollars():
    plan = make_plan("cuda")
    table = RateTable(rates("cuda", "NVIDIA A10G"))
    prices = load_prices()
    est = estimate_plan(plan, table, G5, Options(actors=1, gpus_per_actor=1), prices)
    assert {s["device"] for s in est.slots.values()} == {"NVIDIA A10G"}
    assert (est.work_s, est.bound) == (pytest.approx(1.8), "encoder actors")  # local: 9 clips x 0.2 s on one actor
    assert est.wall_s == pytest.approx(10 + 3.4 + 1.8 * 2 / 3)
    hourly = 0.384 + 2 * 1.212  # the head and both GPU workers, us-east-1 on-demand
    assert prices["instances"]["g5.2xlarge"]["usd_per_hour"] == 1.212
    assert est.usd_per_hour == pytest.approx(hourly) and est.usd == pytest.approx(est.wall_s / 3600 * hourly)
    more = estimate_plan(plan, table, G5, Options(actors=2, gpus_per_actor=1), prices, {"g5.2xlarge": 2.0})
    assert (more.work_s, more.bound) == (pytest.approx(2.7 / 2), "GPUs")  # 4 actors share the 2 GPUs
    assert more.usd_per_hour == pytest.approx(0.384 + 2 * 2.0)
    assert "prices of 2026-12-06" in "\n".join(more.lines()) and more.prices["region"] == "us-east-1"


def test_missing_rates_are_named_not_guessed():
    plan = make_plan("cuda")
    only_cpu = RateTable([r for r in rates("cuda", "cpu") if r["kind"] != "startup"])
    est = estimate_plan(plan, only_cpu, G5, Options(), load_prices())
    assert est.wall_s is None and est.usd is None and est.encode_s is None and est.slots["local"]["encode_s"] is None
    assert est.slots["local"]["clips"] == 9 and est.slots["local"]["decode_s"] == pytest.approx(0.375 * 9)
    assert (est.decode_s, est.write_s) == (pytest.approx(4.5), pytest.approx(0.45))  # measured: given all the same
    assert est.missing == [
        f"encode local ({spec('local', 'cuda').key}) on NVIDIA A10G; measured on: cpu",
        f"encode audio ({spec('audio', 'cuda').key}) on NVIDIA A10G; measured on: cpu",
    ]
    text = "\n".join(est.lines())
    assert "missing (run `featstore calibrate`" in text and "encode local" in text and "wall time" not in text
    # Everything but the start-up: the units' time is given, the start-up named.
    est = estimate_plan(make_plan(), RateTable([r for r in rates() if r["kind"] != "startup"]), TWO_CPUS)
    assert est.wall_s is None and est.units_s == pytest.approx(3.4 + 3.825 * 2 / 3)
    assert len(est.missing) == 1 and est.missing[0].startswith("start-up of a run of local+audio on cpu")
    # Nothing measured at all: every rate of the run is named.
    est = estimate_plan(make_plan(), RateTable(), TWO_CPUS)
    assert est.decode_s is None and est.write_s is None and est.wall_s is None
    assert [m.split(" (")[0].split(" on ")[0] for m in est.missing] == [
        "decode of local+audio",
        "encode local",
        "encode audio",
        "write of local+audio",
    ]


def test_rates_of_a_larger_run_stand_in_only_as_upper_bounds():
    """Only local is pending: its decode is its own alone-timed rate, the write and the
    start-up those measured with local+audio (upper bounds, said so)."""
    est = estimate_plan(make_plan(units={"local": [1]}), RateTable(rates()), TWO_CPUS)
    assert est.slots["local"]["clips"] == 4 and est.decode_s == pytest.approx(0.3 * 4)
    assert est.write_s == pytest.approx(0.05 * 4) and est.startup_s == 10.0 and est.missing == []
    assert any("write of local: measured only with audio+local" in n for n in est.notes)
    assert any("start-up: measured with audio+local" in n for n in est.notes)


def test_bad_price_names_and_unit_sizes_are_refused():
    with pytest.raises(ValueError, match="--price g6.xlarge: no such node or instance type here"):
        estimate_plan(make_plan(), RateTable(rates()), G5, prices=load_prices(), overrides={"g6.xlarge": 1.0})
    plan = make_plan()
    plan.specs["audio"] = dataclasses.replace(plan.specs["audio"], unit_size=8)
    with pytest.raises(ValueError, match=r"share a unit size; they have \[4, 8\]"):
        estimate_plan(plan, RateTable(rates()), TWO_CPUS)


def test_an_instance_type_without_a_price_is_named():
    nodes = [NodeGroup("worker", 1, 8.0, 0.0, "x9.huge")]
    est = estimate_plan(make_plan(), RateTable(rates()), nodes, prices=load_prices())
    assert est.wall_s is not None and est.usd is None
    assert est.missing == ["price of x9.huge (not in the price table): pass --price x9.huge=USD_PER_HOUR"]
    est = estimate_plan(make_plan(), RateTable(rates()), nodes, prices=load_prices(), overrides={"x9.huge": 0.5})
    assert est.usd == pytest.approx(est.wall_s / 3600 * 0.5)
