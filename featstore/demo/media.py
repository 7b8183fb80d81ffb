"""Deterministic media for the demo dataset: animated face frames, speech-like audio, mp4/wav writers."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import wave
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import skimage.data
from scipy.signal import lfilter, resample_poly

FPS = 25
FRAME_SIZE = 224  # the input size of the MAE / VideoMAE face encoders
SAMPLE_RATE = 16_000  # what chinese-hubert-large expects
PEAK_DBFS = -3.0
# lfw_subset() holds 100 faces then 100 non-faces; these faces are ones that a
# frontal-face cascade (OpenCV's LBP model, shipped with scikit-image) finds
# once framed by _framed_lfw_face (checked one by one).
LFW_FACES = (0, 2, 5, 7, 10, 13, 15, 20, 24, 28, 33, 37, 40, 45, 50, 55, 60, 66, 72, 80, 88, 95)
# (F1, F2, F3) in Hz of five vowels (Peterson & Barney averages), each with its bandwidths.
VOWELS = ((730, 1090, 2440), (270, 2290, 3010), (300, 870, 2240), (530, 1840, 2480), (570, 840, 2410))
BANDWIDTHS = (90, 110, 170)
# label -> (pitch scale, contour kind, syllables per second, tremolo depth, breathiness)
PROSODY = {
    "neutral": (1.00, "flat", 4.0, 0.00, 0.03),
    "angry": (1.15, "fall", 5.0, 0.00, 0.02),
    "happy": (1.20, "rise", 4.8, 0.00, 0.03),
    "sad": (0.85, "fall", 3.0, 0.00, 0.08),
    "worried": (1.05, "rise", 4.2, 0.03, 0.05),
    "surprise": (1.30, "rise", 4.5, 0.00, 0.03),
    "fear": (1.25, "flat", 5.2, 0.05, 0.08),
    "contempt": (0.90, "fall", 3.5, 0.00, 0.04),
    "doubt": (1.00, "end_rise", 3.5, 0.00, 0.04),
}


# x264 with its C kernels only, on one thread, no lookahead or slice threads:
# under load its assembly gave different bytes for the same frames here, and
# its output depends on its thread count (see write_mp4).
X264_PARAMS = "no-asm=1:threads=1:lookahead-threads=1:sliced-threads=0:sync-lookahead=0"
# What x264_settings must read back from a demo clip.
X264_DETERMINISTIC = {"threads": "1", "lookahead_threads": "1", "sliced_threads": "0"}


def espeak_available() -> bool:
    """Return whether the espeak-ng speech synthesiser is on PATH."""
    return shutil.which("espeak-ng") is not None


def face_image(index: int, rng: np.random.Generator) -> tuple[np.ndarray, str]:
    """Pick and compose the still face that clip `index` animates.

    Args:
        index: clip number; every third clip (0, 3, ...) shows the astronaut.
        rng: the clip's seeded generator, which picks the LFW face and a mirror flip.

    Returns:
        (uint8 RGB image of FRAME_SIZE x FRAME_SIZE, a name for the face).
    """
    if index % 3 == 0:
        crop = skimage.data.astronaut()[0:220, 130:350]  # the face, centred
        name = "astronaut"
    else:
        which = int(LFW_FACES[rng.integers(len(LFW_FACES))])
        crop = _framed_lfw_face(which)
        name = f"lfw:{which}"
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    image = cv2.resize(np.ascontiguousarray(crop), (FRAME_SIZE, FRAME_SIZE), interpolation=cv2.INTER_AREA)
    return image, name


def _framed_lfw_face(which: int) -> np.ndarray:
    """Upscale a 25x25 LFW face smoothly, tint it, and vignette it onto a soft gradient backdrop."""
    grey = skimage.data.lfw_subset()[which].astype(np.float32)
    face = cv2.resize(grey, (176, 176), interpolation=cv2.INTER_CUBIC)
    face = cv2.GaussianBlur(face, (0, 0), 2.5)  # hide the 25-pixel grid (7x upscale)
    pad = (FRAME_SIZE - 176) // 2
    canvas = cv2.copyMakeBorder(face, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
    rows = np.linspace(0.0, 1.0, FRAME_SIZE, dtype=np.float32)[:, None]
    backdrop = np.broadcast_to(0.55 + 0.2 * rows, canvas.shape) * float(np.median(face))
    mask = np.zeros_like(canvas)
    cv2.ellipse(mask, (FRAME_SIZE // 2, FRAME_SIZE // 2), (84, 98), 0, 0, 360, 1.0, -1)
    mask = cv2.GaussianBlur(mask, (0, 0), 8)
    grey = np.clip(mask * canvas + (1 - mask) * backdrop, 0, 1)
    tint = np.array([1.05, 0.90, 0.80], dtype=np.float32)  # warm skin tone
    return (np.clip(grey[..., None] * tint, 0, 1) * 255).astype(np.uint8)


def animate(image: np.ndarray, n_frames: int, rng: np.random.Generator) -> tuple[np.ndarray, int]:
    """Animate a still face: slow zoom, pan, tilt and brightness ramp with one expression peak.

    Args:
        image: uint8 RGB still, FRAME_SIZE square.
        n_frames: number of frames to render.
        rng: the clip's seeded generator (peak time, pan direction, sensor noise).

    Returns:
        (uint8 frames [n_frames, H, W, 3], the index of the peak frame).
    """
    t = np.arange(n_frames, dtype=np.float64) / max(n_frames - 1, 1)
    peak_t = rng.uniform(0.35, 0.65)
    bump = np.exp(-0.5 * ((t - peak_t) / 0.15) ** 2)  # the expression peak
    direction = rng.uniform(-1, 1, size=2)
    zoom = 1.0 + 0.04 * t + 0.10 * bump
    shift = 6.0 * np.stack([np.sin(2 * np.pi * t), np.cos(2 * np.pi * t)], 1) + 8.0 * bump[:, None] * direction
    tilt = 3.0 * bump * np.sign(direction[0])
    gain = 0.92 + 0.06 * t + 0.18 * bump
    centre = (FRAME_SIZE / 2, FRAME_SIZE / 2)
    frames = np.empty((n_frames, FRAME_SIZE, FRAME_SIZE, 3), dtype=np.uint8)
    for k in range(n_frames):
        m = cv2.getRotationMatrix2D(centre, float(tilt[k]), float(zoom[k]))
        m[:, 2] += shift[k]
        moved = cv2.warpAffine(
            image, m, (FRAME_SIZE, FRAME_SIZE), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT101
        )
        noise = rng.standard_normal(size=moved.shape, dtype=np.float32)  # sensor noise, sigma 2 levels
        lit = moved.astype(np.float32) * np.float32(gain[k]) + 2.0 * noise
        frames[k] = np.clip(lit, 0, 255, out=lit).astype(np.uint8)
    return frames, int(np.argmax(bump))


def synth_speech(label: str, seconds: float, rng: np.random.Generator) -> np.ndarray:
    """Synthesise a voiced, speech-like waveform whose prosody follows the label.

    A glottal pulse train with a pitch contour passes through vowel formant
    resonators that change every ~150 ms, under a syllable-rate envelope with
    short pauses, plus a little breath noise.

    Args:
        label: one of PROSODY's labels.
        seconds: duration.
        rng: the clip's seeded generator (speaker pitch, vowels, pauses, noise).

    Returns:
        float32 waveform at SAMPLE_RATE, peak at PEAK_DBFS.

    Raises:
        ValueError: if the label has no prosody.
    """
    if label not in PROSODY:
        raise ValueError(f"no prosody for label {label!r}; expected one of {sorted(PROSODY)}")
    scale, contour, rate, tremolo, breath = PROSODY[label]
    n = int(round(seconds * SAMPLE_RATE))
    t = np.arange(n) / SAMPLE_RATE
    f0 = rng.uniform(110, 210) * scale * _contour(contour, t / seconds)
    f0 *= 1 + tremolo * np.sin(2 * np.pi * 5.5 * t) + 0.01 * rng.standard_normal(n).cumsum() / np.sqrt(n)
    source = np.diff(_glottal_pulse(np.cumsum(f0) / SAMPLE_RATE), prepend=0.0)  # lip radiation
    source += breath * source.std() * 3 * rng.standard_normal(n)  # aspiration, shaped by the formants too
    voiced = _vowel_filter(source, rng)
    envelope = _syllable_envelope(t, seconds, rate, rng)
    signal = envelope * voiced / np.abs(voiced).max() + 0.003 * rng.standard_normal(n)  # a -50 dB room floor
    return normalise(signal)


def _contour(kind: str, u: np.ndarray) -> np.ndarray:
    """Relative pitch over normalised time u in [0, 1] for a contour kind."""
    if kind == "rise":
        return 0.9 + 0.35 * u
    if kind == "fall":
        return 1.15 - 0.35 * u
    if kind == "end_rise":
        return 1.0 - 0.05 * u + 0.4 * np.clip(u - 0.7, 0, None)
    return 1.0 - 0.08 * u  # flat, with the usual declination


def _glottal_pulse(phase: np.ndarray) -> np.ndarray:
    """Rosenberg glottal flow for a running phase (cycles): 40% opening, 16% closing, then closed."""
    p = phase % 1.0
    opening = 0.5 * (1 - np.cos(np.pi * p / 0.4))
    closing = np.cos(0.5 * np.pi * (p - 0.4) / 0.16)
    return np.where(p < 0.4, opening, np.where(p < 0.56, closing, 0.0))


def _vowel_filter(source: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Filter the source through formant resonators, crossfading to a new vowel every ~150 ms."""
    n = source.size
    seg = int(0.15 * SAMPLE_RATE)
    choice = rng.integers(len(VOWELS), size=n // seg + 2)
    out = np.zeros(n)
    ramp = np.clip(np.arange(n) / seg, 0, None)
    for v, formants in enumerate(VOWELS):
        y = source
        for freq, bw in zip(formants, BANDWIDTHS):
            r = np.exp(-np.pi * bw / SAMPLE_RATE)
            a = [1.0, -2 * r * np.cos(2 * np.pi * freq / SAMPLE_RATE), r * r]
            y = lfilter([1 - r], a, y)
        weight = np.interp(ramp, np.arange(choice.size), (choice == v).astype(float))
        out += weight * y
    return out


def _syllable_envelope(t: np.ndarray, seconds: float, rate: float, rng: np.random.Generator) -> np.ndarray:
    """Raised-sine syllable bumps at `rate` per second, 20 ms fades, and one or two short pauses."""
    phase = t * rate + rng.uniform(0, 1)
    env = 0.15 + 0.85 * np.sin(np.pi * (phase % 1.0)) ** 2
    for _ in range(1 + int(seconds > 1.5)):
        start = rng.uniform(0.2, max(0.25, seconds - 0.4))
        env[(t >= start) & (t < start + rng.uniform(0.12, 0.25))] = 0.0
    fade = np.clip(np.minimum(t, seconds - t) / 0.02, 0, 1)
    return np.convolve(env, np.hanning(161) / np.hanning(161).sum(), mode="same") * fade


def espeak_speech(text: str, label: str, seconds: float) -> np.ndarray:
    """Speak `text` with espeak-ng, pitched and paced by label, fitted to `seconds` at SAMPLE_RATE.

    Args:
        text: the transcript to speak.
        label: one of PROSODY's labels (sets espeak's pitch and speed).
        seconds: duration; the speech is cut or zero-padded to it.

    Returns:
        float32 waveform at SAMPLE_RATE, peak at PEAK_DBFS.

    Raises:
        RuntimeError: if espeak-ng fails or writes no audio.
    """
    scale, _, rate, _, _ = PROSODY[label]
    args = ["-v", "en", "-p", str(int(50 * scale)), "-s", str(int(40 * rate))]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "speech.wav"
        done = subprocess.run(["espeak-ng", *args, "-w", str(path), text], capture_output=True, text=True)
        if done.returncode != 0 or not path.exists():
            raise RuntimeError(f"espeak-ng failed on {text!r} (exit {done.returncode}): {done.stderr.strip()}")
        wav, rate_in = read_wav(path)
    if wav.size == 0:
        raise RuntimeError(f"espeak-ng wrote no audio for {text!r}")
    ratio = Fraction(SAMPLE_RATE, rate_in)
    wav = resample_poly(wav, ratio.numerator, ratio.denominator)
    n = int(round(seconds * SAMPLE_RATE))
    return normalise(np.pad(wav[:n], (0, max(0, n - wav.size))))


def normalise(signal: np.ndarray) -> np.ndarray:
    """Scale a waveform so its peak is PEAK_DBFS; return it as float32 (silence stays silent)."""
    peak = float(np.abs(signal).max()) if signal.size else 0.0
    target = 10 ** (PEAK_DBFS / 20)
    return (signal * (target / peak if peak > 0 else 0.0)).astype(np.float32)


def read_wav(path: Path) -> tuple[np.ndarray, int]:
    """Read a mono or multi-channel 16-bit PCM WAV as float32 mono in [-1, 1]; return (wave, rate)."""
    with wave.open(str(path), "rb") as f:
        if f.getsampwidth() != 2:
            raise ValueError(f"{path}: expected 16-bit PCM, got {8 * f.getsampwidth()}-bit")
        data = np.frombuffer(f.readframes(f.getnframes()), dtype="<i2")
        channels, rate = f.getnchannels(), f.getframerate()
    return data.reshape(-1, channels).mean(axis=1).astype(np.float32) / 32768.0, rate


def to_pcm16(audio: np.ndarray) -> np.ndarray:
    """Quantise float audio in [-1, 1] to 16-bit PCM, the one waveform both the wav and the mp4 carry."""
    return np.clip(np.round(audio * 32767), -32768, 32767).astype("<i2")


def write_wav(path: Path, pcm: np.ndarray) -> None:
    """Write 16-bit PCM samples as a 16 kHz mono WAV (the same bytes every run)."""
    with wave.open(str(path), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(SAMPLE_RATE)
        f.writeframes(pcm.tobytes())


def write_mp4(path: Path, frames: np.ndarray, pcm: np.ndarray) -> None:
    """Write H.264 yuv420p video at FPS plus a 16 kHz mono AAC track of 16-bit PCM, byte-identical across runs.

    x264 runs without its assembly kernels and on one thread. Under load, the
    same frames gave 5 different streams in 30 encodes with x264's assembly on
    this machine's CPU and one with ``no-asm`` (the inputs it was handed were
    identical every time: issue 17); its output also depends on its thread
    count. Both are set through x264's own parameters, and the thread count
    through FFmpeg too (``threads``, ``thread_type``); ``x264_settings`` reads
    back what x264 used. The clips are small, so the C kernels cost little.
    No creation_time metadata is set, so the mp4 header's times stay 0;
    bitexact keeps the FFmpeg version string out of the container and the AAC stream.

    Args:
        path: the .mp4 to write.
        frames: uint8 RGB frames [T, H, W, 3], H and W even.
        pcm: 16-bit mono samples at SAMPLE_RATE.
    """
    with av.open(str(path), "w", format="mp4", container_options={"fflags": "+bitexact"}) as out:
        video = out.add_stream(
            "libx264", rate=FPS, options={"preset": "veryfast", "crf": "23", "threads": "1", "x264-params": X264_PARAMS}
        )
        video.width, video.height, video.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        video.codec_context.thread_count = 1
        video.codec_context.thread_type = "NONE"
        sound = out.add_stream("aac", rate=SAMPLE_RATE, layout="mono")
        sound.codec_context.options = {"flags": "+bitexact"}
        sound.codec_context.thread_count = 1
        for k, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p")
            frame.pts = k
            out.mux(video.encode(frame))
        out.mux(video.encode(None))
        audio = pcm.astype(np.float32) / 32768.0
        step = 1024  # one AAC frame
        for start in range(0, audio.size, step):
            chunk = av.AudioFrame.from_ndarray(audio[None, start : start + step], format="fltp", layout="mono")
            chunk.sample_rate, chunk.pts = SAMPLE_RATE, start
            out.mux(sound.encode(chunk))
        out.mux(sound.encode(None))


def x264_settings(path: Path) -> dict[str, str]:
    """The settings x264 recorded in a clip's stream (its SEI user data), as ``{name: value}``.

    Raises:
        ValueError: naming the file when it holds no x264 settings.
    """
    raw = Path(path).read_bytes()
    mark = raw.find(b"x264 - core")
    opts = raw.find(b"options: ", mark) if mark >= 0 else -1
    if opts < 0:
        raise ValueError(f"{path}: no x264 settings found (not an x264 stream?)")
    text = raw[opts + len(b"options: ") : raw.index(b"\0", opts)].decode("ascii", "replace")
    return dict(item.partition("=")[::2] for item in text.split())
