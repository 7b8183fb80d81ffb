"""Encoder specs and checkpoint loading: what changes an id, both BLIP-2 layouts, clear errors, tiny presets."""

from __future__ import annotations

import filecmp

import huggingface_hub.constants
import numpy as np
import pytest
import torch
from transformers import Blip2ForConditionalGeneration, HubertModel, VideoMAEForPreTraining, ViTMAEForPreTraining

from featstore.encoders import (
    EvaGlobalEncoder,
    HubertAudioEncoder,
    MaeLocalEncoder,
    VideoMaeTemporalEncoder,
    build_tiny_checkpoints,
    load_encoders,
    preset_sources,
)
from featstore.errors import CheckpointError, CheckpointNotFoundError

CLASSES = {
    "global": EvaGlobalEncoder,
    "local": MaeLocalEncoder,
    "temporal": VideoMaeTemporalEncoder,
    "audio": HubertAudioEncoder,
}
SAVED_AS = {
    "global": Blip2ForConditionalGeneration,
    "local": ViTMAEForPreTraining,
    "temporal": VideoMAEForPreTraining,
    "audio": HubertModel,
}
COMMON_CHANGES = [
    ("dtype", "bfloat16"),
    ("output_dtype", "float32"),
    ("attn_implementation", "eager"),
    ("upstream", {"frame_selection": "peak"}),
]
CHANGES = {
    "global": [
        ("image_size", 224),
        ("resample", "bilinear"),
        ("image_mean", (0.5, 0.5, 0.5)),
        ("image_std", (0.5, 0.5, 0.5)),
        ("clips_per_forward", 4),
    ],
    "local": [
        ("resample", "bicubic"),
        ("image_mean", (0.5, 0.5, 0.5)),
        ("image_std", (0.5, 0.5, 0.5)),
        ("include_cls", True),
        ("frames", 8),
        ("clips_per_forward", 4),
    ],
    "temporal": [
        ("shortest_edge", 256),
        ("resample", "bicubic"),
        ("image_mean", (0.5, 0.5, 0.5)),
        ("image_std", (0.5, 0.5, 0.5)),
        ("clips_per_forward", 4),
    ],
    "audio": [("normalize", False), ("sample_rate", 8000)],
}


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    """Slot -> folder of the tiny checkpoints, built once per session."""
    return build_tiny_checkpoints(tmp_path_factory.mktemp("tiny-encoders"))


@pytest.mark.parametrize("slot", list(CLASSES))
def test_every_preprocessing_parameter_changes_the_id(tiny, slot):
    base = CLASSES[slot](str(tiny[slot]), device="cpu").spec
    seen = {base.id}
    for param, value in COMMON_CHANGES + CHANGES[slot]:
        spec = CLASSES[slot](str(tiny[slot]), device="cpu", **{param: value}).spec
        assert spec.weights == base.weights
        assert spec.id not in seen, f"{slot}: changing {param} to {value!r} did not change the spec id"
        seen.add(spec.id)


@pytest.mark.parametrize("slot", list(CLASSES))
def test_changing_one_weight_changes_the_fingerprint_and_id(tiny, tmp_path, slot):
    model = SAVED_AS[slot].from_pretrained(tiny[slot])
    name, tensor = next(
        (n, t)
        for n, t in model.state_dict().items()
        if n.endswith("layer_norm.weight") or n.endswith("layernorm.weight") or n.endswith("post_layernorm.weight")
    )
    with torch.no_grad():
        tensor[0] += 1e-3
    model.save_pretrained(tmp_path / "perturbed")
    before = CLASSES[slot](str(tiny[slot]), device="cpu").spec
    after = CLASSES[slot](str(tmp_path / "perturbed"), device="cpu").spec
    assert after.weights != before.weights and after.id != before.id, name


def test_global_spec_ignores_weights_outside_the_vision_tower(tiny, tmp_path):
    model = Blip2ForConditionalGeneration.from_pretrained(tiny["global"])
    with torch.no_grad():
        model.query_tokens += 1.0
    model.save_pretrained(tmp_path / "other-qformer")
    assert (
        EvaGlobalEncoder(str(tmp_path / "other-qformer"), device="cpu").spec.id
        == EvaGlobalEncoder(str(tiny["global"]), device="cpu").spec.id
    )


def test_vision_only_and_full_blip2_checkpoints_give_the_same_encoder(tiny, tmp_path):
    full = EvaGlobalEncoder(str(tiny["global"]), device="cpu", output_dtype="float32")
    Blip2ForConditionalGeneration.from_pretrained(tiny["global"]).vision_model.save_pretrained(tmp_path / "vision")
    vision = EvaGlobalEncoder(str(tmp_path / "vision"), device="cpu", output_dtype="float32")
    assert vision.spec.id == full.spec.id
    frame = np.random.default_rng(1).integers(0, 256, (1, 64, 96, 3), dtype=np.uint8)
    np.testing.assert_array_equal(vision({"frame": frame})["global"], full({"frame": frame})["global"])


def test_full_blip2_checkpoint_sharded_reads_only_vision_shards(tiny, tmp_path):
    model = Blip2ForConditionalGeneration.from_pretrained(tiny["global"])
    model.save_pretrained(tmp_path / "sharded", max_shard_size="20KB")
    assert (tmp_path / "sharded" / "model.safetensors.index.json").is_file()
    enc = EvaGlobalEncoder(str(tmp_path / "sharded"), device="cpu")
    assert enc.spec.id == EvaGlobalEncoder(str(tiny["global"]), device="cpu").spec.id


def test_missing_local_path_names_slot_source_and_remedy(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(CheckpointNotFoundError) as e:
        load_encoders("emotion-llama", ["local"], overrides={"local": str(missing)}, device="cpu")
    msg = str(e.value)
    assert "local encoder" in msg and str(missing) in msg and "--local-dir" in msg and "HF_HOME" in msg


def test_a_file_or_a_folder_without_config_is_not_a_checkpoint(tmp_path):
    (tmp_path / "weights.bin").write_bytes(b"")
    with pytest.raises(CheckpointNotFoundError, match="folder"):
        HubertAudioEncoder(str(tmp_path / "weights.bin"), device="cpu")
    with pytest.raises(CheckpointNotFoundError, match="config.json"):
        HubertAudioEncoder(str(tmp_path), device="cpu")


def test_hub_name_offline_and_not_cached_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    for slot in ("global", "audio"):
        with pytest.raises(CheckpointNotFoundError) as e:
            load_encoders("emotion-llama", [slot], device="cpu")
        assert f"{slot} encoder" in str(e.value) and preset_sources("emotion-llama")[slot] in str(e.value)
        assert "huggingface-cli download" in str(e.value) and e.value.__cause__ is None


def test_wrong_kind_of_checkpoint_is_refused(tiny):
    with pytest.raises(CheckpointError, match="model_type 'hubert'"):
        EvaGlobalEncoder(str(tiny["audio"]), device="cpu")
    with pytest.raises(CheckpointError, match="model_type 'hubert'; ViTMAEModel needs 'vit_mae'"):
        MaeLocalEncoder(str(tiny["audio"]), device="cpu")


def test_checkpoint_missing_a_weight_is_refused_not_filled_at_random(tiny, tmp_path):
    model = HubertModel.from_pretrained(tiny["audio"])
    state = {k: v for k, v in model.state_dict().items() if k != "encoder.layer_norm.weight"}
    model.config.save_pretrained(tmp_path)
    torch.save(state, tmp_path / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="encoder.layer_norm.weight"):
        HubertAudioEncoder(str(tmp_path), device="cpu")


def test_legacy_bin_checkpoints_load_to_the_same_spec(tiny, tmp_path):
    # chinese-hubert-large ships pytorch_model.bin with weight-norm tensors named weight_g / weight_v.
    model = HubertModel.from_pretrained(tiny["audio"])
    legacy = {
        k.replace("parametrizations.weight.original0", "weight_g").replace(
            "parametrizations.weight.original1", "weight_v"
        ): v
        for k, v in model.state_dict().items()
    }
    assert any(k.endswith("weight_g") for k in legacy)
    model.config.save_pretrained(tmp_path / "hubert")
    torch.save(legacy, tmp_path / "hubert" / "pytorch_model.bin")
    assert (
        HubertAudioEncoder(str(tmp_path / "hubert"), device="cpu").spec.id
        == HubertAudioEncoder(str(tiny["audio"]), device="cpu").spec.id
    )
    full = Blip2ForConditionalGeneration.from_pretrained(tiny["global"])
    full.config.save_pretrained(tmp_path / "blip2")
    torch.save(full.state_dict(), tmp_path / "blip2" / "pytorch_model.bin")
    assert (
        EvaGlobalEncoder(str(tmp_path / "blip2"), device="cpu").spec.id
        == EvaGlobalEncoder(str(tiny["global"]), device="cpu").spec.id
    )


def test_bad_parameters_are_named(tiny):
    with pytest.raises(ValueError, match="compute dtype 'float64'"):
        MaeLocalEncoder(str(tiny["local"]), device="cpu", dtype="float64")
    with pytest.raises(ValueError, match="image_size 230"):
        EvaGlobalEncoder(str(tiny["global"]), device="cpu", image_size=230)
    with pytest.raises(ValueError, match="resample 'cubic'"):
        VideoMaeTemporalEncoder(str(tiny["temporal"]), device="cpu", resample="cubic")
    with pytest.raises(ValueError, match="unknown encoder slot 'video'"):
        load_encoders("tiny", ["video"], tiny_dir=tiny["global"].parent)
    with pytest.raises(ValueError, match="unknown encoder preset"):
        preset_sources("emotion_llama")


def test_tiny_checkpoints_are_byte_identical_and_idempotent(tiny, tmp_path):
    again = build_tiny_checkpoints(tmp_path / "again")
    for slot, folder in tiny.items():
        files = sorted(p.name for p in folder.iterdir())
        match, mismatch, errors = filecmp.cmpfiles(folder, again[slot], files, shallow=False)
        assert not mismatch and not errors, (slot, mismatch, errors)
    stamp = {s: (f / "config.json").stat().st_mtime_ns for s, f in again.items()}
    assert build_tiny_checkpoints(tmp_path / "again") == again
    assert {s: (f / "config.json").stat().st_mtime_ns for s, f in again.items()} == stamp


def test_tiny_rebuilds_a_stale_folder(tmp_path):
    first = build_tiny_checkpoints(tmp_path)
    (first["audio"] / "featstore_tiny.json").write_text('{"recipe": "old"}')
    (first["audio"] / "model.safetensors").write_bytes(b"junk")
    build_tiny_checkpoints(tmp_path)
    HubertAudioEncoder(str(first["audio"]), device="cpu")


def test_emotion_llama_sources_and_overrides():
    assert preset_sources("emotion-llama") == {
        "global": "Salesforce/blip2-opt-2.7b",
        "local": "facebook/vit-mae-large",
        "temporal": "MCG-NJU/videomae-large",
        "audio": "TencentGameMate/chinese-hubert-large",
    }
    assert preset_sources("emotion-llama", {"audio": "/ckpt/hubert"})["audio"] == "/ckpt/hubert"
    with pytest.raises(ValueError, match="tiny_dir"):
        preset_sources("tiny")
