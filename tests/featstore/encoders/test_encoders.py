"""The four encoders on tiny real checkpoints: shapes, equality with transformers, determinism, batch independence."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import (
    Blip2ForConditionalGeneration,
    HubertModel,
    VideoMAEModel,
    ViTMAEModel,
    Wav2Vec2FeatureExtractor,
)
from transformers.models.blip.image_processing_pil_blip import BlipImageProcessorPil
from transformers.models.videomae.image_processing_pil_videomae import VideoMAEImageProcessorPil
from transformers.models.vit.image_processing_pil_vit import ViTImageProcessorPil

from featstore.encoders import (
    MaeLocalEncoder,
    load_encoders,
)
from featstore.encoders.pixels import IMAGENET_MEAN, IMAGENET_STD

WIDTH = 32  # hidden size of every tiny model


@pytest.fixture(scope="session")
def encoders(tiny):
    """The four tiny encoders on the CPU, fp32 compute, fp32 output (for exact comparisons)."""
    opts = {s: {"output_dtype": "float32"} for s in tiny}
    return load_encoders("tiny", device="cpu", tiny_dir=tiny["global"].parent, options=opts)


def frames(n, h=300, w=200, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), dtype=np.uint8)


def clips(n, f, size=224, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, f, size, size, 3), dtype=np.uint8)


def waves(lengths, seed=0):
    rng = np.random.default_rng(seed)
    audio = np.zeros((len(lengths), max(lengths)), dtype=np.float32)
    for i, n in enumerate(lengths):
        audio[i, :n] = rng.standard_normal(n).astype(np.float32) * 0.1
    return {"audio": audio, "audio_len": np.asarray(lengths, dtype=np.int64)}


def batch_for(slot, n, seed=0):
    if slot == "global":
        return {"frame": frames(n, seed=seed)}
    if slot == "local":
        return {"faces": clips(n, 3, seed=seed)}
    if slot == "temporal":
        return {"face_frames": clips(n, 16, seed=seed)}
    return waves([4000 + 1217 * i for i in range(n)], seed=seed)


@pytest.mark.parametrize(
    "slot,shape", [("global", (1025, WIDTH)), ("local", (WIDTH,)), ("temporal", (WIDTH,)), ("audio", (WIDTH,))]
)
def test_output_shape_dtype_finite_and_columns_pass_through(encoders, slot, shape):
    batch = {"sample_id": np.array(["a", "b"]), **batch_for(slot, 2)}
    out = encoders[slot](batch)
    assert set(out) == {"sample_id", slot}
    assert out[slot].shape == (2, *shape) and out[slot].dtype == np.float32
    assert np.isfinite(out[slot]).all() and out[slot].std() > 1e-3
    assert encoders[slot].spec.shape == shape
    np.testing.assert_array_equal(out["sample_id"], batch["sample_id"])


def test_default_output_is_float16(tiny):
    enc = MaeLocalEncoder(str(tiny["local"]), device="cpu")
    out = enc({"faces": clips(1, 2)})["local"]
    assert out.dtype == np.float16 and enc.spec.dtype == "float16"
    assert enc.spec.preprocess["compute_dtype"] == "float32"


def test_global_equals_transformers_on_blip_processor_pixels(encoders, tiny):
    enc, x = encoders["global"], frames(2)
    proc = BlipImageProcessorPil(size={"height": 448, "width": 448})
    pixels = proc(images=list(x), return_tensors="pt")["pixel_values"]
    np.testing.assert_array_equal(enc.preprocess(x).numpy(), pixels.numpy())  # same pixels, bit for bit
    model = Blip2ForConditionalGeneration.from_pretrained(tiny["global"]).vision_model.eval()
    with torch.inference_mode():
        ref = model(pixel_values=pixels, interpolate_pos_encoding=True).last_hidden_state.numpy()
    np.testing.assert_allclose(enc({"frame": x})["global"], ref, rtol=0, atol=1e-5)


def test_local_equals_transformers_mean_over_tokens_and_frames(encoders, tiny):
    enc, x = encoders["local"], clips(2, 3)
    proc = ViTImageProcessorPil(
        size={"height": 224, "width": 224}, resample=2, image_mean=IMAGENET_MEAN, image_std=IMAGENET_STD
    )
    pixels = proc(images=list(x.reshape(6, 224, 224, 3)), return_tensors="pt")["pixel_values"]
    np.testing.assert_array_equal(enc.preprocess(x.reshape(6, 224, 224, 3)).numpy(), pixels.numpy())
    model = ViTMAEModel.from_pretrained(tiny["local"], mask_ratio=0.0).eval()
    with torch.inference_mode():
        tokens = model(pixel_values=pixels, noise=torch.arange(196.0).expand(6, -1)).last_hidden_state
    ref = tokens[:, 1:].mean(1).reshape(2, 3, -1).mean(1).numpy()
    np.testing.assert_allclose(enc({"faces": x})["local"], ref, rtol=0, atol=1e-5)


def test_local_token_order_is_fixed_without_randomness(tiny):
    # With random noise (the library default) the tokens come out shuffled: same set, other order.
    enc = MaeLocalEncoder(str(tiny["local"]), device="cpu", include_cls=True, output_dtype="float32")
    pixels = enc.preprocess(clips(1, 2).reshape(2, 224, 224, 3))
    with torch.inference_mode():
        fixed = enc.tokens(pixels)
        shuffled = enc.model(pixel_values=pixels).last_hidden_state
    assert not torch.equal(fixed, shuffled)
    np.testing.assert_allclose(fixed.mean(1).numpy(), shuffled.mean(1).numpy(), atol=1e-5)
    assert torch.equal(enc.tokens(pixels), fixed)


def test_temporal_equals_transformers_mean_over_tokens(encoders, tiny):
    enc, x = encoders["temporal"], clips(2, 16, size=240)
    proc = VideoMAEImageProcessorPil(image_mean=IMAGENET_MEAN, image_std=IMAGENET_STD)
    pixels = proc.preprocess([list(v) for v in x], return_tensors="pt")["pixel_values"]
    np.testing.assert_array_equal(enc.preprocess(x).numpy(), pixels.numpy())
    model = VideoMAEModel.from_pretrained(tiny["temporal"]).eval()
    with torch.inference_mode():
        ref = model(pixel_values=pixels).last_hidden_state.mean(1).numpy()
    np.testing.assert_allclose(enc({"face_frames": x})["temporal"], ref, rtol=0, atol=1e-5)


def test_audio_equals_transformers_per_clip_at_its_own_length(encoders, tiny):
    enc, batch = encoders["audio"], waves([6000, 4500])
    model = HubertModel.from_pretrained(tiny["audio"]).eval()
    fe = Wav2Vec2FeatureExtractor(do_normalize=True, sampling_rate=16000, return_attention_mask=True)
    out = enc(dict(batch))["audio"]
    for i, n in enumerate(batch["audio_len"]):
        values = fe(batch["audio"][i, :n], sampling_rate=16000, return_tensors="pt")["input_values"]
        np.testing.assert_array_equal(enc.preprocess(batch["audio"][i, :n]).numpy(), values.numpy())
        with torch.inference_mode():
            ref = model(input_values=values).last_hidden_state.mean(1)[0].numpy()
        np.testing.assert_allclose(out[i], ref, rtol=0, atol=1e-5)


@pytest.mark.parametrize("slot", ["global", "local", "temporal", "audio"])
def test_batch_composition_does_not_change_a_clips_features(encoders, slot):
    together = encoders[slot](batch_for(slot, 2))[slot]
    for i in range(2):
        alone = {k: v[i : i + 1] for k, v in batch_for(slot, 2).items()}
        if slot == "audio":
            alone["audio"] = alone["audio"][:, : int(alone["audio_len"][0])]
        np.testing.assert_array_equal(encoders[slot](alone)[slot][0], together[i])


@pytest.mark.parametrize("slot", ["global", "local", "temporal", "audio"])
def test_same_weights_from_another_folder_give_same_id_and_bytes(encoders, tiny, tmp_path, slot):
    import shutil

    copy = shutil.copytree(tiny[slot], tmp_path / "copy")
    other = load_encoders(
        "tiny",
        [slot],
        overrides={slot: str(copy)},
        device="cpu",
        tiny_dir=tiny[slot].parent,
        options={slot: {"output_dtype": "float32"}},
    )[slot]
    assert other.spec.id == encoders[slot].spec.id and other.spec.source != encoders[slot].spec.source
    batch = batch_for(slot, 1, seed=5)
    np.testing.assert_array_equal(other(dict(batch))[slot], encoders[slot](dict(batch))[slot])


def test_bad_batches_are_refused_with_the_column_named(encoders):
    with pytest.raises(KeyError, match="frame"):
        encoders["global"]({"faces": clips(1, 1)})
    with pytest.raises(ValueError, match="uint8"):
        encoders["global"]({"frame": frames(1).astype(np.float32)})
    with pytest.raises(ValueError, match="16"):
        encoders["temporal"]({"face_frames": clips(1, 8)})
    with pytest.raises(ValueError, match="row 1"):
        encoders["audio"]({"audio": np.zeros((2, 1000), np.float32), "audio_len": np.array([1000, 100])})
    with pytest.raises(ValueError, match="frames"):
        MaeLocalEncoder.__call__(encoders["local"], {"faces": clips(1, 3)[:, :0]})
