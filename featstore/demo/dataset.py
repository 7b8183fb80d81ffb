"""Write a small, deterministic Emotion-LLaMA-style demo dataset: real mp4/wav files and annotations.

python -m featstore.demo OUT_DIR [--n 8] [--seconds 2.0] [--seed 0]
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import numbers
import shutil
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from featstore.demo import media
from featstore.names import MERR_LABELS

# The nine MERR labels, in the order the clips cycle through them.
LABELS = MERR_LABELS
TRANSCRIPTS = {
    "neutral": (
        "The meeting is at three o'clock on Tuesday.",
        "I took the bus to work this morning.",
        "We will go over the report after lunch.",
    ),
    "angry": (
        "I told you not to touch my things!",
        "This is the third time you have lied to me!",
        "Get out of my office right now!",
    ),
    "happy": (
        "We won the match, I can't believe it!",
        "You got the job, that's wonderful news!",
        "I love this present, thank you so much!",
    ),
    "sad": (
        "I really miss how things used to be.",
        "She left this morning and didn't say goodbye.",
        "I don't think I can go on like this.",
    ),
    "worried": (
        "What if the results come back bad?",
        "He still hasn't called, is he all right?",
        "I'm not sure we have enough money this month.",
    ),
    "surprise": ("Wait, you're getting married?", "Oh! I didn't see you come in!", "No way, the whole team is here?"),
    "fear": ("Did you hear that noise downstairs?", "Please, don't hurt me.", "Someone is following us, walk faster."),
    "contempt": (
        "Oh please, as if you could do any better.",
        "That's what you call a plan?",
        "I expected nothing less from someone like you.",
    ),
    "doubt": (
        "Are you sure that's what he said?",
        "Hmm, I'm not convinced this will work.",
        "You finished all of it already, really?",
    ),
}
# label -> (facial action units, vocal tone), as MERR's captions describe them
CUES = {
    "neutral": ("a relaxed face with no marked action units", "an even, level tone"),
    "angry": (
        "brows lowered and drawn together, lids tightened, lips pressed (AU04, AU07, AU23)",
        "a loud, clipped, falling tone",
    ),
    "happy": ("cheeks raised and lip corners pulled up (AU06, AU12)", "a bright, rising tone"),
    "sad": ("inner brows raised and lip corners pulled down (AU01, AU15)", "a low, slow, falling tone"),
    "worried": (
        "inner brows raised and drawn together, lips stretched (AU01, AU04, AU20)",
        "a hesitant, slightly trembling tone",
    ),
    "surprise": (
        "brows raised, upper lids raised and jaw dropped (AU01, AU02, AU05, AU26)",
        "a high, sharply rising tone",
    ),
    "fear": (
        "brows raised and drawn together, upper lids raised, lips stretched (AU01, AU04, AU05, AU20)",
        "a high, fast, shaky tone",
    ),
    "contempt": ("one lip corner tightened and raised (AU14, one-sided)", "a low, flat, drawn-out tone"),
    "doubt": ("brows lowered and lips pressed together (AU04, AU24)", "a slow tone that rises at the end"),
}
AUDIO_SOURCES = ("auto", "synth", "espeak")
MAX_CLIPS = 10_000  # ids are demo_0000 .. demo_9999
MAX_SECONDS = 60.0
# the top-level files make_demo_dataset writes (and, with overwrite, replaces)
OWN_FILES = ("manifest.csv", "manifest_wav.jsonl", "MERR_demo.json", "labels.txt", "transcription.csv", "README.txt")


@dataclass(frozen=True)
class DemoSample:
    """One demo sample: its id, label, transcript, peak frame and the face it shows."""

    sample_id: str
    label: str
    transcript: str
    n_frames: int
    peak_index: int
    face: str


def make_demo_dataset(
    out_dir: str | Path,
    n: int = 8,
    seconds: float = 2.0,
    seed: int = 0,
    *,
    audio_source: str = "auto",
    overwrite: bool = False,
    progress: Callable[[str], None] | None = None,
) -> Path:
    """Write the demo dataset (clips, wavs, manifests, MERR/MER2023 annotations, README) into out_dir.

    The same arguments give byte-identical files on the same software stack.

    Args:
        out_dir: folder to create or fill; must be empty unless overwrite.
        n: number of clips, 1..MAX_CLIPS.
        seconds: clip duration, in (0.2, MAX_SECONDS].
        seed: non-negative seed for faces, motion, audio and noise.
        audio_source: "auto" (espeak-ng if on PATH, else the synthesiser), "synth" or "espeak".
        overwrite: replace an earlier demo dataset in out_dir (only the files this function writes).
        progress: called with one line per clip written, e.g. print.

    Returns:
        out_dir as a Path.

    Raises:
        ValueError: for a bad n, seconds, seed or audio_source, or espeak requested but missing.
        FileExistsError: if out_dir is a file, or is not empty and overwrite is False.
    """
    use_espeak = _check_args(n, seconds, seed, audio_source)
    n, seconds, seed = int(n), float(seconds), int(seed)
    out = _prepare_dir(Path(out_dir), overwrite)
    samples = []
    for i in range(n):
        label = LABELS[i % len(LABELS)]
        sample_id = f"demo_{i:04d}"
        text = TRANSCRIPTS[label][(i // len(LABELS)) % len(TRANSCRIPTS[label])]
        rng = np.random.default_rng([seed, i])  # each clip depends on (seed, i) alone
        image, face = media.face_image(i, rng)
        frames, peak = media.animate(image, int(round(seconds * media.FPS)), rng)
        audio = media.espeak_speech(text, label, seconds) if use_espeak else media.synth_speech(label, seconds, rng)
        pcm = media.to_pcm16(audio)
        media.write_mp4(out / "clips" / f"{sample_id}.mp4", frames, pcm)
        media.write_wav(out / "audio" / f"{sample_id}.wav", pcm)
        samples.append(DemoSample(sample_id, label, text, len(frames), peak, face))
        if progress is not None:
            progress(f"[{i + 1}/{n}] clips/{sample_id}.mp4 {label} ({face}, peak frame {peak})")
    _write_annotations(out, samples)
    _write_readme(out, samples, seconds, seed, _audio_description(use_espeak))
    return out


def _check_args(n: int, seconds: float, seed: int, audio_source: str) -> bool:
    """Validate make_demo_dataset's arguments; return whether to speak with espeak-ng."""
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or not 1 <= n <= MAX_CLIPS:
        raise ValueError(f"n must be an integer in 1..{MAX_CLIPS}, got {n!r}")
    is_number = isinstance(seconds, numbers.Real) and not isinstance(seconds, bool)
    if not (is_number and math.isfinite(seconds) and 0.2 < seconds <= MAX_SECONDS):
        raise ValueError(f"seconds must be a number in (0.2, {MAX_SECONDS}], got {seconds!r}")
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if audio_source not in AUDIO_SOURCES:
        raise ValueError(f"audio_source must be one of {AUDIO_SOURCES}, got {audio_source!r}")
    if audio_source == "espeak" and not media.espeak_available():
        raise ValueError("audio_source='espeak' but espeak-ng is not on PATH")
    return audio_source == "espeak" or (audio_source == "auto" and media.espeak_available())


def _prepare_dir(out: Path, overwrite: bool) -> Path:
    """Create out/clips and out/audio; refuse a file or a non-empty folder unless overwriting."""
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"out_dir {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise FileExistsError(f"out_dir {out} is not empty; pick a new folder or pass overwrite=True (--overwrite)")
        for sub in ("clips", "audio"):
            shutil.rmtree(out / sub, ignore_errors=True)
        for name in OWN_FILES:
            (out / name).unlink(missing_ok=True)
    (out / "clips").mkdir(parents=True, exist_ok=True)
    (out / "audio").mkdir(exist_ok=True)
    return out


def _write_annotations(out: Path, samples: Sequence[DemoSample]) -> None:
    """Write the two manifests, the MERR-style JSON, the MER2023 label list and the transcriptions."""
    with open(out / "manifest.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["sample_id", "video", "audio", "transcript", "label"])
        for s in samples:  # audio left empty: the clip's own AAC track is the audio
            writer.writerow([s.sample_id, f"clips/{s.sample_id}.mp4", "", s.transcript, s.label])
    with open(out / "manifest_wav.jsonl", "w", encoding="utf-8") as f:
        for s in samples:
            row = {
                "sample_id": s.sample_id,
                "video": f"clips/{s.sample_id}.mp4",
                "audio": f"audio/{s.sample_id}.wav",
                "transcript": s.transcript,
                "label": s.label,
            }
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    merr = {s.sample_id: merr_entry(s) for s in samples}
    (out / "MERR_demo.json").write_text(json.dumps(merr, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    (out / "labels.txt").write_text(
        "".join(f"{s.sample_id} {s.n_frames} {s.label}\n" for s in samples), encoding="utf-8"
    )
    with open(out / "transcription.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["name", "sentence"])
        writer.writerows([s.sample_id, s.transcript] for s in samples)


def merr_entry(sample: DemoSample) -> dict:
    """Build a MERR-style annotation (captions, reasoning, peak frame, label) for one sample.

    Args:
        sample: the sample to describe.

    Returns:
        a dict with caption, smp_reason_caption, reason_caption, peak_index and label.
    """
    face, tone = CUES[sample.label]
    astronaut = sample.face == "astronaut"
    who = "A woman with short fair hair" if astronaut else "A person in a close-up portrait"
    says = "She says" if astronaut else "The person says"
    caption = f"{who} shows {face}, and speaks in {tone}."
    smp = f'{face[0].upper()}{face[1:]}, {tone} and the words "{sample.transcript}" together point to {sample.label}.'
    reason = (
        f"In the video, {who[0].lower()}{who[1:]} looks into the camera. Around frame {sample.peak_index} "
        f"the expression is strongest: {face}. The voice has {tone}. {says}: "
        f'"{sample.transcript}" The facial movements, the tone of voice and the content of the '
        f"sentence agree with one another, so the person most likely feels {sample.label}."
    )
    return {
        "caption": caption,
        "smp_reason_caption": smp,
        "reason_caption": reason,
        "peak_index": sample.peak_index,
        "label": sample.label,
    }


def _audio_description(use_espeak: bool) -> str:
    """Say which audio source made the speech, with espeak-ng's version when it was used."""
    if not use_espeak:
        return (
            "synthesised speech-like audio: a Rosenberg glottal pulse train with a label-dependent pitch "
            "contour, five-vowel formant resonators changing every ~150 ms, a syllable-rate envelope "
            "with short pauses, and seeded noise (espeak-ng was not used)"
        )
    done = subprocess.run(["espeak-ng", "--version"], capture_output=True, text=True)
    return f"espeak-ng speaking each transcript ({done.stdout.strip() or 'version unknown'}), resampled to 16 kHz"


def _write_readme(out: Path, samples: Sequence[DemoSample], seconds: float, seed: int, audio: str) -> None:
    """Write README.txt: what the dataset is, how it was made, and its labels."""
    counts = {label: sum(s.label == label for s in samples) for label in LABELS}
    lines = [
        "featstore demo dataset (Emotion-LLaMA / MERR style)",
        "",
        f"{len(samples)} clips of {seconds:g} s, seed {seed}; made by:",
        f"    python -m featstore.demo OUT_DIR --n {len(samples)} --seconds {seconds:g} --seed {seed} "
        f"--audio-source {'espeak' if audio.startswith('espeak-ng') else 'synth'}",
        "The same command gives byte-identical files on the same software versions.",
        "",
        f"Video: H.264 yuv420p {media.FRAME_SIZE}x{media.FRAME_SIZE} at {media.FPS} fps, with an AAC mono "
        f"track at {media.SAMPLE_RATE} Hz. Faces: scikit-image's astronaut() (Eileen Collins, NASA) and "
        "lfw_subset() faces, animated with a slow zoom, pan, tilt and brightness ramp that peak at "
        "peak_index, plus seeded sensor noise.",
        f"Audio: {audio}; the same waveform is in audio/<id>.wav (16 kHz mono 16-bit PCM).",
        ("The speech says each transcript aloud" if audio.startswith("espeak-ng") else "The speech carries no words")
        + "; transcripts, captions and labels are written to match one another.",
        "",
        "Files: clips/<id>.mp4, audio/<id>.wav, manifest.csv (audio empty: use the clip's track),",
        "manifest_wav.jsonl (audio = the wav), MERR_demo.json, labels.txt (<id> <n_frames> <label>),",
        "transcription.csv (name,sentence).",
        "",
        "Labels (clips cycle through them in this order):",
        *[f"    {label}: {counts[label]}" for label in LABELS],
    ]
    (out / "README.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")


def build_parser() -> argparse.ArgumentParser:
    """Return the command-line parser for python -m featstore.demo."""
    parser = argparse.ArgumentParser(prog="python -m featstore.demo", description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path, help="folder to write the dataset into (created; must be empty)")
    parser.add_argument("--n", type=int, default=8, help="number of clips (default: 8)")
    parser.add_argument("--seconds", type=float, default=2.0, help="duration of each clip in seconds (default: 2.0)")
    parser.add_argument("--seed", type=int, default=0, help="seed for faces, motion, audio and noise (default: 0)")
    parser.add_argument(
        "--audio-source",
        choices=AUDIO_SOURCES,
        default="auto",
        help="speech source: espeak-ng if on PATH (auto), the built-in synthesiser, or espeak-ng",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an earlier demo dataset in OUT_DIR instead of refusing a non-empty folder",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; print one line per clip and the output folder. Returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        out = make_demo_dataset(
            args.out_dir,
            args.n,
            args.seconds,
            args.seed,
            audio_source=args.audio_source,
            overwrite=args.overwrite,
            progress=print,
        )
    except (ValueError, FileExistsError) as err:
        parser.error(str(err))
    print(f"wrote demo dataset to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
