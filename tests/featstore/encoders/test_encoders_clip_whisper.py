"""The AffectGPT frames encoder (CLIP) and the Emotion-LLaMA-v2 whisper encoder on tiny real
checkpoints: equal to transformers called directly, pooling, layouts, batch independence, specs."""

from __future__ import annotations

import math
import shutil

import numpy as np
import pytest
import torch
from transformers import (
    CLIPModel,
    CLIPVisionModel,
    WhisperFeatureExtractor,
    WhisperForConditionalGeneration,
    WhisperModel,
)
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

from featstore.encoders import ClipFramesEncoder, WhisperAudioEncoder, build_tiny_checkpoints
from featstore.errors import CheckpointError

WIDTH = 32  # hidden size of the tiny models


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return build_tiny_checkpoints(tmp_path_factory.mktemp("tiny-new"), slots=("frames", "whisper", "audio"))


@pytest.fixture(scope="module")
def clip(ckpt):
    return ClipFramesEncoder(str(ckpt["frames"]), device="cpu", output_dtype="float32")


@pytest.fixture(scope="module")
def whisper(ckpt):
    return WhisperAudioEncoder(str(ckpt["whisper"]), device="cpu", output_dtype="float32")


def frame_clips(n, f=8, h=300, w=200, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, f, h, w, 3), dtype=np.uint8)


def waves(lengths, seed=0):
    rng = np.random.default_rng(seed)
    audio = np.zeros((len(lengths), max(lengths)), dtype=np.float32)
    for i, n in enumerate(lengths):
        audio[i, :n] = rng.standard_normal(n).astype(np.float32) * 0.1
    return {"audio": audio, "audio_len": np.asarray(lengths, dtype=np.int64)}


def test_frames_equal_clip_vision_model_pooler_output_per_frame(clip, ckpt):
    x = frame_clips(2)
    pixels = CLIPImageProcessorPil()(images=list(x.reshape(16, 300, 200, 3)), return_tensors="pt")["pixel_values"]
    np.testing.assert_array_equal(clip.preprocess(x.reshape(16, 300, 200, 3)).numpy(), pixels.numpy())
    model = CLIPVisionModel.from_pretrained(ckpt["frames"]).eval()
    with torch.inference_mode():
        ref = model(pixel_values=pixels).pooler_output.reshape(2, 8, WIDTH).numpy()
    out = clip({"sample_id": np.array(["a", "b"]), "frames": x})
    assert set(out) == {"sample_id", "frames"} and out["frames"].shape == (2, 8, WIDTH) == (2, *clip.spec.shape)
    np.testing.assert_allclose(out["frames"], ref, rtol=0, atol=1e-5)
    # The CLS row after post_layernorm is what pooler_output is: checked against the full CLIP too.
    full = CLIPModel.from_pretrained(ckpt["frames"]).vision_model.eval()
    with torch.inference_mode():
        cls = full(pixel_values=pixels).last_hidden_state[:, 0]
        np.testing.assert_allclose(out["frames"].reshape(16, WIDTH), full.post_layernorm(cls).numpy(), atol=1e-5)


def test_frames_at_the_encoders_size_are_not_resized_again(clip):
    x = frame_clips(1, h=224, w=224, seed=3)
    flat = x.reshape(8, 224, 224, 3)
    x_pixels = clip.preprocess(flat).numpy()
    mean, std = np.array(clip.image_mean, np.float32), np.array(clip.image_std, np.float32)
    direct = (((flat.astype(np.float64) / 255).astype(np.float32) - mean) / std).transpose(0, 3, 1, 2)
    np.testing.assert_array_equal(x_pixels, direct)


@pytest.mark.parametrize("pooling", ["mean", "none"])
def test_whisper_equals_the_encoder_of_whisper_model_on_its_feature_extractor(ckpt, pooling):
    enc = WhisperAudioEncoder(str(ckpt["whisper"]), device="cpu", output_dtype="float32", pooling=pooling)
    batch = waves([16000, 4321, 30 * 16000 + 999])  # 1 s, a fraction of a second, longer than the window
    fe = WhisperFeatureExtractor(feature_size=128)
    encoder = WhisperModel.from_pretrained(ckpt["whisper"]).get_encoder().eval()
    out = enc(dict(batch))["whisper"]
    assert out.shape == (3, *enc.spec.shape) == ((3, WIDTH) if pooling == "mean" else (3, 1500, WIDTH))
    for i, n in enumerate(batch["audio_len"]):
        mel = fe(batch["audio"][i, :n], sampling_rate=16000, return_tensors="pt")["input_features"]
        np.testing.assert_array_equal(enc.preprocess(batch["audio"][i, :n]).numpy(), mel.numpy())
        with torch.inference_mode():
            frames = encoder(input_features=mel).last_hidden_state[0]
        real = min(1500, math.ceil(int(n) / 320))
        ref = frames[:real].mean(0) if pooling == "mean" else frames
        np.testing.assert_allclose(out[i], ref.numpy(), rtol=0, atol=1e-5)
    assert [enc.real_frames(int(n)) for n in batch["audio_len"]] == [50, 14, 1500]


def test_whisper_batch_composition_does_not_change_a_clips_features(ckpt):
    enc = WhisperAudioEncoder(str(ckpt["whisper"]), device="cpu", output_dtype="float32", clips_per_forward=2)
    batch = waves([9000, 5000])
    together = enc(dict(batch))["whisper"]
    for i in range(2):
        n = int(batch["audio_len"][i])
        alone = {"audio": batch["audio"][i : i + 1, :n], "audio_len": batch["audio_len"][i : i + 1]}
        np.testing.assert_allclose(enc(alone)["whisper"][0], together[i], rtol=0, atol=1e-6)


def test_frames_batch_composition_does_not_change_a_clips_features(clip):
    x = frame_clips(2, seed=4)
    together = clip({"frames": x})["frames"]
    for i in range(2):
        np.testing.assert_array_equal(clip({"frames": x[i : i + 1]})["frames"][0], together[i])


def test_vision_only_and_full_clip_checkpoints_give_one_spec(clip, ckpt, tmp_path):
    CLIPVisionModel.from_pretrained(ckpt["frames"]).save_pretrained(tmp_path / "vision")
    other = ClipFramesEncoder(str(tmp_path / "vision"), device="cpu", output_dtype="float32")
    assert other.spec.id == clip.spec.id and other.spec.weights == clip.spec.weights
    x = frame_clips(1, seed=2)
    np.testing.assert_array_equal(other({"frames": x})["frames"], clip({"frames": x})["frames"])


def test_whisper_model_and_full_checkpoints_give_one_spec_and_the_decoder_is_not_hashed(whisper, ckpt, tmp_path):
    WhisperModel.from_pretrained(ckpt["whisper"]).save_pretrained(tmp_path / "model")
    assert WhisperAudioEncoder(str(tmp_path / "model"), device="cpu", output_dtype="float32").spec.id == whisper.spec.id
    full = WhisperForConditionalGeneration.from_pretrained(ckpt["whisper"])
    with torch.no_grad():
        full.model.decoder.layers[0].fc1.weight.add_(1.0)
    full.save_pretrained(tmp_path / "decoder_changed")
    assert WhisperAudioEncoder(str(tmp_path / "decoder_changed"), device="cpu", output_dtype="float32").spec.id == (
        whisper.spec.id
    )
    with torch.no_grad():
        full.model.encoder.layers[0].fc1.weight.add_(1.0)
    full.save_pretrained(tmp_path / "encoder_changed")
    changed = WhisperAudioEncoder(str(tmp_path / "encoder_changed"), device="cpu", output_dtype="float32")
    assert changed.spec.weights != whisper.spec.weights


def test_settings_that_change_the_bytes_change_the_id(clip, whisper, ckpt):
    ids = {clip.spec.id, whisper.spec.id}
    for kwargs in ({"frames": 4}, {"resample": "bilinear"}, {"image_mean": (0.5, 0.5, 0.5)}, {"clips_per_forward": 2}):
        ids.add(ClipFramesEncoder(str(ckpt["frames"]), device="cpu", output_dtype="float32", **kwargs).spec.id)
    for kwargs in ({"pooling": "none"}, {"dtype": "bfloat16"}, {"upstream": {"audio": "other"}}):
        ids.add(WhisperAudioEncoder(str(ckpt["whisper"]), device="cpu", output_dtype="float32", **kwargs).spec.id)
    assert len(ids) == 9
    assert (
        whisper.spec.pooling == "mean_real_audio_frames" and "ceil(n / 320)" in whisper.spec.preprocess["pooled_frames"]
    )
    frame_level = WhisperAudioEncoder(str(ckpt["whisper"]), device="cpu", pooling="none")
    assert frame_level.spec.pooling == "none" and frame_level.spec.shape == (1500, WIDTH)
    assert clip.spec.encoder == "CLIPVisionModel" and whisper.spec.encoder == "WhisperEncoder"


def test_bad_batches_checkpoints_and_parameters_are_named(clip, whisper, ckpt):
    with pytest.raises(ValueError, match="4 frames per clip; expected 8"):
        clip({"frames": frame_clips(1, f=4)})
    with pytest.raises(KeyError, match="frames"):
        clip({"frame": frame_clips(1)[:, 0]})
    with pytest.raises(ValueError, match="row 1"):
        whisper({"audio": np.zeros((2, 1000), np.float32), "audio_len": np.array([1000, 0])})
    with pytest.raises(CheckpointError, match="model_type 'hubert'"):
        WhisperAudioEncoder(str(ckpt["audio"]), device="cpu")
    with pytest.raises(CheckpointError, match="model_type 'whisper'; CLIPVisionModel needs"):
        ClipFramesEncoder(str(ckpt["whisper"]), device="cpu")
    with pytest.raises(ValueError, match="pooling"):
        WhisperAudioEncoder(str(ckpt["whisper"]), device="cpu", pooling="max")
    with pytest.raises(ValueError, match="image_size 336"):
        ClipFramesEncoder(str(ckpt["frames"]), device="cpu", image_size=336)


def test_frames_and_whisper_checkpoint_folders_can_be_copied(clip, ckpt, tmp_path):
    copy = shutil.copytree(ckpt["frames"], tmp_path / "copy")
    other = ClipFramesEncoder(str(copy), device="cpu", output_dtype="float32")
    assert other.spec.id == clip.spec.id and other.spec.source != clip.spec.source
