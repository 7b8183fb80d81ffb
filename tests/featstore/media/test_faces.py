"""Tests for featstore.media.faces: Haar-cascade face crops on real demo clips and on a faceless video."""

from __future__ import annotations

import json
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from featstore.demo.dataset import make_demo_dataset
from featstore.errors import MediaTooShortError
from featstore.media import faces
from featstore.media.faces import FaceCropConfig, centre_box, crop_faces, square_box
from featstore.media.video import FramePolicy, VideoDecodeConfig, decode_video

N_CLIPS = 3
VIDEOMAE = VideoDecodeConfig(FramePolicy("videomae"))


@pytest.fixture(scope="module")
def clip_frames(tmp_path_factory) -> list[np.ndarray]:
    """The 16 VideoMAE frames of each of three 2 s demo clips (real faces, H.264)."""
    root = make_demo_dataset(tmp_path_factory.mktemp("faces") / "ds", n=N_CLIPS, seconds=2.0, audio_source="synth")
    return [decode_video(root / "clips" / f"demo_{i:04d}.mp4", VIDEOMAE).frames for i in range(N_CLIPS)]


def _gradient_video(path: Path, n: int = 4, width: int = 160, height: int = 120) -> Path:
    """Write a faceless H.264 clip: a colour gradient that drifts a little each frame."""
    x = np.linspace(0, 255, width, dtype=np.float32)[None, :]
    y = np.linspace(0, 255, height, dtype=np.float32)[:, None]
    with av.open(str(path), "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for k in range(n):
            rgb = np.stack(np.broadcast_arrays(x, y, np.full((height, width), 40.0 + 10 * k)), -1)
            frame = av.VideoFrame.from_ndarray(rgb.astype(np.uint8), format="rgb24")
            frame.pts = k
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


def test_faces_found_on_demo_clips(clip_frames):
    cfg = FaceCropConfig()
    for frames in clip_frames:
        got = crop_faces(frames, cfg)
        assert got.crops.shape == (16, 224, 224, 3) and got.crops.dtype == np.uint8
        assert got.boxes.shape == got.faces.shape == (16, 4) and got.found.dtype == bool
        assert got.num_found >= 14  # measured: every frame of every demo clip
        for t in np.flatnonzero(got.found):
            x, y, w, h = got.faces[t]
            x0, y0, x1, y1 = got.boxes[t]
            side = x1 - x0
            assert y1 - y0 == side == min(round(max(w, h) * 1.25), 224)
            assert 0 <= x0 and 0 <= y0 and x1 <= 224 and y1 <= 224
            # centred on the face, unless the frame's edge pushed the square in
            if 0 < x0 and x1 < 224:
                assert abs((x0 + x1) / 2 - (x + w / 2)) <= 1
            if 0 < y0 and y1 < 224:
                assert abs((y0 + y1) / 2 - (y + h / 2)) <= 1
            region = frames[t, y0:y1, x0:x1]
            assert np.array_equal(got.crops[t], cv2.resize(region, (224, 224), interpolation=cv2.INTER_LINEAR))


def test_off_centre_face_on_a_large_frame_is_cropped_around_it(clip_frames):
    canvas = np.full((1, 400, 600, 3), 128, dtype=np.uint8)
    canvas[0, 150:374, 330:554] = clip_frames[0][0]  # the face sits right of centre and low
    got = crop_faces(canvas, FaceCropConfig(size=112, margin=0.5))
    assert got.found[0]
    x, y, w, h = got.faces[0]
    x0, y0, x1, y1 = got.boxes[0]
    assert 330 <= x and x + w <= 554 and 150 <= y and y + h <= 374  # found where it was pasted
    assert x1 - x0 == y1 - y0 == round(max(w, h) * 1.5)
    assert abs((x0 + x1) / 2 - (x + w / 2)) <= 1 and abs((y0 + y1) / 2 - (y + h / 2)) <= 1
    region = canvas[0, y0:y1, x0:x1]
    assert np.array_equal(got.crops[0], cv2.resize(region, (112, 112), interpolation=cv2.INTER_AREA))


def test_no_face_gives_a_centre_crop_and_says_so(tmp_path):
    every = VideoDecodeConfig(FramePolicy("uniform", n_frames=4))
    frames = decode_video(_gradient_video(tmp_path / "gradient.mp4"), every).frames
    got = crop_faces(frames)
    assert not got.found.any() and got.num_found == 0
    assert (got.faces == -1).all() and (got.boxes == [20, 0, 140, 120]).all()  # the 120 px centre square
    for t in range(4):  # enlarged from 120 to 224 px
        expected = cv2.resize(frames[t, :, 20:140], (224, 224), interpolation=cv2.INTER_LINEAR)
        assert np.array_equal(got.crops[t], expected)


@pytest.mark.parametrize(
    "face, frame, expected",
    [
        ((40, 40, 40, 40), (200, 100), (35, 35, 85, 85)),  # grown by a quarter, centred
        ((0, 0, 40, 40), (200, 100), (0, 0, 50, 50)),  # shifted in at the top-left corner
        ((170, 70, 30, 30), (200, 100), (162, 62, 200, 100)),  # shifted in at the bottom-right corner
        ((10, 0, 100, 120), (200, 100), (10, 0, 110, 100)),  # larger than the frame: the frame's shorter side
    ],
)
def test_square_box(face, frame, expected):
    assert square_box(face, 0.25, *frame) == expected


def test_centre_box():
    assert centre_box(160, 120) == (20, 0, 140, 120) and centre_box(90, 100) == (0, 5, 90, 95)


def test_config_and_input_validation():
    d = FaceCropConfig().to_dict()
    assert json.loads(json.dumps(d)) == d and d["detector"] == "haarcascade_frontalface_default.xml"
    assert (d["size"], d["margin"], d["scale_factor"], d["min_neighbors"]) == (224, 0.25, 1.1, 5)
    assert (d["detect_every"], d["detect_side"]) == (6, 224)
    for change in ({"margin": 0.3}, {"detect_every": 1}, {"detect_side": 0}):
        assert FaceCropConfig(**change).to_dict() != d
    bad = ({"size": 0}, {"margin": -0.1}, {"scale_factor": 1.0}, {"min_neighbors": 2.5}, {"detect_every": 0})
    for kwargs in (*bad, {"detect_side": -1}):
        with pytest.raises(ValueError, match=next(iter(kwargs))):
            FaceCropConfig(**kwargs)
    with pytest.raises(ValueError, match=r"float32 \(2, 8, 8, 3\)"):
        crop_faces(np.zeros((2, 8, 8, 3), np.float32))
    with pytest.raises(ValueError, match="uint8"):
        crop_faces(np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(MediaTooShortError) as info:
        crop_faces(np.zeros((0, 8, 8, 3), np.uint8))
    assert info.value.stage == "face"


def test_detector_is_loaded_once():
    assert faces._detector() is faces._detector()
    assert faces._detector.cache_info().currsize == 1


def test_detects_on_every_kth_frame_and_interpolates_between(monkeypatch):
    frames = np.zeros((10, 200, 300, 3), np.uint8)
    frames[:, 0, 0, 0] = np.arange(10)  # the stand-in detector reads the frame's index here
    boxes = {0: (10, 20, 40, 40), 4: (30, 20, 60, 40), 8: None}
    seen = []

    def detect(frame, config):
        seen.append(int(frame[0, 0, 0]))
        return boxes[int(frame[0, 0, 0])]

    monkeypatch.setattr(faces, "detect_face", detect)
    got = faces.track_faces(frames, FaceCropConfig(detect_every=4))
    assert seen == [0, 4, 8]  # the detector ran on frames 0, 4 and 8 only
    assert got[:5] == [(10, 20, 40, 40), (15, 20, 45, 40), (20, 20, 50, 40), (25, 20, 55, 40), (30, 20, 60, 40)]
    assert got[5:] == [(30, 20, 60, 40)] * 3 + [None, (30, 20, 60, 40)]  # carried; frame 8 itself found none
    crops = crop_faces(frames, FaceCropConfig(detect_every=4, size=32))
    assert crops.found.tolist() == [True] * 8 + [False, True]
    assert crops.boxes[8].tolist() == list(centre_box(300, 200))


def test_default_crops_stay_close_to_every_frame_full_size(clip_frames):
    """The default (every 6th frame, at most 224 px) against the former per-frame detection."""
    former = FaceCropConfig(detect_every=1, detect_side=0)
    for frames in clip_frames:
        new, old = crop_faces(frames), crop_faces(frames, former)
        assert new.num_found == old.num_found == 16
        x0, y0 = np.maximum(new.boxes[:, 0], old.boxes[:, 0]), np.maximum(new.boxes[:, 1], old.boxes[:, 1])
        x1, y1 = np.minimum(new.boxes[:, 2], old.boxes[:, 2]), np.minimum(new.boxes[:, 3], old.boxes[:, 3])
        inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
        area = lambda b: (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])  # noqa: E731
        iou = inter / (area(new.boxes) + area(old.boxes) - inter)
        assert iou.min() > 0.75 and np.median(iou) > 0.9
        np.testing.assert_array_equal(new.faces[::6], old.faces[::6])  # 224 px frames: same detections


def test_downscaled_detection_maps_the_box_back(clip_frames):
    canvas = np.full((1, 448, 672, 3), 128, dtype=np.uint8)
    canvas[0, 100:348, 200:424] = cv2.resize(clip_frames[0][0], (224, 248))
    full = crop_faces(canvas, FaceCropConfig(detect_side=0))
    small = crop_faces(canvas, FaceCropConfig(detect_side=112))  # detected at a quarter of the size
    assert full.found[0] and small.found[0]
    assert np.abs(small.faces[0] - full.faces[0]).max() <= 0.15 * full.faces[0][2]
    assert small.faces[0][0] + small.faces[0][2] <= 672 and small.faces[0][1] + small.faces[0][3] <= 448
