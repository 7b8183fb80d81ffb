"""describe --estimate-epoch: the FLOP counts against the textbook rules (2 x params a token forward;
a frozen base's backward computes activation gradients only), the epoch arithmetic by hand, measured
rates replacing the FLOP figure only when every encoder has one, prices, and the errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from featstore.extract.cluster import load_prices
from featstore.extract.rates import save_rates_file
from trainer.model.estimate import GPU_PEAK_TFLOPS, estimate_epoch, gpu_price

REPO = Path(__file__).resolve().parents[3]
LLAMA_7B_PARAMS = 6_738_415_616  # Llama-2-7b-hf's parameter count (its model card: 6.74B)
EVA_G_PARAMS = 985_952_256  # EVA ViT-g/14 in BLIP-2's vision tower, 39 blocks (about 1B)
# Hand-made figures for the arithmetic tests (TFLOPs chosen to make the sums easy to follow).
FIGURES = {"train_step": {"step": 10e12}, "encoders_total": 5e12}


@pytest.fixture(scope="module")
def real():
    from trainer.model.flops import real_figures

    return real_figures(seq_len=400)


def test_step_flops_match_the_frozen_base_rule(real):
    """Forward 2 N T; backward through a frozen base: activation gradients, another ~2 N T
    (LoRA and projector weight gradients are a small extra)."""
    tokens = 400
    forward = real["train_step"]["forward"]
    assert forward == pytest.approx(2 * LLAMA_7B_PARAMS * tokens, rel=0.06)
    assert real["train_step"]["backward"] == pytest.approx(forward, rel=0.06)


def test_eva_flops_match_two_params_a_token(real):
    """EVA ViT-g on 1025 tokens: 2 N T plus attention (2 x 2 x T^2 x width x depth)."""
    t, width, depth = 1025, 1408, 39
    expected = 2 * EVA_G_PARAMS * t + 4 * t * t * width * depth
    assert real["encoders"]["global"] == pytest.approx(expected, rel=0.05)


def test_epoch_arithmetic_by_hand():
    d = estimate_epoch(1000, "h100", mfu=0.5, usd_per_gpu_hour=2.0, epochs=3, figures=FIGURES, seq_len=400, prices=None)
    rate = 989e12 * 0.5
    cached_h, enc_h = 1000 * 10e12 / rate / 3600, 1000 * 5e12 / rate / 3600
    assert d["epoch"]["cached"]["gpu_hours"] == pytest.approx(cached_h)
    assert d["epoch"]["online"]["gpu_hours"] == pytest.approx(cached_h + enc_h)
    assert d["run"]["cached"]["gpu_hours"] == pytest.approx(enc_h + 3 * cached_h)  # extraction once
    assert d["run"]["online"]["gpu_hours"] == pytest.approx(3 * (cached_h + enc_h))
    assert d["run"]["online"]["usd"] == pytest.approx(2.0 * 3 * (cached_h + enc_h))
    assert d["online_over_cached_epoch"] == pytest.approx(1.5)
    assert d["encoder_seconds_from"] == "flops"


def _records(slots, device="NVIDIA A10G", seconds=0.5, clips=10):
    recs = [
        {
            "kind": "encode",
            "key": f"id-{s}",
            "slot": s,
            "device": device,
            "clips": clips,
            "units": 1,
            "seconds": seconds,
        }
        for s in slots
    ]
    recs.append({"kind": "decode", "key": "d1", "slots": ["audio"], "device": "cpu", "clips": 4, "seconds": 4.0})
    recs.append({"kind": "decode", "key": "d4", "slots": list(slots), "device": "cpu", "clips": 10, "seconds": 3.0})
    return recs


def test_measured_rates_replace_the_encoder_flops_only_when_all_four_are_measured():
    four = ("global", "local", "temporal", "audio")
    d = estimate_epoch(100, "a10g", figures=FIGURES, rates=_records(four), prices=None)
    step_h = 100 * 10e12 / (70e12 * 0.35) / 3600
    assert d["encoder_seconds_from"] == "measured"
    assert d["epoch"]["online"]["gpu_hours"] == pytest.approx(step_h + 100 * 4 * 0.05 / 3600)
    assert d["measured"]["decode_s_per_clip"] == pytest.approx(0.3)  # the largest slot set's decode, not audio alone
    three = estimate_epoch(100, "a10g", figures=FIGURES, rates=_records(four[:3]), prices=None)
    assert three["encoder_seconds_from"] == "flops"
    other = estimate_epoch(100, "a10g", figures=FIGURES, rates=_records(four, device="NVIDIA L4"), prices=None)
    assert other["measured"]["encode_s_per_clip"] == {}  # another card's rates are not this card's


def test_price_is_the_cheapest_one_gpu_instance_of_that_card():
    prices = load_prices()
    cheapest = min(
        (v["usd_per_hour"], k)
        for k, v in prices["instances"].items()
        if v.get("gpu") == "NVIDIA A10G" and v["gpus"] == 1
    )
    assert gpu_price("NVIDIA A10G", prices) == cheapest
    assert gpu_price("NVIDIA H200", prices) is None
    d = estimate_epoch(10, "a10g", figures=FIGURES, prices=prices)
    assert d["usd_per_gpu_hour"] == cheapest[0] and d["price_from"] == cheapest[1]


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"gpu": "b300"}, "unknown GPU 'b300'"),
        ({"mfu": 1.5}, "mfu 1.5"),
        ({"samples": 0}, "samples"),
        ({"peak_tflops": -1.0}, "peak_tflops -1.0"),
    ],
)
def test_bad_values_are_named(kw, match):
    args = {"samples": 10, "gpu": "a10g", **kw}
    with pytest.raises(ValueError, match=match):
        estimate_epoch(args.pop("samples"), args.pop("gpu"), figures=FIGURES, **args)


def test_describe_prints_the_estimate_with_a_rates_file(tmp_path):
    rates = tmp_path / "a10g.rates.json"
    save_rates_file(rates, _records(("global", "local", "temporal", "audio")))
    cmd = [sys.executable, "-m", "trainer.model.describe", "--estimate-epoch", "--samples", "2000", "--gpu", "a10g"]
    out = subprocess.run([*cmd, "--rates", str(rates), "--json"], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert out.returncode == 0, out.stderr
    d = json.loads(out.stdout)
    assert d["gpu"] == "NVIDIA A10G" and d["peak_tflops"] == GPU_PEAK_TFLOPS["NVIDIA A10G"]
    assert d["encoder_seconds_from"] == "measured" and d["samples"] == 2000
    bad = subprocess.run([*cmd, "--gpu", "b300"], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert bad.returncode == 2 and "unknown GPU 'b300'" in bad.stderr
