"""The audio encoder: HuBERT-large on a clip's 16 kHz waveform, last layer mean over time.

Each clip runs alone, at its own length, with no padding and no attention
mask. Padding a batch changes HuBERT's outputs for the shorter clips: the
convolutional feature encoder sees the zeros at the edge of its receptive
field, the positional convolution (kernel 128) smears them into valid frames,
and a ``group`` norm feature extractor (base models) normalises over the
padded length. Running clips one by one makes a clip's feature independent of
whatever else is in the batch, which the store's determinism needs; the cost
is small next to decoding, and a clip is thousands of frames of work anyway.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from transformers import HubertModel

from featstore.checks import positive_int
from featstore.encoders import base, checkpoints
from featstore.spec import FeatureSpec

AUDIO_KEY = "audio"
LENGTH_KEY = "audio_len"
# Wav2Vec2FeatureExtractor.zero_mean_unit_var_norm adds this to the variance.
NORM_EPS = 1e-7


def normalize_waveform(x: np.ndarray) -> np.ndarray:
    """Zero mean, unit variance over one clip, in float32, as ``Wav2Vec2FeatureExtractor(do_normalize=True)``."""
    return (x - x.mean()) / np.sqrt(x.var() + NORM_EPS)


class HubertAudioEncoder:
    """Callable for Ray Data ``map_batches``: ``{"audio", "audio_len"}`` to ``{"audio": [B, D]}``.

    ``audio`` is float32 ``[B, L]`` mono at ``sample_rate``, zero-padded on the
    right; ``audio_len`` int64 ``[B]`` the valid samples of each row. The
    feature is the mean of ``last_hidden_state`` (the last layer, after the
    encoder's final layer norm in the large models) over the clip's frames,
    computed in float32. The ``audio`` column is replaced by the feature;
    ``audio_len`` is dropped; other columns pass through.

    Args:
        source: A folder or hub name of a HuBERT checkpoint, e.g. ``"TencentGameMate/chinese-hubert-large"``.
        sample_rate: the rate the waveform must already be at (recorded, not resampled here).
        normalize: zero-mean unit-variance each clip over its valid samples (the
            checkpoint's preprocessor_config ``do_normalize``).
        name: the feature's name in the store.
        **common: as ``EvaGlobalEncoder`` (``clips_per_forward`` is 1: each clip alone);
            ``upstream`` records e.g. the audio decoder, downmix, maximum seconds.

    Raises:
        CheckpointNotFoundError: the source cannot be found.
        CheckpointError: its weights do not fit ``HubertModel``.
        ValueError: naming any bad parameter.
    """

    def __init__(
        self,
        source: str,
        *,
        sample_rate: int = 16000,
        normalize: bool = True,
        name: str = "audio",
        **common: Any,
    ) -> None:
        self.sample_rate = positive_int("sample_rate", sample_rate)
        if not isinstance(normalize, bool):
            raise ValueError(f"normalize must be a bool, got {normalize!r}")
        self.normalize = normalize
        base.init_common(self, source, name, clips_per_forward=1, **common)  # each clip alone at its own length
        model = checkpoints.load_model(name, HubertModel, self.source, attn_implementation=self.attn)
        base.adopt_model(self, model)
        self.min_samples = min_input_samples(model)

    @property
    def spec(self) -> FeatureSpec:
        """The FeatureSpec of what this encoder writes."""
        preprocess = {
            "sample_rate": self.sample_rate,
            "channels": 1,
            "normalize": "zero_mean_unit_var per clip, eps 1e-07" if self.normalize else "none",
            "padding": "none (each clip alone at its own length)",
            "pooling_dtype": "float32",
        }
        return base.encoder_spec(self, preprocess, (self.model.config.hidden_size,), "mean_time")

    def preprocess(self, waveform: np.ndarray) -> torch.Tensor:
        """One clip's valid float32 samples ``[n]`` to the model input ``[1, n]`` (on the CPU)."""
        x = normalize_waveform(waveform) if self.normalize else waveform
        return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).unsqueeze(0)

    def forward(self, input_values: torch.Tensor) -> torch.Tensor:
        """The model on ``[1, n]`` samples: float32 last-layer frames ``[1, T, D]`` on the CPU."""
        x = input_values.to(self.device, self.compute_dtype)
        return self.model(input_values=x).last_hidden_state.float().cpu()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Encode one batch; see the class docstring for columns.

        Raises:
            KeyError: a column is missing.
            ValueError: bad shapes or dtypes, or a length out of range or shorter than
                the model's receptive field (naming the row and the length).
        """
        audio = base.require_column(batch, AUDIO_KEY, 2, np.float32)
        lengths = base.require_column(batch, LENGTH_KEY, 1, np.int64)
        if len(lengths) != len(audio):
            raise ValueError(f"{len(audio)} rows of {AUDIO_KEY!r} but {len(lengths)} of {LENGTH_KEY!r}")
        for i, n in enumerate(lengths):
            if not self.min_samples <= n <= audio.shape[1]:
                raise ValueError(
                    f"row {i}: {LENGTH_KEY} {int(n)} is outside [{self.min_samples}, {audio.shape[1]}] "
                    f"(at least one frame of the feature encoder, at most the row length)"
                )
        out = np.empty((len(audio), self.model.config.hidden_size), dtype=self.output_dtype)
        with torch.inference_mode():
            for i, n in enumerate(lengths):
                out[i] = self.forward(self.preprocess(audio[i, :n])).mean(dim=1)[0].numpy()
        return base.pass_through(batch, (AUDIO_KEY, LENGTH_KEY), self.name, out)


def min_input_samples(model: HubertModel) -> int:
    """The fewest samples that give the convolutional feature encoder one output frame (400 at 16 kHz)."""
    n = 1
    for kernel, stride in reversed(list(zip(model.config.conv_kernel, model.config.conv_stride))):
        n = (n - 1) * stride + kernel
    return n
