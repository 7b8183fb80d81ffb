"""The Emotion-LLaMA prompt: token layout and the one function that embeds it, for training and generation.

    <s>[INST] <video><VideoHere></video> <feature><FeatureHere></feature> The person in video says:
    {transcript}. [{task}] {instruction} [/INST] {answer}</s>

The patch tokens (256 at real size) go at ``<VideoHere>``, the local, temporal,
audio and CLS tokens (4) at ``<FeatureHere>``, as in training in the original.
(The original's generation splices all 260 at ``<VideoHere>``; here generation
uses the same layout, without the answer.) Loss is on the answer and ``</s>``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

__all__ = ["IGNORE_INDEX", "PromptIds", "TEMPLATE", "batch_prompts", "embed_prompt", "prompt_text", "tokenize_prompt"]

TEMPLATE = (
    "[INST] <video><VideoHere></video> <feature><FeatureHere></feature> "
    "The person in video says: {transcript}. [{task}] {instruction} [/INST]"
)
IGNORE_INDEX = -100  # torch's cross-entropy skips this label
_VIDEO, _FEATURE = "<VideoHere>", "<FeatureHere>"


def prompt_text(transcript: str, task: str, instruction: str) -> str:
    """The prompt as text, placeholders included (what a human reads in logs)."""
    return TEMPLATE.format(transcript=transcript, task=task, instruction=instruction)


@dataclass(frozen=True)
class PromptIds:
    """One tokenized example: the three text pieces around the two placeholders, and the answer.

    Attributes:
        pieces: ids before ``<VideoHere>`` (BOS first), between the placeholders, after ``<FeatureHere>``.
        answer: answer ids followed by EOS; empty for generation.
    """

    pieces: tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]
    answer: tuple[int, ...] = ()


def tokenize_prompt(
    tokenizer,
    transcript: str,
    task: str,
    instruction: str,
    answer: str | None = None,
    max_txt_len: int | None = None,
) -> PromptIds:
    """Tokenize one example as the original does: each text piece on its own, BOS before the
    first, the answer on its own followed by EOS.

    Args:
        tokenizer: a transformers tokenizer with ``bos_token_id`` and ``eos_token_id``.
        transcript, task, instruction: fill the template.
        answer: the target text; None for a generation prompt.
        max_txt_len: keep this many answer tokens, ``</s>`` counted, as the original's
            tokenizer call (``truncation=True, max_length=max_txt_len`` on answer + ``</s>``) does:
            a longer answer loses its end, ``</s>`` included. None: all.

    Raises:
        ValueError: when the tokenizer has no BOS or EOS token.
    """
    if tokenizer.bos_token_id is None or tokenizer.eos_token_id is None:
        raise ValueError(f"tokenizer {type(tokenizer).__name__} needs a BOS and an EOS token")
    text = prompt_text(transcript, task, instruction)
    before, rest = text.split(_VIDEO)
    middle, after = rest.split(_FEATURE)
    ids = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in (before, middle, after)]
    pieces = ((tokenizer.bos_token_id, *ids[0]), tuple(ids[1]), tuple(ids[2]))
    if answer is None:
        return PromptIds(pieces)
    ids = (*tokenizer(answer, add_special_tokens=False)["input_ids"], tokenizer.eos_token_id)
    return PromptIds(pieces, ids if max_txt_len is None else ids[:max_txt_len])


def batch_prompts(
    prompts: Sequence[PromptIds], num_video: int, num_feature: int, pad_id: int, padding_side: str = "right"
) -> dict[str, torch.Tensor]:
    """Lay a batch of prompts out as padded id rows with slots for the feature tokens.

    Args:
        prompts: tokenized examples.
        num_video: tokens at ``<VideoHere>`` (the patch tokens).
        num_feature: tokens at ``<FeatureHere>`` (local, temporal, audio, CLS).
        pad_id: id written at padding and at feature slots (their embeddings are replaced).
        padding_side: "right" for training, "left" for generation (prompts end together).

    Returns:
        ``input_ids``, ``feature_mask`` (True where a feature token goes), ``attention_mask``
        and ``labels`` (IGNORE_INDEX except on the answer and EOS), each ``[B, T]``.

    Raises:
        ValueError: naming a bad padding side.
    """
    if padding_side not in ("left", "right"):
        raise ValueError(f"padding_side {padding_side!r} must be 'left' or 'right'")
    rows = []
    for p in prompts:
        ids = [*p.pieces[0], *[pad_id] * num_video, *p.pieces[1], *[pad_id] * num_feature, *p.pieces[2], *p.answer]
        feat = [False] * len(p.pieces[0]) + [True] * num_video + [False] * len(p.pieces[1]) + [True] * num_feature
        feat += [False] * (len(p.pieces[2]) + len(p.answer))
        labels = [IGNORE_INDEX] * (len(ids) - len(p.answer)) + list(p.answer)
        rows.append((ids, feat, labels))
    width = max(len(r[0]) for r in rows)
    out = {"input_ids": [], "feature_mask": [], "attention_mask": [], "labels": []}
    for ids, feat, labels in rows:
        pad = width - len(ids)
        parts = {
            "input_ids": (ids, pad_id),
            "feature_mask": (feat, False),
            "attention_mask": ([1] * len(ids), 0),
            "labels": (labels, IGNORE_INDEX),
        }
        for key, (values, fill) in parts.items():
            out[key].append(values + [fill] * pad if padding_side == "right" else [fill] * pad + values)
    return {
        "input_ids": torch.tensor(out["input_ids"], dtype=torch.long),
        "feature_mask": torch.tensor(out["feature_mask"], dtype=torch.bool),
        "attention_mask": torch.tensor(out["attention_mask"], dtype=torch.long),
        "labels": torch.tensor(out["labels"], dtype=torch.long),
    }


def embed_prompt(
    embedding: nn.Module, input_ids: torch.Tensor, feature_mask: torch.Tensor, feature_tokens: torch.Tensor
) -> torch.Tensor:
    """The LLM's input embeddings: token embeddings with the feature tokens spliced into their slots.

    The one function that builds prompt embeddings, for training and for generation.

    Args:
        embedding: the LLM's input embedding layer.
        input_ids: ``[B, T]`` from ``batch_prompts``.
        feature_mask: ``[B, T]``, True at the feature slots, ``N`` of them in each row.
        feature_tokens: ``[B, N, H]`` from the projector, in slot order.

    Returns:
        ``[B, T, H]`` embeddings.

    Raises:
        ValueError: when a row's slot count differs from the feature tokens given.
    """
    slots = feature_mask.sum(dim=1)
    if not bool((slots == feature_tokens.shape[1]).all()):
        raise ValueError(f"prompt rows have {slots.tolist()} feature slots, projector gave {feature_tokens.shape[1]}")
    embeds = embedding(input_ids)
    # masked_scatter fills slots row by row in order: patch tokens, then local, temporal, audio, CLS.
    return embeds.masked_scatter(feature_mask.unsqueeze(-1), feature_tokens.to(embeds.dtype))
