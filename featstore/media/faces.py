"""Face crops for the local (MAE) and temporal (VideoMAE) encoders, with OpenCV's bundled Haar cascade.

Detection runs on every ``detect_every``-th frame (0, k, 2k, ...), on the
greyscale frame downscaled so that its shorter side is at most
``detect_side`` pixels (boxes scaled back to the frame), and takes the
largest face (ties: the first OpenCV returns). A frame between two frames
whose detection found a face gets the box linearly interpolated between them
(rounded); a frame with such a detection on one side only carries that box.
On the 224 px demo clips this costs about a fifth of detecting on every full frame
and moves the boxes little (``benchmarks/bench_decode.py --faces``).
``detect_every=1, detect_side=0`` is the former per-frame, full-size detection.

Then per frame: grow the face box into a square of side
``max(w, h) * (1 + margin)`` about the box centre (``margin / 2`` on each
side), shift the square inside the frame (and shrink it to the frame's
shorter side if it is larger), and resize to ``size`` x ``size``:
``cv2.INTER_AREA`` when shrinking (it averages, so no aliasing) and
``cv2.INTER_LINEAR`` when enlarging (INTER_AREA degrades to nearest-neighbour
there). A frame with no face gets the centre square of the frame's shorter
side instead, and ``found`` records it, so a run can count such frames.

The cascade is loaded once per process and shared; a lock serialises
``detectMultiScale`` on it, since OpenCV does not promise that one classifier
is safe to use from several threads at once.
"""

from __future__ import annotations

import functools
import math
import numbers
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from featstore.errors import FaceDetectorError, MediaTooShortError

__all__ = ["CASCADE_FILE", "FaceCropConfig", "FaceCrops", "crop_faces"]

STAGE = "face"
CASCADE_FILE = "haarcascade_frontalface_default.xml"
_DETECT_LOCK = threading.Lock()


@dataclass(frozen=True)
class FaceCropConfig:
    """How to find and crop faces.

    Attributes:
        size: side of the square output crop in pixels (224: the MAE / VideoMAE input).
        margin: fraction of the face box's longer side added around it (half on each side).
        scale_factor: detectMultiScale's image-pyramid step.
        min_neighbors: detectMultiScale's overlapping detections needed to keep a face.
        min_face: smallest face side, in the frame's pixels, the detector looks for
            (on a downscaled frame the cascade's 24-pixel window sets a floor of
            ``24 / scale``).
        detect_every: detect on every k-th frame and interpolate the box between
            (1: detect on every frame).
        detect_side: detect on the frame downscaled (``INTER_AREA``) so its shorter side
            is at most this many pixels (0: full size).
    """

    size: int = 224
    margin: float = 0.25
    scale_factor: float = 1.1
    min_neighbors: int = 5
    min_face: int = 30
    detect_every: int = 6
    detect_side: int = 224

    def __post_init__(self) -> None:
        """Raises ValueError for a parameter out of range (names it and its value)."""
        for name, low in (("size", 1), ("min_neighbors", 0), ("min_face", 1), ("detect_every", 1), ("detect_side", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        if not (_is_number(self.margin) and 0 <= self.margin <= 4):
            raise ValueError(f"margin must be a number in [0, 4], got {self.margin!r}")
        if not (_is_number(self.scale_factor) and 1 < self.scale_factor <= 2):
            raise ValueError(f"scale_factor must be a number in (1, 2], got {self.scale_factor!r}")

    def to_dict(self) -> dict[str, Any]:
        """Every parameter that decides the crops' bytes, as a stable JSON-able dict."""
        return {
            "cropper": "face",
            "detector": CASCADE_FILE,
            "opencv": cv2.__version__,
            "input": "grey (RGB2GRAY)",
            "scale_factor": self.scale_factor,
            "min_neighbors": self.min_neighbors,
            "min_face": self.min_face,
            "pick": "largest",
            "detect_every": self.detect_every,
            "between": "linear interpolation of the box, rounded; carried past the last detection",
            "detect_side": self.detect_side,
            "downscale": "INTER_AREA on grey, boxes scaled back and rounded",
            "margin": self.margin,
            "shape": "square",
            "clamp": "shift inside, shrink to shorter side",
            "fallback": "centre square",
            "size": self.size,
            "resize": "INTER_AREA down, INTER_LINEAR up",
            "dtype": "uint8",
        }


@dataclass(frozen=True)
class FaceCrops:
    """Face crops of a clip's frames.

    Attributes:
        crops: RGB uint8 ``[T, size, size, 3]``.
        boxes: int32 ``[T, 4]``: the square cut from each frame, ``(x0, y0, x1, y1)``, end exclusive.
        faces: int32 ``[T, 4]``: the detected face ``(x, y, w, h)``, or all -1 where none was found.
        found: bool ``[T]``: whether a face was found (False: a centre crop).
    """

    crops: np.ndarray
    boxes: np.ndarray
    faces: np.ndarray
    found: np.ndarray

    @property
    def num_found(self) -> int:
        """Frames in which a face was found."""
        return int(self.found.sum())


def crop_faces(frames: np.ndarray, config: FaceCropConfig | None = None) -> FaceCrops:
    """Crop the largest face of each frame (a centre crop where there is none).

    Args:
        frames: RGB uint8 ``[T, H, W, 3]``, as :func:`featstore.media.video.decode_video` returns.
        config: detector and crop parameters; default 224 px with a 0.25 margin.

    Returns:
        the crops, the squares they were cut from, the detected faces and the found flags.

    Raises:
        ValueError: frames that are not uint8 ``[T, H, W, 3]`` (names the dtype and shape).
        MediaTooShortError: no frames (T == 0), stage "face".
        FaceDetectorError: OpenCV's cascade file cannot be loaded.
    """
    cfg = FaceCropConfig() if config is None else config
    if not isinstance(frames, np.ndarray) or frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[3] != 3:
        what = f"{frames.dtype} {frames.shape}" if isinstance(frames, np.ndarray) else type(frames).__name__
        raise ValueError(f"frames must be a uint8 array [T, H, W, 3], got {what}")
    if frames.shape[0] == 0 or frames.shape[1] == 0 or frames.shape[2] == 0:
        raise MediaTooShortError(f"no frames to crop faces from (shape {frames.shape})", stage=STAGE)
    count = frames.shape[0]
    crops = np.empty((count, cfg.size, cfg.size, 3), dtype=np.uint8)
    boxes = np.empty((count, 4), dtype=np.int32)
    faces = np.full((count, 4), -1, dtype=np.int32)
    found = np.zeros(count, dtype=bool)
    height, width = frames.shape[1:3]
    for t, face in enumerate(track_faces(frames, cfg)):
        frame = frames[t]
        if face is not None:
            faces[t], found[t] = face, True
            boxes[t] = square_box(face, cfg.margin, width, height)
        else:
            boxes[t] = centre_box(width, height)
        x0, y0, x1, y1 = (int(v) for v in boxes[t])
        crops[t] = _resize(frame[y0:y1, x0:x1], cfg.size)
    return FaceCrops(crops, boxes, faces, found)


def track_faces(frames: np.ndarray, config: FaceCropConfig) -> list[tuple[int, int, int, int] | None]:
    """The face box ``(x, y, w, h)`` of every frame, or None: detected on every
    ``detect_every``-th frame, interpolated between detections, carried past the ends."""
    step = config.detect_every
    detected = {t: detect_face(frames[t], config) for t in range(0, len(frames), step)}
    hits = sorted(t for t, face in detected.items() if face is not None)
    out: list[tuple[int, int, int, int] | None] = []
    for t in range(len(frames)):
        if t in detected:
            out.append(detected[t])
            continue
        before = max((k for k in hits if k < t), default=None)
        after = min((k for k in hits if k > t), default=None)
        if before is None or after is None:
            near = before if after is None else after
            out.append(None if near is None else detected[near])
            continue
        a, b, u = detected[before], detected[after], (t - before) / (after - before)
        out.append(tuple(round(p + (q - p) * u) for p, q in zip(a, b)))
    return out


def detect_face(frame: np.ndarray, config: FaceCropConfig) -> tuple[int, int, int, int] | None:
    """Return the largest face ``(x, y, w, h)`` the cascade finds in an RGB frame, or None
    (on the frame downscaled to ``detect_side``, the box scaled back to the frame)."""
    grey = cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2GRAY)
    height, width = grey.shape
    scale = 1.0
    if config.detect_side and min(height, width) > config.detect_side:
        scale = config.detect_side / min(height, width)
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        grey = cv2.resize(grey, size, interpolation=cv2.INTER_AREA)
    min_face = max(1, round(config.min_face * scale))
    detector = _detector()
    with _DETECT_LOCK:
        found = detector.detectMultiScale(
            grey,
            scaleFactor=config.scale_factor,
            minNeighbors=config.min_neighbors,
            minSize=(min_face, min_face),
        )
    if len(found) == 0:
        return None
    # max keeps the first of equal areas, and OpenCV's order is deterministic
    x, y, w, h = max((tuple(int(v) for v in box) for box in found), key=lambda b: b[2] * b[3])
    if scale != 1.0:
        x, y = round(x / scale), round(y / scale)
        w, h = min(round(w / scale), width - x), min(round(h / scale), height - y)
    return x, y, w, h


def square_box(face: tuple[int, int, int, int], margin: float, width: int, height: int) -> tuple[int, int, int, int]:
    """The square ``(x0, y0, x1, y1)`` cut around a face box: grown by ``margin``, then kept inside the frame.

    Args:
        face: the face box ``(x, y, w, h)``.
        margin: fraction of ``max(w, h)`` added in all (half on each side).
        width: frame width.
        height: frame height.

    Returns:
        the square, end exclusive, inside the frame, centred on the face unless the frame's edge is nearer.
    """
    x, y, w, h = face
    side = min(max(1, round(max(w, h) * (1 + margin))), width, height)
    x0 = round(x + w / 2 - side / 2)
    y0 = round(y + h / 2 - side / 2)
    x0 = min(max(x0, 0), width - side)  # shift inside, keeping the side
    y0 = min(max(y0, 0), height - side)
    return x0, y0, x0 + side, y0 + side


def centre_box(width: int, height: int) -> tuple[int, int, int, int]:
    """The centre square of the frame's shorter side, ``(x0, y0, x1, y1)``: the crop where no face is found."""
    side = min(width, height)
    x0, y0 = (width - side) // 2, (height - side) // 2
    return x0, y0, x0 + side, y0 + side


def _resize(region: np.ndarray, size: int) -> np.ndarray:
    """Resize a square region to size x size: INTER_AREA to shrink, INTER_LINEAR to enlarge."""
    interpolation = cv2.INTER_AREA if region.shape[0] > size else cv2.INTER_LINEAR
    return cv2.resize(np.ascontiguousarray(region), (size, size), interpolation=interpolation)


@functools.lru_cache(maxsize=1)
def _detector() -> cv2.CascadeClassifier:
    """Load OpenCV's bundled frontal-face cascade, once per process.

    Raises:
        FaceDetectorError: the cascade file is missing or does not load.
    """
    path = Path(cv2.data.haarcascades) / CASCADE_FILE
    detector = cv2.CascadeClassifier(str(path))
    if detector.empty():
        raise FaceDetectorError(
            f"OpenCV cannot load its face cascade {path} (is opencv-python-headless 4.x installed?)",
            stage=STAGE,
            path=str(path),
        )
    return detector


def _is_number(value: Any) -> bool:
    """Whether value is a finite real number (not a bool)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
