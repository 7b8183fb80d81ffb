"""TrainConfig: YAML maps onto the dataclass, the command line overrides it, --help covers every field,
bad values are refused by name; the shipped configs load; the schedule and decay groups."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from trainer.train.config import TrainConfig, build_parser, parse_config
from trainer.train.optim import build_optimizer, lr_at

CONFIGS = Path(__file__).resolve().parents[3] / "configs"


def test_yaml_then_command_line(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("batch_size: 4\nlr: 2.0e-5\nexpect:\n  global: aaaa\nshuffle-buffer: 0\n")
    cfg = parse_config(["--config", str(f), "--lr", "3e-5", "--expect", "audio=bbbb", "--no-progress"])
    assert (cfg.batch_size, cfg.lr, cfg.shuffle_buffer, cfg.progress) == (4, 3e-5, 0, False)
    assert cfg.expect == {"global": "aaaa", "audio": "bbbb"}
    assert parse_config([]) == TrainConfig()


def test_help_lists_every_field(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--help"])
    out = capsys.readouterr().out
    for f in dataclasses.fields(TrainConfig):
        assert "--" + f.name.replace("_", "-") in out and f.metadata["help"]


@pytest.mark.parametrize(
    "argv, match",
    [
        (["--batch-size", "0"], "batch_size 0"),
        (["--tasks", "emotion,feelings"], "unknown task 'feelings'"),
        (["--expect", "face=abc"], r"slots \['face'\]"),
        (["--expect", "global"], "'global' must be SLOT=ID"),
        (["--lr", "0"], "lr 0.0 must be positive"),
    ],
)
def test_bad_values_are_named(argv, match, capsys):
    with pytest.raises(SystemExit):
        parse_config(argv)
    assert pytest.importorskip("re").search(match, capsys.readouterr().err)


def test_unknown_yaml_key_is_named(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("batchsize: 4\n")
    with pytest.raises(ValueError, match="unknown options \\['batchsize'\\]"):
        TrainConfig.from_dict({"batchsize": 4}, str(f))


def test_shipped_configs():
    s1 = parse_config(["--config", str(CONFIGS / "stage1_coarse.yaml")])
    assert (s1.tasks, s1.schedule, s1.warmup_lr, s1.lr, s1.min_lr, s1.warmup_steps, s1.epochs) == (
        "emotion,reason",
        "cosine",
        1e-6,
        1e-5,
        1e-6,
        1000,
        30,
    )
    assert (s1.lora_r, s1.lora_alpha, s1.lora_dropout, s1.weight_decay) == (64, 16, 0.05, 0.05)
    s2 = parse_config(["--config", str(CONFIGS / "stage2_fine.yaml")])
    assert (s2.tasks, s2.schedule, s2.lr) == ("reason_v2", "constant", 1e-6) and s2.init_from
    demo = parse_config(["--config", str(CONFIGS / "demo.yaml")])
    assert demo.llm == "tiny" and demo.max_steps


def test_schedule():
    args = dict(schedule="cosine", lr=1e-5, warmup_lr=1e-6, min_lr=1e-6, warmup_steps=1000, total_steps=5000)
    assert lr_at(0, **args) == 1e-6 and lr_at(500, **args) == pytest.approx(5.5e-6)
    assert lr_at(1000, **args) == pytest.approx(1e-5) and lr_at(3000, **args) == pytest.approx(5.5e-6)
    assert lr_at(5000, **args) == pytest.approx(1e-6)
    assert lr_at(10, **{**args, "schedule": "constant", "lr": 1e-6}) == 1e-6


def test_weight_decay_groups():
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.LayerNorm(4))
    opt = build_optimizer(model.named_parameters(), 1e-3, 0.05)
    decay, none = opt.param_groups
    assert decay["weight_decay"] == 0.05 and [p.shape for p in decay["params"]] == [(4, 3)]
    assert none["weight_decay"] == 0.0 and len(none["params"]) == 3  # bias, norm weight, norm bias
