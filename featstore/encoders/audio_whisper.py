"""The whisper encoder: Whisper's audio encoder on a clip's 30 s log-mel window, last layer.

Emotion-LLaMA-v2 hears with Whisper-large-v3 (``openai/whisper-large-v3``):
only ``WhisperModel``'s encoder runs, on the input Whisper expects, which is
``WhisperFeatureExtractor``'s output: the 16 kHz mono waveform padded with
zeros (or truncated) to 30 s, then a log-mel spectrogram of 3000 frames
(128 mel bins in large-v3; torch STFT on the CPU, as the extractor computes it
when torch is installed). The encoder halves that to 1500 frames of width 1280.

Pooling (recorded in the spec):

- ``mean`` (default): the mean of the last layer over the frames that hold the
  clip's real audio, the first ``ceil(n / 320)`` of the 1500 for ``n`` samples
  (one encoder frame per 2 mel frames of 160 samples; all 1500 for 30 s or
  more), computed in float32: ``[1280]``. The zero padding's frames are left
  out, so a 3 s clip is not averaged with 27 s of silence.
- ``none``: every frame, ``[1500, 1280]`` (frame-level, 3.84 MB a clip in float16).

The extractor runs one clip at a time (its log-mel is scaled by each clip's own
maximum either way) and the model on ``clips_per_forward`` clips, all of the
same 3000-frame size.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np
import torch
from transformers import WhisperFeatureExtractor
from transformers.models.whisper.modeling_whisper import WhisperEncoder

from featstore.checks import one_of, positive_int
from featstore.encoders import base, checkpoints
from featstore.errors import CheckpointError
from featstore.spec import FeatureSpec

AUDIO_KEY = "audio"
LENGTH_KEY = "audio_len"
POOLINGS = ("mean", "none")
_POOLING_NAMES = {"mean": "mean_real_audio_frames", "none": "none"}
# Where the encoder's tensors sit in the two checkpoint layouts accepted: a saved
# WhisperForConditionalGeneration (openai/whisper-large-v3) or a saved WhisperModel.
PREFIXES = ("model.encoder.", "encoder.")
MODEL_TYPE = "whisper"


class WhisperAudioEncoder:
    """Callable for Ray Data ``map_batches``: ``{"audio", "audio_len"}`` to ``{"whisper": [B, D]}`` (or ``[B, T, D]``).

    ``audio`` is float32 ``[B, L]`` mono at 16 kHz, zero-padded on the right;
    ``audio_len`` int64 ``[B]`` the valid samples of each row (the same columns
    as ``HubertAudioEncoder``). Both are dropped; other columns pass through.

    Args:
        source: A folder or hub name of a Whisper checkpoint, e.g. ``"openai/whisper-large-v3"``.
        pooling: ``"mean"`` over the frames of real audio, or ``"none"`` (every frame).
        sample_rate: the rate the waveform must already be at (Whisper's 16 kHz).
        name: the feature's name in the store.
        **common: as ``EvaGlobalEncoder``; ``upstream`` records the audio decoder.

    Raises:
        CheckpointNotFoundError: the source cannot be found.
        CheckpointError: the source is not a Whisper checkpoint, or its encoder weights do not fit.
        ValueError: naming any bad parameter.
    """

    def __init__(
        self, source: str, *, pooling: str = "mean", sample_rate: int = 16000, name: str = "whisper", **common: Any
    ) -> None:
        self.pooling = one_of("pooling", pooling, POOLINGS)
        self.sample_rate = positive_int("sample_rate", sample_rate)
        base.init_common(self, source, name, **common)
        base.adopt_model(self, load_whisper_encoder(name, self.source, self.attn))
        config = self.model.config
        self.extractor = WhisperFeatureExtractor(feature_size=config.num_mel_bins, sampling_rate=self.sample_rate)
        if self.extractor.nb_max_frames != 2 * config.max_source_positions:
            raise ValueError(
                f"{self.extractor.nb_max_frames} log-mel frames from the extractor, but the encoder takes "
                f"{2 * config.max_source_positions}"
            )
        self.num_frames = config.max_source_positions
        # Samples per encoder frame: a mel frame is hop_length samples, the encoder's second conv strides 2.
        self.samples_per_frame = self.extractor.hop_length * 2
        width = config.d_model
        self.feature_shape = (width,) if self.pooling == "mean" else (self.num_frames, width)

    @property
    def spec(self) -> FeatureSpec:
        """The FeatureSpec of what this encoder writes."""
        fe = self.extractor
        preprocess = {
            "sample_rate": self.sample_rate,
            "channels": 1,
            "window_seconds": fe.chunk_length,
            "padding": "zeros to 30 s, longer clips truncated (WhisperFeatureExtractor)",
            "log_mel": {
                "mel_bins": fe.feature_size,
                "n_fft": fe.n_fft,
                "hop_length": fe.hop_length,
                "frames": fe.nb_max_frames,
                "dither": fe.dither,
                "stft": "torch, cpu, one clip a call",
            },
            "layer": "last_hidden_state (after the encoder's final layer_norm)",
            "pooled_frames": (
                f"the first ceil(n / {self.samples_per_frame}) of {self.num_frames}, those holding real audio"
                if self.pooling == "mean"
                else f"all {self.num_frames}"
            ),
            "pooling_dtype": "float32",
        }
        return base.encoder_spec(self, preprocess, self.feature_shape, _POOLING_NAMES[self.pooling])

    def preprocess(self, waveform: np.ndarray) -> torch.Tensor:
        """One clip's valid float32 samples ``[n]`` to its log-mel input ``[1, mel_bins, 3000]`` (on the CPU)."""
        mel = self.extractor(
            np.ascontiguousarray(waveform, dtype=np.float32), sampling_rate=self.sample_rate, return_tensors="np"
        )["input_features"]
        return torch.from_numpy(mel)

    def real_frames(self, n: int) -> int:
        """Encoder frames holding real audio for a clip of ``n`` samples (the rest is the 30 s padding)."""
        return max(1, min(self.num_frames, math.ceil(n / self.samples_per_frame)))

    def forward(self, input_features: torch.Tensor) -> torch.Tensor:
        """The encoder on ``[B, mel_bins, 3000]`` log-mels: float32 last-layer frames ``[B, 1500, D]`` on the CPU."""
        x = input_features.to(self.device, self.compute_dtype)
        return self.model(input_features=x).last_hidden_state.float().cpu()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Encode one batch; see the class docstring for columns.

        Raises:
            KeyError: a column is missing.
            ValueError: bad shapes or dtypes, or a length out of range (naming the row).
        """
        audio = base.require_column(batch, AUDIO_KEY, 2, np.float32)
        lengths = base.require_column(batch, LENGTH_KEY, 1, np.int64)
        if len(lengths) != len(audio):
            raise ValueError(f"{len(audio)} rows of {AUDIO_KEY!r} but {len(lengths)} of {LENGTH_KEY!r}")
        for i, n in enumerate(lengths):
            if not 1 <= n <= audio.shape[1]:
                raise ValueError(f"row {i}: {LENGTH_KEY} {int(n)} is outside [1, {audio.shape[1]}]")
        out = np.empty((len(audio), *self.feature_shape), dtype=self.output_dtype)
        with torch.inference_mode():
            for a, b in base.chunks(len(audio), self.clips_per_forward):
                mels = torch.cat([self.preprocess(audio[i, : lengths[i]]) for i in range(a, b)])
                hidden = self.forward(mels)
                for i in range(a, b):
                    frames = hidden[i - a]
                    out[i] = frames[: self.real_frames(int(lengths[i]))].mean(0) if self.pooling == "mean" else frames
        return base.pass_through(batch, (AUDIO_KEY, LENGTH_KEY), self.name, out)


def load_whisper_encoder(slot: str, source: str, attn: str) -> WhisperEncoder:
    """Whisper's encoder alone from a full checkpoint: only its tensors are read, the decoder is never built.

    Raises:
        CheckpointNotFoundError: the source cannot be found.
        CheckpointError: the checkpoint is not Whisper, or its encoder weights do not fit.
    """
    config = checkpoints.load_config(slot, source)
    if config.model_type != MODEL_TYPE:
        raise CheckpointError(
            f"{slot} encoder: checkpoint {source!r} has model_type {config.model_type!r}; WhisperEncoder needs "
            f"{MODEL_TYPE!r}"
        )
    config = copy.deepcopy(config)  # the cached config is not changed
    config._attn_implementation = attn
    state = _encoder_state(slot, source)
    with torch.device("meta"):
        model = WhisperEncoder(config)
    checkpoints.assign_weights(slot, source, model, state)
    return model


def _encoder_state(slot: str, source: str) -> dict[str, torch.Tensor]:
    """The encoder's tensors under whichever of ``PREFIXES`` the checkpoint uses."""
    for prefix in PREFIXES:
        try:
            return checkpoints.load_prefixed_weights(slot, source, prefix)
        except CheckpointError:
            continue
    raise CheckpointError(f"{slot} encoder: checkpoint {source!r} has no weights under {list(PREFIXES)}")
