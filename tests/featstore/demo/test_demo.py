"""Tests for featstore.demo: real mp4/wav files and annotations written into tmp_path."""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import stat
import sys
from pathlib import Path

import av
import cv2
import decord
import numpy as np
import pytest

from featstore.demo import dataset as demo
from featstore.demo.media import X264_DETERMINISTIC, read_wav, write_mp4, x264_settings
from tests.load import busy_cores

N, SECONDS = 9, 1.0  # one clip per label; 25 frames each keeps the module fast
N_FRAMES = 25


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """One synthesised-audio demo dataset shared by the read-only tests."""
    return demo.make_demo_dataset(
        tmp_path_factory.mktemp("demo") / "ds", n=N, seconds=SECONDS, seed=3, audio_source="synth"
    )


def _ids(n: int) -> list[str]:
    return [f"demo_{i:04d}" for i in range(n)]


def _digests(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _face_finder():
    """OpenCV's bundled Haar frontal-face cascade (the detector the face crops use)."""
    haar = Path(cv2.data.haarcascades) / "haarcascade_frontalface_default.xml"
    classifier = cv2.CascadeClassifier(str(haar))
    return lambda rgb: len(classifier.detectMultiScale(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), 1.1, 5)) > 0


def test_layout_and_manifests(dataset):
    ids = _ids(N)
    assert sorted(p.name for p in (dataset / "clips").iterdir()) == [f"{i}.mp4" for i in ids]
    assert sorted(p.name for p in (dataset / "audio").iterdir()) == [f"{i}.wav" for i in ids]
    with open(dataset / "manifest.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["sample_id", "video", "audio", "transcript", "label"]
    assert [r["sample_id"] for r in rows] == ids
    assert all(r["video"] == f"clips/{r['sample_id']}.mp4" and r["audio"] == "" and r["transcript"] for r in rows)
    assert [r["label"] for r in rows] == list(demo.LABELS)
    lines = (dataset / "manifest_wav.jsonl").read_text(encoding="utf-8").splitlines()
    wav_rows = [json.loads(line) for line in lines]
    assert [r["audio"] for r in wav_rows] == [f"audio/{i}.wav" for i in ids]
    assert [{k: v for k, v in r.items() if k != "audio"} for r in wav_rows] == [
        {k: v for k, v in r.items() if k != "audio"} for r in rows
    ]
    labels = (dataset / "labels.txt").read_text(encoding="utf-8").splitlines()
    assert labels == [f"{i} {N_FRAMES} {lab}" for i, lab in zip(ids, demo.LABELS)]
    with open(dataset / "transcription.csv", newline="", encoding="utf-8") as f:
        trans = list(csv.reader(f))
    assert trans[0] == ["name", "sentence"]
    assert trans[1:] == [[r["sample_id"], r["transcript"]] for r in rows]
    readme = (dataset / "README.txt").read_text(encoding="utf-8")
    assert "synthesised" in readme and all(label in readme for label in demo.LABELS)


def test_clip_decodes_with_pyav(dataset):
    with av.open(str(dataset / "clips" / "demo_0002.mp4")) as container:
        video, audio = container.streams.video[0], container.streams.audio[0]
        assert (video.codec_context.name, video.codec_context.pix_fmt) == ("h264", "yuv420p")
        assert video.average_rate == 25
        assert audio.codec_context.name == "aac"
        assert (audio.sample_rate, audio.layout.name) == (16000, "mono")
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(frames) == N_FRAMES
    assert frames[0].shape == (224, 224, 3)
    assert frames[0].std() > 20  # a picture, not a flat field


def test_decord_opens_clip(dataset):
    reader = decord.VideoReader(str(dataset / "clips" / "demo_0001.mp4"))
    assert len(reader) == N_FRAMES
    assert reader.get_avg_fps() == pytest.approx(25.0)
    assert reader[N_FRAMES // 2].asnumpy().shape == (224, 224, 3)


def test_wav_matches_clip_audio(dataset):
    wav, rate = read_wav(dataset / "audio" / "demo_0004.wav")
    assert rate == 16000 and wav.shape == (int(SECONDS * 16000),)
    rms = float(np.sqrt(np.mean(wav**2)))
    assert rms > 0.05, f"near-silent wav, rms {rms}"
    assert 20 * math.log10(np.abs(wav).max()) == pytest.approx(-3.0, abs=0.1)
    with av.open(str(dataset / "clips" / "demo_0004.mp4")) as container:
        track = np.concatenate([f.to_ndarray()[0] for f in container.decode(audio=0)])
    n = wav.size
    assert track.size >= n
    assert np.corrcoef(track[:n], wav)[0, 1] > 0.99  # the same waveform, through AAC


def test_two_runs_are_byte_identical(tmp_path):
    first = demo.make_demo_dataset(tmp_path / "a", n=2, seconds=0.6, seed=7, audio_source="synth")
    second = demo.make_demo_dataset(tmp_path / "b", n=2, seconds=0.6, seed=7, audio_source="synth")
    other = demo.make_demo_dataset(tmp_path / "c", n=2, seconds=0.6, seed=8, audio_source="synth")
    assert len(_digests(first)) == 10
    assert _digests(first) == _digests(second)
    changed = {k for k, v in _digests(other).items() if _digests(first)[k] != v}
    assert {"clips/demo_0000.mp4", "audio/demo_0001.wav"} <= changed


def test_x264_runs_single_threaded(dataset):
    """What x264 actually used, read back from the clip's own stream."""
    settings = x264_settings(dataset / "clips" / "demo_0000.mp4")
    assert {k: settings.get(k) for k in X264_DETERMINISTIC} == X264_DETERMINISTIC


def test_encoding_is_byte_identical_under_load(tmp_path):
    """The same frames, encoded 20 times while every core is busy, give one file."""
    rng = np.random.default_rng(0)
    image, _ = demo.media.face_image(0, rng)
    frames, _ = demo.media.animate(image, 20, rng)
    pcm = demo.media.to_pcm16(demo.media.synth_speech("happy", 0.6, rng))
    digests = set()
    with busy_cores():
        for i in range(20):
            path = tmp_path / f"clip_{i}.mp4"
            write_mp4(path, frames, pcm)
            digests.add(hashlib.sha256(path.read_bytes()).hexdigest())
    assert len(digests) == 1


def test_whole_dataset_is_byte_identical_under_load(tmp_path):
    with busy_cores():
        first = demo.make_demo_dataset(tmp_path / "a", n=3, seconds=0.8, seed=5, audio_source="synth")
        second = demo.make_demo_dataset(tmp_path / "b", n=3, seconds=0.8, seed=5, audio_source="synth")
    assert _digests(first) == _digests(second)


def test_faces_are_detected(dataset):
    found = _face_finder()
    hits = []
    for sample_id in _ids(N):
        reader = decord.VideoReader(str(dataset / "clips" / f"{sample_id}.mp4"))
        hits.append(found(reader[len(reader) // 2].asnumpy()))
    assert sum(hits) >= math.ceil(N / 2), f"faces found in {sum(hits)} of {N} middle frames: {hits}"


def test_merr_annotations(dataset):
    merr = json.loads((dataset / "MERR_demo.json").read_text(encoding="utf-8"))
    assert list(merr) == _ids(N)
    assert {entry["label"] for entry in merr.values()} == set(demo.LABELS)
    for entry in merr.values():
        assert set(entry) == {"caption", "smp_reason_caption", "reason_caption", "peak_index", "label"}
        assert isinstance(entry["peak_index"], int) and 0 <= entry["peak_index"] < N_FRAMES
        assert entry["label"] in entry["smp_reason_caption"] and entry["caption"]
    happy = merr["demo_0002"]
    assert "AU12" in happy["caption"] and "rising" in happy["caption"]
    for sample_id, entry in merr.items():  # the brightness (and zoom) peak is at peak_index
        reader = decord.VideoReader(str(dataset / "clips" / f"{sample_id}.mp4"))
        brightness = reader.get_batch(list(range(len(reader)))).asnumpy().reshape(len(reader), -1).mean(axis=1)
        assert abs(int(np.argmax(brightness)) - entry["peak_index"]) <= 2, (sample_id, brightness.round(1))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"n": 0}, "n must be"),
        ({"n": 2.0}, "n must be"),
        ({"seconds": 0.2}, "seconds must be"),
        ({"seconds": float("nan")}, "seconds must be"),
        ({"seconds": 61.0}, "seconds must be"),
        ({"seed": -1}, "seed must be"),
        ({"audio_source": "tts"}, "audio_source must be"),
    ],
)
def test_bad_arguments_raise(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        demo.make_demo_dataset(tmp_path / "x", **kwargs)
    assert not (tmp_path / "x").exists()


def test_non_empty_folder_needs_overwrite(tmp_path):
    out = tmp_path / "ds"
    demo.make_demo_dataset(out, n=2, seconds=0.4, audio_source="synth")
    with pytest.raises(FileExistsError, match=str(out)):
        demo.make_demo_dataset(out, n=1, seconds=0.4, audio_source="synth")
    demo.make_demo_dataset(out, n=1, seconds=0.4, audio_source="synth", overwrite=True)
    assert [p.name for p in (out / "clips").iterdir()] == ["demo_0000.mp4"]
    with pytest.raises(FileExistsError, match="not a folder"):
        demo.make_demo_dataset(out / "labels.txt", n=1, audio_source="synth")


def test_cli_prints_progress_and_help(tmp_path, capsys):
    assert demo.main([str(tmp_path / "cli"), "--n", "2", "--seconds", "0.4", "--audio-source", "synth"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 and "demo_0001.mp4" in lines[1] and lines[2].endswith(str(tmp_path / "cli"))
    with pytest.raises(SystemExit):
        demo.main([str(tmp_path / "bad"), "--n", "0"])
    assert "n must be" in capsys.readouterr().err
    help_text = demo.build_parser().format_help()
    for option in ("--n", "--seconds", "--seed", "--audio-source", "--overwrite"):
        assert option in help_text
    assert help_text.count("default") >= 3


FAKE_ESPEAK = """#!{python}
import sys, wave, math, struct
args = sys.argv[1:]
if "--version" in args:
    print("eSpeak NG text-to-speech: 1.0-fake"); sys.exit(0)
path = args[args.index("-w") + 1]
with wave.open(path, "wb") as f:
    f.setnchannels(1); f.setsampwidth(2); f.setframerate(22050)
    f.writeframes(b"".join(struct.pack("<h", int(8000 * math.sin(i * 0.05))) for i in range(22050)))
"""


def test_espeak_is_used_when_on_path(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "espeak-ng"
    script.write_text(FAKE_ESPEAK.format(python=sys.executable))
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    out = demo.make_demo_dataset(tmp_path / "ds", n=1, seconds=0.5)
    assert "espeak-ng" in (out / "README.txt").read_text(encoding="utf-8")
    wav, rate = read_wav(out / "audio" / "demo_0000.wav")
    assert rate == 16000 and wav.size == 8000
    # the fake speaks a 175 Hz sine at 22.05 kHz: resampled, its period is 16000 / 175.4 samples
    spectrum = np.abs(np.fft.rfft(wav))
    assert np.argmax(spectrum) * 16000 / wav.size == pytest.approx(22050 * 0.05 / (2 * math.pi), abs=4)
