"""Feature layouts: which cached features a model reads, and how each becomes LLM tokens, in which order.

A layout is data, one per model family, chosen by the trainer's config (``--layout``):

- ``video``: the (slot, kind) pairs whose tokens go at ``<VideoHere>``, in order;
- ``feature``: the pairs whose tokens go at ``<FeatureHere>``, in order.

Kinds (each with its projector in ``trainer.model.projector``):

- ``patches``: an EVA-style ``[1 + 4k, D]`` feature (CLS, then patch tokens in raster
  order): 4 neighbouring patch tokens concatenated, Linear(4D -> H): k tokens;
- ``cls``: the CLS row of that same ``patches`` slot, Linear(D -> H): one token;
- ``vector``: a ``[D]`` feature, Linear(D -> H): one token;
- ``frames``: a ``[N, D]`` feature (per-frame CLS tokens, or frame-level audio), one
  Linear(D -> H) shared over the N rows: N tokens.

``emotion-llama`` is the original's layout (DESIGN.md): 256 patch tokens, then local,
temporal, audio and CLS (260), bitwise what the trainer built before layouts existed.
The other two follow the slots of featstore's ``affectgpt`` and ``emotion-llama-v2``
presets.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["KINDS", "LAYOUTS", "FeatureLayout", "get_layout"]

KINDS = ("patches", "cls", "vector", "frames")


@dataclass(frozen=True)
class FeatureLayout:
    """Which slots a model reads and where their tokens go (see the module docstring)."""

    name: str
    video: tuple[tuple[str, str], ...]
    feature: tuple[tuple[str, str], ...]

    def __post_init__(self) -> None:
        pairs = self.video + self.feature
        bad = [k for _, k in pairs if k not in KINDS]
        if bad:
            raise ValueError(f"layout {self.name!r}: kinds {bad} are not among {KINDS}")
        patches = [s for s, k in pairs if k == "patches"]
        if len(patches) > 1:
            raise ValueError(f"layout {self.name!r}: at most one patches slot, got {patches}")
        for s, k in pairs:
            if k == "cls" and s not in patches:
                raise ValueError(f"layout {self.name!r}: cls of {s!r} needs {s!r} as the patches slot")
        if len(set(pairs)) != len(pairs):
            raise ValueError(f"layout {self.name!r}: a (slot, kind) pair appears twice: {list(pairs)}")

    @property
    def slots(self) -> tuple[str, ...]:
        """The cached features the model reads, in order of first use."""
        out: list[str] = []
        for s, _ in self.video + self.feature:
            if s not in out:
                out.append(s)
        return tuple(out)

    def kind_of(self, slot: str) -> str:
        """The slot's feature kind (``patches`` for a slot that also gives its ``cls``)."""
        return next(k for s, k in self.video + self.feature if s == slot and k != "cls")


LAYOUTS = {
    "emotion-llama": FeatureLayout(
        "emotion-llama",
        video=(("global", "patches"),),
        feature=(("local", "vector"), ("temporal", "vector"), ("audio", "vector"), ("global", "cls")),
    ),
    # AffectGPT: CLIP ViT-L/14 per-frame CLS tokens (8 frames) and HuBERT-large audio.
    "affectgpt": FeatureLayout("affectgpt", video=(("frames", "frames"),), feature=(("audio", "vector"),)),
    # Emotion-LLaMA-v2: EVA ViT-g as in v1, audio from Whisper-large-v3's encoder.
    "emotion-llama-v2": FeatureLayout(
        "emotion-llama-v2", video=(("global", "patches"),), feature=(("whisper", "vector"), ("global", "cls"))
    ),
}


def get_layout(name: str) -> FeatureLayout:
    """The layout called ``name``.

    Raises:
        ValueError: naming ``name`` and the layouts there are.
    """
    if name not in LAYOUTS:
        raise ValueError(f"unknown feature layout {name!r}; layouts are {sorted(LAYOUTS)}")
    return LAYOUTS[name]
