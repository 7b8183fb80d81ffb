"""Demo clips decoded once into all four encoders' inputs, through the tiny encoders;
bad media fails only the modalities it breaks."""

from __future__ import annotations

import av
import numpy as np
import pytest

from featstore.encoders import SLOTS, load_encoders
from featstore.manifest import Sample
from featstore.media.clip import DecodeConfig, collate, decode_clip, failures_of
from featstore.media.faces import FaceCropConfig
from tests.load import busy_cores

N = 3


@pytest.fixture(scope="module")
def demo(demo_store):
    return demo_store[1]


@pytest.fixture(scope="module")
def decoded(demo):
    cfg = DecodeConfig()
    return [decode_clip(s, demo.root, SLOTS, cfg) for s in list(demo)[:N]]


def test_inputs_have_encoder_shapes(decoded):
    c = decoded[0]
    assert not c.failures
    assert c.arrays["frame"].dtype == np.uint8 and c.arrays["frame"].ndim == 3
    assert c.arrays["faces"].shape == (8, 224, 224, 3)
    assert c.arrays["face_frames"].shape == (16, 224, 224, 3)
    assert c.arrays["audio"].dtype == np.float32 and len(c.arrays["audio"]) == 32000  # 2 s at 16 kHz
    assert c.faces_found == c.faces_total > 0


def test_peak_frame_is_used(demo, decoded):
    sample = list(demo)[1]
    with av.open(str(demo.root / sample.video)) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    np.testing.assert_array_equal(decoded[1].arrays["frame"], frames[sample.extra["peak_index"]])


def test_each_tiny_encoder_on_decoded_demo_clips(decoded, tiny):
    cfg = DecodeConfig()
    encoders = load_encoders(
        "tiny", device="cpu", tiny_dir=tiny["global"].parent, options={s: {"upstream": cfg.upstream(s)} for s in SLOTS}
    )
    for slot, enc in encoders.items():
        ids, batch = collate(decoded, slot)
        out = enc(batch)
        feats = out[slot]
        assert ids == [c.sample_id for c in decoded]
        assert feats.shape == (N, *enc.spec.shape) and np.isfinite(feats.astype(np.float32)).all()
        assert not np.array_equal(feats[0], feats[1])  # different clips, different features
        assert enc.spec.preprocess["upstream"] == cfg.upstream(slot)


def test_decode_and_encode_are_identical_under_load(demo, decoded, tiny):
    """decord, PyAV audio, OpenCV face crops and the tiny encoders' torch CPU
    kernels give the same bytes while every core is busy (issue 17)."""
    cfg = DecodeConfig()
    sample = list(demo)[0]
    encoders = load_encoders(
        "tiny", device="cpu", tiny_dir=tiny["global"].parent, options={s: {"upstream": cfg.upstream(s)} for s in SLOTS}
    )
    want = {slot: enc(collate(decoded[:1], slot)[1])[slot] for slot, enc in encoders.items()}
    with busy_cores():
        for _ in range(4):
            clip = decode_clip(sample, demo.root, SLOTS, cfg)
            for key, arr in decoded[0].arrays.items():
                np.testing.assert_array_equal(clip.arrays[key], arr, err_msg=key)
            for slot, enc in encoders.items():
                np.testing.assert_array_equal(enc(collate([clip], slot)[1])[slot], want[slot], err_msg=slot)


def test_upstream_changes_with_decode_settings():
    a, b = DecodeConfig(), DecodeConfig(local_frames=4)
    assert a.upstream("local") != b.upstream("local")
    for face in (FaceCropConfig(detect_every=1), FaceCropConfig(detect_side=0)):  # face detection settings
        c = DecodeConfig(face=face)
        assert a.upstream("local") != c.upstream("local") and a.upstream("temporal") != c.upstream("temporal")
    assert a.upstream("global") == b.upstream("global") and a.upstream("audio") == b.upstream("audio")
    with pytest.raises(ValueError, match="'last'"):
        DecodeConfig(global_frame="last")


def test_broken_audio_keeps_visual_features(demo, tmp_path):
    sample = list(demo)[0]
    silent = tmp_path / "silent.mp4"
    with av.open(str(demo.root / sample.video)) as src, av.open(str(silent), "w") as dst:
        stream = dst.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 224, 224, "yuv420p"
        for frame in src.decode(video=0):
            img = frame.to_ndarray(format="rgb24")[:224, :224]
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")):
                dst.mux(packet)
        for packet in stream.encode():
            dst.mux(packet)
    clip = decode_clip(Sample("silent", "silent.mp4"), tmp_path, SLOTS, DecodeConfig())
    assert set(clip.failures) == {"audio"} and clip.failures["audio"][0] == "decode_audio"
    assert "no_audio_stream" in clip.failures["audio"][1]
    assert failures_of([clip], "audio") == {"silent": clip.failures["audio"]}
    assert collate([clip], "audio") == ([], {}) and collate([clip], "local")[0] == ["silent"]


def test_unreadable_clip_fails_every_slot(tmp_path):
    (tmp_path / "bad.mp4").write_text("not a video")
    clip = decode_clip(Sample("bad", "bad.mp4"), tmp_path, SLOTS, DecodeConfig())
    assert set(clip.failures) == set(SLOTS)
    assert all("unreadable" in reason for _, reason in clip.failures.values())


def test_sample_with_a_manifest_error_fails_every_slot_without_decoding(demo):
    """A sample the manifest found unusable is never decoded, even when a real clip sits at its path."""
    good = list(demo)[0]
    sample = Sample.from_dict({**good.to_dict(), "error": "cannot read video file x.mp4: PermissionError: denied"})
    clip = decode_clip(sample, demo.root, SLOTS, DecodeConfig())
    assert clip.arrays == {} and clip.faces_total == 0
    assert clip.failures == {s: ("manifest", "cannot read video file x.mp4: PermissionError: denied") for s in SLOTS}
