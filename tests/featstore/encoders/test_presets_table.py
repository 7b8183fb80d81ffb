"""Presets as data: one table gives each preset's slots, classes and sources; the tiny
stand-ins mirror the real presets; shared slots give one spec id; the job's config follows the table."""

from __future__ import annotations

import pytest

from featstore.encoders import load_encoders, preset_sources
from featstore.encoders.presets import CLASSES
from featstore.extract.config import ExtractConfig, parse_config
from featstore.extract.specs import decode_config, encoder_options
from featstore.names import INPUT_KEY, PRESET_TABLE, PRESETS, SLOTS, preset_slots

REAL = {"emotion-llama": "tiny", "emotion-llama-v2": "tiny-emotion-llama-v2", "affectgpt": "tiny-affectgpt"}


def test_every_real_preset_has_a_tiny_stand_in_with_the_same_slots_and_classes():
    assert PRESETS[:2] == ("tiny", "emotion-llama") and set(PRESETS) == set(REAL) | set(REAL.values())
    for real, tiny in REAL.items():
        assert [(s, c) for s, (c, _, _) in PRESET_TABLE[real].items()] == [
            (s, c) for s, (c, _, _) in PRESET_TABLE[tiny].items()
        ]
    assert preset_slots("emotion-llama") == SLOTS == ("global", "local", "temporal", "audio")
    assert preset_slots("affectgpt") == ("frames", "audio") and preset_slots("emotion-llama-v2") == (
        "global",
        "whisper",
    )
    assert all(c in CLASSES for row in PRESET_TABLE.values() for c, _, _ in row.values())
    assert INPUT_KEY["frames"] == "frames" and INPUT_KEY["whisper"] == INPUT_KEY["audio"] == "audio"


def test_real_sources_by_hub_name_and_overrides():
    assert preset_sources("affectgpt") == {
        "frames": "openai/clip-vit-large-patch14",
        "audio": "TencentGameMate/chinese-hubert-large",
    }
    assert preset_sources("emotion-llama-v2", {"whisper": "/models/whisper"}) == {
        "global": "Salesforce/blip2-opt-2.7b",
        "whisper": "/models/whisper",
    }
    with pytest.raises(ValueError, match="unknown encoder slot 'whisper' for preset 'affectgpt'"):
        preset_sources("affectgpt", {"whisper": "/x"})
    with pytest.raises(ValueError, match="needs tiny_dir"):
        preset_sources("tiny-affectgpt")


def test_a_slot_shared_by_two_presets_has_one_spec_id(tmp_path):
    cfgs = {p: ExtractConfig(preset=p) for p in ("tiny", "tiny-affectgpt", "tiny-emotion-llama-v2")}
    specs = {}
    for p, cfg in cfgs.items():
        decode = decode_config(cfg)
        slots = [s for s in ("audio", "global") if s in cfg.slots()]
        opts = {s: encoder_options(cfg, decode, s) for s in slots}
        specs[p] = {
            s: e.spec.id for s, e in load_encoders(p, slots, device="cpu", tiny_dir=tmp_path, options=opts).items()
        }
    assert specs["tiny-affectgpt"]["audio"] == specs["tiny"]["audio"]
    assert specs["tiny-emotion-llama-v2"]["global"] == specs["tiny"]["global"]
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == ["audio", "global"]


def test_job_config_follows_the_preset():
    assert ExtractConfig().encoders == "global,local,temporal,audio"  # the default preset, unchanged
    assert ExtractConfig(preset="tiny-affectgpt").slots() == ["frames", "audio"]
    assert ExtractConfig(preset="emotion-llama-v2", encoders="whisper").slots() == ["whisper"]
    with pytest.raises(ValueError, match="unknown slots \\['local'\\] for preset 'affectgpt'"):
        ExtractConfig(preset="affectgpt", encoders="frames,local")
    with pytest.raises(ValueError, match="--checkpoint 'frames=/x'"):
        ExtractConfig(preset="emotion-llama", checkpoint=["frames=/x"])
    cfg = parse_config(["--preset", "affectgpt", "--frames", "16", "--checkpoint", "frames=/clip"])
    assert cfg.overrides() == {"frames": "/clip"} and cfg.saved()["frames"] == 16
    opts = encoder_options(cfg, decode_config(cfg), "frames")
    assert opts["frames"] == 16 and opts["upstream"]["frames"]["n_frames"] == 16
    v2 = parse_config(["--preset", "emotion-llama-v2", "--whisper-pooling", "none"])
    assert encoder_options(v2, decode_config(v2), "whisper")["pooling"] == "none"
    assert "pooling" not in encoder_options(ExtractConfig(preset="emotion-llama-v2"), decode_config(v2), "whisper")
