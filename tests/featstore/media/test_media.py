"""Tests for featstore.media (video, audio, common) on real mp4/wav files made in tmp_path."""

from __future__ import annotations

import json
import pickle
import threading
import time
import wave
from pathlib import Path

import av
import numpy as np
import pytest
from scipy.signal import correlate

from featstore.demo.dataset import make_demo_dataset
from featstore.errors import (
    DecodeTimeout,
    FeatstoreError,
    MediaError,
    MediaTooShortError,
    NoAudioStreamError,
    NoVideoStreamError,
    UnreadableMediaError,
)
from featstore.manifest import Sample
from featstore.media import audio as audio_mod
from featstore.media import video as video_mod
from featstore.media.audio import AudioDecodeConfig, decode_audio
from featstore.media.common import check_cancel, media_paths
from featstore.media.video import FramePolicy, VideoDecodeConfig, decode_video, frame_indices

N_CLIPS, SECONDS, N_FRAMES = 3, 2.0, 50  # 25 fps
BACKENDS = ("decord", "pyav", "auto")
AAC_FRAME = 1024


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    """Three 2 s demo clips (H.264 + AAC) with their 16 kHz wavs and MERR annotations."""
    return make_demo_dataset(tmp_path_factory.mktemp("media") / "ds", n=N_CLIPS, seconds=SECONDS, audio_source="synth")


def _clip(demo: Path, i: int = 0) -> Path:
    return demo / "clips" / f"demo_{i:04d}.mp4"


def write_video(path: Path, frames: np.ndarray, fps: int = 25) -> Path:
    """Write RGB uint8 frames as a video-only H.264 mp4 (no audio track)."""
    with av.open(str(path), "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        for k, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts = k
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


def write_wav(path: Path, pcm: np.ndarray, rate: int) -> Path:
    """Write int16 samples [N] or [N, C] as a 16-bit PCM wav."""
    pcm = pcm.reshape(pcm.shape[0], -1 if pcm.ndim > 1 else 1)
    with wave.open(str(path), "wb") as f:
        f.setnchannels(pcm.shape[1])
        f.setsampwidth(2)
        f.setframerate(rate)
        f.writeframes(pcm.astype("<i2").tobytes())
    return path


def _gradient(n: int, size: int = 64) -> np.ndarray:
    ramp = np.linspace(0, 255, size, dtype=np.float32)
    rgb = np.stack(np.broadcast_arrays(ramp[None, :], ramp[:, None], np.full((size, size), 90.0)), -1)
    return np.repeat(rgb.astype(np.uint8)[None], n, axis=0)


# -- frame selection (pure) --


@pytest.mark.parametrize(
    "policy, length, peak, expected",
    [
        (FramePolicy("first"), 50, None, (0,)),
        (FramePolicy("middle"), 50, None, (25,)),
        (FramePolicy("middle"), 1, None, (0,)),
        (FramePolicy("peak"), 50, 21, (21,)),
        (FramePolicy("uniform", n_frames=4), 50, None, (6, 18, 31, 43)),
        (FramePolicy("uniform", n_frames=5), 5, None, (0, 1, 2, 3, 4)),
        (FramePolicy("uniform", n_frames=6), 3, None, (0, 0, 1, 1, 2, 2)),  # short: each frame repeated evenly
        (FramePolicy("uniform", n_frames=3), 1, None, (0, 0, 0)),
        (FramePolicy("videomae"), 100, None, tuple(range(0, 64, 4))),
        (FramePolicy("videomae"), 50, None, (*range(0, 50, 4), 48, 48, 48)),  # short: last frame repeated
        (FramePolicy("videomae"), 1, None, (0,) * 16),
        (FramePolicy("videomae", n_frames=4, stride=2), 7, None, (0, 2, 4, 6)),
    ],
)
def test_frame_indices(policy, length, peak, expected):
    selection = frame_indices(policy, length, peak)
    assert selection.indices == expected and selection.fallback is None and selection.policy == policy.kind


def test_peak_falls_back_to_middle_and_says_so():
    selection = frame_indices(FramePolicy("peak"), 51, None)
    assert selection.indices == (25,) and selection.policy == "middle" and "peak_index" in selection.fallback


def test_too_short_and_bad_counts():
    for policy in (FramePolicy("first"), FramePolicy("videomae"), FramePolicy("uniform", n_frames=2)):
        with pytest.raises(MediaTooShortError, match="0 frames") as info:
            frame_indices(policy, 0)
        assert info.value.stage == "decode_video" and info.value.reason == "too_short"
    with pytest.raises(MediaTooShortError, match="peak_index 50 needs 51 frames"):
        frame_indices(FramePolicy("peak"), 50, 50)
    for bad in (-1, 2.5, True):
        with pytest.raises(ValueError, match="num_frames"):
            frame_indices(FramePolicy("first"), bad)
    with pytest.raises(ValueError, match="peak_index"):
        frame_indices(FramePolicy("peak"), 10, -3)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"kind": "random"}, "kind"),
        ({"kind": "uniform"}, "needs n_frames"),
        ({"kind": "first", "n_frames": 2}, "1"),
        ({"kind": "middle", "stride": 2}, "stride"),
        ({"kind": "videomae", "stride": 0}, "stride"),
        ({"kind": "uniform", "n_frames": 0}, "n_frames"),
    ],
)
def test_policy_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        FramePolicy(**kwargs)


def test_configs_describe_themselves_stably():
    cfg = VideoDecodeConfig(FramePolicy("videomae"), backend="decord")
    d = cfg.to_dict()
    assert json.loads(json.dumps(d)) == d == VideoDecodeConfig(FramePolicy("videomae"), "decord").to_dict()
    assert d["policy"] == {"kind": "videomae", "n_frames": 16, "stride": 4, "pad": "repeat_last"}
    assert d["backend"] == "decord" and d["versions"]["decord"] and d["versions"]["av"]
    assert VideoDecodeConfig(FramePolicy("videomae", stride=2)).to_dict()["policy"] != d["policy"]
    a = AudioDecodeConfig().to_dict()
    assert json.loads(json.dumps(a)) == a and a["sample_rate"] == 16000 and a["resampler"]["rolloff"] == 0.99
    assert AudioDecodeConfig(max_seconds=3.0).to_dict() != a
    with pytest.raises(ValueError, match="backend"):
        VideoDecodeConfig(backend="opencv")
    for kwargs in (
        {"sample_rate": 0},
        {"max_seconds": -1.0},
        {"min_seconds": float("nan")},
        {"min_seconds": 2.0, "max_seconds": 1.0},
    ):
        with pytest.raises(ValueError):
            AudioDecodeConfig(**kwargs)


# -- video decoding --


@pytest.mark.parametrize("backend", BACKENDS)
def test_decode_shapes(demo, backend):
    got = decode_video(_clip(demo), VideoDecodeConfig(FramePolicy("videomae"), backend))
    assert got.frames.shape == (16, 224, 224, 3) and got.frames.dtype == np.uint8 and got.frames.flags.c_contiguous
    assert got.num_frames == N_FRAMES and got.fps == 25.0 and got.backend == ("pyav" if backend == "pyav" else "decord")
    assert np.array_equal(got.frames[-1], got.frames[12])  # padded with frame 48


def test_decord_and_pyav_agree_bit_for_bit(demo):
    every = VideoDecodeConfig(FramePolicy("uniform", n_frames=N_FRAMES), "decord")
    for i in range(N_CLIPS):
        a = decode_video(_clip(demo, i), every)
        b = decode_video(_clip(demo, i), VideoDecodeConfig(every.policy, "pyav"))
        assert a.selection.indices == tuple(range(N_FRAMES))
        assert np.array_equal(a.frames, b.frames), f"clip {i}: max diff {np.abs(a.frames - b.frames.astype(int)).max()}"
    # decord seeks for sparse indices; the frames must still be the ones a sequential decode gives
    sparse = VideoDecodeConfig(FramePolicy("uniform", n_frames=3), "decord")
    got = decode_video(_clip(demo, 1), sparse)
    full = decode_video(_clip(demo, 1), VideoDecodeConfig(every.policy, "pyav")).frames
    assert np.array_equal(got.frames, full[list(got.selection.indices)])


def test_peak_from_merr_annotation(demo):
    peaks = {k: v["peak_index"] for k, v in json.loads((demo / "MERR_demo.json").read_text()).items()}
    sample = Sample("demo_0002", "clips/demo_0002.mp4", extra={"peak_index": peaks["demo_0002"]})
    video_path, audio_path = media_paths(sample, demo)
    assert video_path == audio_path == _clip(demo, 2)
    cfg = VideoDecodeConfig(FramePolicy("peak"))
    got = decode_video(video_path, cfg, peak_index=sample.extra.get("peak_index"))
    full = decode_video(video_path, VideoDecodeConfig(FramePolicy("uniform", n_frames=N_FRAMES))).frames
    assert got.selection.indices == (peaks["demo_0002"],) and got.selection.fallback is None
    assert np.array_equal(got.frames[0], full[peaks["demo_0002"]])
    fallback = decode_video(video_path, cfg)
    assert fallback.selection.policy == "middle" and np.array_equal(fallback.frames[0], full[25])


def test_auto_falls_back_to_pyav_when_decord_fails(demo, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("Error reading clip")  # what decord raises for a file it cannot open

    expected = decode_video(_clip(demo), VideoDecodeConfig(FramePolicy("videomae"), "decord")).frames
    monkeypatch.setattr(video_mod.decord, "VideoReader", broken)
    got = decode_video(_clip(demo), VideoDecodeConfig(FramePolicy("videomae"), "auto"))
    assert got.backend == "pyav" and np.array_equal(got.frames, expected)
    with pytest.raises(UnreadableMediaError, match="decord cannot open"):
        decode_video(_clip(demo), VideoDecodeConfig(backend="decord"))


@pytest.mark.parametrize("backend", BACKENDS)
def test_one_frame_clip_pads_or_raises(tmp_path, backend):
    path = write_video(tmp_path / "one.mp4", _gradient(1))
    for policy, n in ((FramePolicy("videomae"), 16), (FramePolicy("uniform", n_frames=8), 8)):
        got = decode_video(path, VideoDecodeConfig(policy, backend))
        assert got.num_frames == 1 and got.frames.shape == (n, 64, 64, 3)
        assert all(np.array_equal(f, got.frames[0]) for f in got.frames)
    with pytest.raises(MediaTooShortError, match="needs 4 frames") as info:
        decode_video(path, VideoDecodeConfig(FramePolicy("peak"), backend), peak_index=3)
    assert info.value.path == str(path)


def _bad_media(demo: Path, tmp: Path) -> dict[str, Path]:
    """Real broken or unsuitable files: truncated, empty, text, audio-only, silent."""
    data = _clip(demo).read_bytes()
    (tmp / "half.mp4").write_bytes(data[: len(data) // 2])  # the moov atom is at the end: cut off
    (tmp / "empty.mp4").write_bytes(b"")
    (tmp / "text.mp4").write_text("this is not a video\n", encoding="utf-8")
    with av.open(str(tmp / "voice.m4a"), "w") as out:
        stream = out.add_stream("aac", rate=16000, layout="mono")
        for start in range(0, 8192, AAC_FRAME):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, AAC_FRAME), np.float32), format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 16000, start
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    with av.open(str(tmp / "no_frames.mp4"), "w", format="mp4") as out:  # a video track with no samples
        stream = out.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        out.start_encoding()
    return {
        "half": tmp / "half.mp4",
        "no_frames": tmp / "no_frames.mp4",
        "empty": tmp / "empty.mp4",
        "text": tmp / "text.mp4",
        "missing": tmp / "missing.mp4",
        "m4a": tmp / "voice.m4a",
        "wav": demo / "audio" / "demo_0000.wav",
        "silent": write_video(tmp / "silent.mp4", _gradient(5)),
    }


@pytest.mark.parametrize("backend", BACKENDS)
def test_bad_video_gives_typed_errors(demo, tmp_path, backend):
    bad = _bad_media(demo, tmp_path)
    expected = {
        "half": UnreadableMediaError,
        "empty": UnreadableMediaError,
        "text": UnreadableMediaError,
        "missing": UnreadableMediaError,
        "m4a": NoVideoStreamError,
        "wav": NoVideoStreamError,
        # FFmpeg drops an mp4 track that holds no samples, so zero frames reads as no video stream
        "no_frames": NoVideoStreamError,
    }
    for name, error in expected.items():
        with pytest.raises(error) as info:
            decode_video(bad[name], VideoDecodeConfig(backend=backend))
        assert info.value.stage == "decode_video" and info.value.path == str(bad[name]), name
        assert str(bad[name]) in str(info.value) and isinstance(info.value, FeatstoreError)


def test_bad_audio_gives_typed_errors(demo, tmp_path):
    bad = _bad_media(demo, tmp_path)
    expected = {
        "half": UnreadableMediaError,
        "empty": UnreadableMediaError,
        "text": UnreadableMediaError,
        "missing": UnreadableMediaError,
        "silent": NoAudioStreamError,
    }
    for name, error in expected.items():
        with pytest.raises(error) as info:
            decode_audio(bad[name])
        assert info.value.stage == "decode_audio" and info.value.reason == error.reason, name
    assert decode_audio(bad["m4a"]).waveform.shape == (8192,)  # the audio-only file is fine for audio
    short = write_wav(tmp_path / "short.wav", np.zeros(100, np.int16), 16000)  # under HuBERT's 400 samples
    with pytest.raises(MediaTooShortError, match="100 samples"):
        decode_audio(short)
    with pytest.raises(MediaTooShortError):
        decode_audio(write_wav(tmp_path / "none.wav", np.zeros(0, np.int16), 16000))


def test_media_errors_pickle_with_stage_and_path():
    err = pickle.loads(pickle.dumps(NoAudioStreamError("no audio in x.mp4", stage="decode_audio", path="x.mp4")))
    assert (type(err), str(err), err.stage, err.path, err.reason) == (
        NoAudioStreamError,
        "no audio in x.mp4",
        "decode_audio",
        "x.mp4",
        "no_audio_stream",
    )
    with pytest.raises(ValueError, match="stage"):
        MediaError("x", stage="encode")


# -- time limits --


def test_timeout_on_real_decode(demo):
    with pytest.raises(DecodeTimeout) as info:
        decode_video(_clip(demo), VideoDecodeConfig(FramePolicy("videomae")), timeout_s=1e-6)
    assert info.value.reason == "timeout" and info.value.stage == "decode_video"
    with pytest.raises(DecodeTimeout):
        decode_audio(_clip(demo), timeout_s=1e-6)
    with pytest.raises(ValueError, match="timeout_s"):
        decode_video(_clip(demo), timeout_s=0)


def test_timeout_abandons_a_stuck_decode_and_stops_it(demo, monkeypatch):
    stopped = threading.Event()

    def slow(path, policy, peak_index, cancel):
        try:
            while True:  # a decode that never finishes on its own, checking between "frames"
                check_cancel(cancel)
                time.sleep(0.01)
        finally:
            stopped.set()

    monkeypatch.setattr(video_mod, "_decode_pyav", slow)
    start = time.perf_counter()
    with pytest.raises(DecodeTimeout, match="0.2 s"):
        decode_video(_clip(demo), VideoDecodeConfig(backend="pyav"), timeout_s=0.2)
    assert time.perf_counter() - start < 1.0
    assert stopped.wait(1.0), "the abandoned decode did not stop at its next frame"


def test_no_limit_runs_in_the_calling_thread(demo, monkeypatch):
    seen = []
    real = audio_mod._decode
    monkeypatch.setattr(audio_mod, "_decode", lambda *a: seen.append(threading.current_thread()) or real(*a))
    decode_audio(_clip(demo), timeout_s=None)
    assert seen == [threading.main_thread()]


# -- audio --


def test_mp4_track_matches_the_wav(demo):
    for i in range(N_CLIPS):
        track = decode_audio(_clip(demo, i))
        wav = decode_audio(demo / "audio" / f"demo_{i:04d}.wav")
        assert track.waveform.dtype == np.float32 and track.sample_rate == wav.sample_rate == 16000
        # measured: equal lengths once the AAC tail padding is trimmed (32768 decoded -> 32000)
        assert abs(track.waveform.size - wav.waveform.size) <= AAC_FRAME
        n = min(track.waveform.size, wav.waveform.size)
        xcorr = correlate(track.waveform[:n], wav.waveform[:n], mode="full")
        lag = int(np.argmax(xcorr)) - (n - 1)
        a, b = (
            (track.waveform[lag:n], wav.waveform[: n - lag])
            if lag >= 0
            else (track.waveform[: n + lag], wav.waveform[-lag:n])
        )
        assert abs(lag) <= AAC_FRAME and np.corrcoef(a, b)[0, 1] > 0.99  # measured: lag 0, r = 0.9999


def test_resamples_44k_stereo_to_16k_mono(tmp_path):
    rate, seconds = 44100, 1.5
    t = np.arange(int(rate * seconds)) / rate
    left = 0.5 * np.sin(2 * np.pi * 440 * t)
    pcm = np.round(np.stack([left, np.zeros_like(left)], 1) * 32767).astype(np.int16)  # right channel silent
    got = decode_audio(write_wav(tmp_path / "stereo.wav", pcm, rate))
    assert (got.sample_rate, got.source_rate, got.source_channels) == (16000, rate, 2)
    assert got.waveform.shape == (24000,) and got.waveform.dtype == np.float32
    expected = 0.25 * np.sin(2 * np.pi * 440 * np.arange(24000) / 16000)  # the mean of the two channels
    assert np.abs(got.waveform - expected)[200:-200].max() < 2e-3  # away from the filter's edges
    cropped = decode_audio(tmp_path / "stereo.wav", AudioDecodeConfig(max_seconds=0.5))
    assert cropped.waveform.shape == (8000,) and np.allclose(cropped.waveform, got.waveform[:8000], atol=1e-5)


@pytest.mark.parametrize(
    "fmt, data, expected",
    [
        ("s16", np.array([[0, 16384, -32768, 32767]], np.int16), [[0, -1], [0.5, 32767 / 32768]]),
        ("s16p", np.array([[0, -32768], [16384, 32767]], np.int16), [[0, -1], [0.5, 32767 / 32768]]),
        ("flt", np.array([[0.0, 0.5, -1.0, 0.25]], np.float32), [[0, -1], [0.5, 0.25]]),
        ("fltp", np.array([[0.0, -1.0], [0.5, 0.25]], np.float32), [[0, -1], [0.5, 0.25]]),
        ("dblp", np.array([[0.0, -1.0], [0.5, 0.25]], np.float64), [[0, -1], [0.5, 0.25]]),
        ("s32", np.array([[0, 1 << 30, -(1 << 31), 0]], np.int32), [[0, -1], [0.5, 0]]),
        ("u8", np.array([[128, 192, 0, 128]], np.uint8), [[0, -1], [0.5, 0]]),
    ],
)
def test_planar_packed_int_float_frames(fmt, data, expected):
    frame = av.AudioFrame.from_ndarray(data, format=fmt, layout="stereo")
    frame.sample_rate = 16000
    got = audio_mod._frame_to_float(frame, 16000, "x.wav")
    assert got.dtype == np.float32 and np.allclose(got, np.array(expected, np.float32))
