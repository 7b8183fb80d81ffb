"""Evaluation of a checkpoint on a feature cache: greedy answers, the label parsed as the original does,
accuracy / weighted F1 / UAR / WAR, a confusion matrix (JSON and PNG), per-sample predictions, and with
``emer`` the reasoning answers scored by a judge model (EMER's clue and label overlap).

Outputs in ``out_dir``: ``predictions.jsonl``, ``metrics.json``, ``confusion.json``, ``confusion.png``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainer.data.cache import Example, chunks, open_cache
from trainer.evaluation.labels import (
    INVALID,
    LABEL_SETS,
    UNKNOWN_POLICIES,
    emotion_instruction,
    get_label_set,
    parse_label,
)
from trainer.train.config import opt

__all__ = ["EvalConfig", "evaluate"]

log = logging.getLogger(__name__)
EMER_TASK = "reason_v2"  # EMER asks for the fine reasoning of stage 2
EMER_REFERENCE = ("reasoning", "smp_reason_caption", "caption")  # annotation fields holding the reference text


@dataclass
class EvalConfig:
    """Options of ``jobs/evaluate.py``; the defaults evaluate the demo checkpoint on the demo store."""

    checkpoint: str = opt("demo_out/train", "a checkpoint folder, or a run folder (its newest checkpoint)")
    cache: str = opt("zarr", "read features from the 'zarr' store or WebDataset 'shards'", choices=("zarr", "shards"))
    store: str = opt("demo_out/store.zarr", "feature store (local path or fsspec URL), for --cache zarr")
    shards: str = opt("demo_out/shards", "shard folder holding shards.json, for --cache shards")
    split: str | None = opt(None, "zarr only: evaluate this split (e.g. test) of the store; default all samples")
    labels: str = opt("merr", "label set: mer2023 (6), dfew (7) or merr (9)", choices=tuple(LABEL_SETS))
    unknown: str = opt(
        "neutral",
        "an answer whose last word is not a label counts as 'neutral' (the original) or as its own class 'invalid'",
        choices=UNKNOWN_POLICIES,
    )
    instruction: str | None = opt(None, "the emotion instruction (default: the original's, listing the label set)")
    max_new_tokens: int = opt(500, "greedy generation stops after this many new tokens (the original: 500)")
    batch_size: int = opt(8, "prompts generated together")
    limit: int | None = opt(None, "evaluate only the first N samples")
    out_dir: str = opt("demo_out/eval", "predictions.jsonl, metrics.json, confusion.json and .png go here")
    device: str = opt("auto", "auto (GPU if available), cpu or cuda", choices=("auto", "cpu", "cuda"))
    emer: bool = opt(False, "also generate reasoning answers and score them with the judge (EMER)")
    judge_url: str | None = opt(None, "OpenAI-compatible chat-completions URL (default: $EMER_JUDGE_URL)")
    judge_model: str | None = opt(None, "judge model name (default: $EMER_JUDGE_MODEL, else gpt-3.5-turbo)")
    judge_key: str | None = opt(
        None, "judge API key (default: $EMER_JUDGE_API_KEY); never printed or saved", secret=True
    )
    judge_retries: int = opt(3, "further tries after a failed judge request")
    judge_backoff_s: float = opt(1.0, "seconds before the first judge retry, doubled before each next")
    judge_timeout_s: float = opt(60.0, "seconds per judge request")
    progress: bool = opt(True, "show a progress bar")

    def __post_init__(self) -> None:
        for name in ("max_new_tokens", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} {getattr(self, name)!r} must be at least 1")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"limit {self.limit!r} must be at least 1")
        for f in dataclasses.fields(self):
            choices = f.metadata.get("choices")
            if choices and getattr(self, f.name) not in choices:
                raise ValueError(f"{f.name} {getattr(self, f.name)!r} must be one of {list(choices)}")
        if self.cache == "shards" and self.split:
            raise ValueError(f"split {self.split!r} needs --cache zarr (shards hold no split column)")
        parse_label("", get_label_set(self.labels), self.unknown)  # a set without neutral needs 'invalid'

    def saved(self) -> dict[str, Any]:
        """The config as written to metrics.json: everything but the judge key."""
        return {k: v for k, v in dataclasses.asdict(self).items() if k != "judge_key"}

    def judge(self):
        from trainer.evaluation.judge import JudgeConfig

        return JudgeConfig(
            self.judge_url,
            self.judge_model,
            self.judge_key,
            self.judge_retries,
            self.judge_backoff_s,
            self.judge_timeout_s,
        )


def _samples(ds, limit: int | None) -> Iterator[dict[str, Any]]:
    if hasattr(ds, "set_epoch"):  # shards: a stream (torch IterableDataset), in index order (no shuffle buffer)
        ds.set_epoch(0)
        items: Iterable[dict[str, Any]] = iter(ds)
    else:
        items = (ds[i] for i in range(len(ds)))
    for n, s in enumerate(items):
        if limit is not None and n >= limit:
            return
        yield s


def _truth(meta: dict[str, Any], labels: tuple[str, ...]) -> str:
    label = str(meta.get("label") or "").strip().lower()
    if label not in labels:
        raise ValueError(
            f"sample {meta.get('sample_id')!r} has label {meta.get('label')!r}, not one of the "
            f"label set {list(labels)}: choose the set that fits the data (--labels)"
        )
    return label


def _reference(meta: dict[str, Any]) -> str:
    for key in EMER_REFERENCE:
        value = meta.get(key) or (meta.get("extra") or {}).get(key)
        if isinstance(value, str) and value.strip():
            return value.strip()
    raise ValueError(
        f"sample {meta.get('sample_id')!r} has no reference reasoning for EMER (none of {list(EMER_REFERENCE)})"
    )


def evaluate(cfg: EvalConfig) -> dict[str, Any]:
    """Run the evaluation ``cfg`` describes and write its outputs.

    Returns:
        The metrics (as in metrics.json) plus ``out_dir`` and the output paths.

    Raises:
        CacheError: a cache whose spec ids differ from the checkpoint's (naming both), or a missing one.
        FileNotFoundError: no checkpoint at ``cfg.checkpoint``.
        ValueError: a true label outside the label set, naming the sample.
        JudgeError: with ``emer``, a judge that cannot be reached (naming its URL).
    """
    from tqdm import tqdm

    from trainer.evaluation.inference import load_answerer, resolve_checkpoint
    from trainer.evaluation.metrics import classification_report
    from trainer.train import checkpoint as ckpt

    labels = get_label_set(cfg.labels)
    folder = resolve_checkpoint(cfg.checkpoint)
    spec_ids = ckpt.read_state(folder)["spec_ids"]
    source = cfg.store if cfg.cache == "zarr" else cfg.shards
    split = cfg.split if cfg.cache == "zarr" else None
    ds, info = open_cache(cfg.cache, source, spec_ids, split=split, slots=tuple(spec_ids))
    client = None
    if cfg.emer:
        from trainer.evaluation.judge import JudgeClient

        client = JudgeClient(cfg.judge())  # no URL: refused before any generation
    answerer = load_answerer(folder, info.shapes, cfg.device)
    instruction = cfg.instruction or emotion_instruction(labels)
    from trainer.data.tasks import get_task

    emer_instruction = get_task(EMER_TASK).instructions[0]
    rows: list[dict[str, Any]] = []
    total = min(info.num_samples, cfg.limit or info.num_samples)
    bar = tqdm(total=total, unit="sample", disable=not cfg.progress, dynamic_ncols=True)
    for group in chunks(_samples(ds, cfg.limit), cfg.batch_size):
        feats = [{s: x[s] for s in answerer.model.slots} for x in group]
        metas = [x["meta"] for x in group]
        emo = [
            Example(x["sample_id"], f, str(m.get("transcript") or ""), "emotion", instruction, None)
            for x, f, m in zip(group, feats, metas)
        ]
        answers = answerer.answer(emo, cfg.max_new_tokens)
        for x, m, a in zip(group, metas, answers):
            pred, known = parse_label(a, labels, cfg.unknown)
            rows.append(
                {"sample_id": x["sample_id"], "truth": _truth(m, labels), "pred": pred, "known": known, "answer": a}
            )
        if client is not None:
            why = [
                Example(x["sample_id"], f, str(m.get("transcript") or ""), EMER_TASK, emer_instruction, None)
                for x, f, m in zip(group, feats, metas)
            ]
            for row, m, a in zip(rows[-len(group) :], metas, answerer.answer(why, cfg.max_new_tokens)):
                row["reasoning"], row["reference"] = a, _reference(m)
                scores = client.score(row["reference"], a)
                row["clue_overlap"], row["label_overlap"] = scores["clue"], scores["label"]
        bar.update(len(group))
    bar.close()
    if not rows:
        raise ValueError(f"no samples to evaluate in {source}" + (f" (split {cfg.split!r})" if cfg.split else ""))
    return _write(cfg, folder, spec_ids, labels, rows, classification_report)


def _write(
    cfg: EvalConfig, folder: Path, spec_ids: dict[str, str], labels: tuple[str, ...], rows: list[dict[str, Any]], report
) -> dict[str, Any]:
    from trainer.evaluation.confusion_png import draw_confusion

    classes = labels + ((INVALID,) if cfg.unknown == INVALID else ())
    rep = report([r["truth"] for r in rows], [r["pred"] for r in rows], classes)
    unknown = sum(not r["known"] for r in rows)
    metrics: dict[str, Any] = {
        "checkpoint": str(folder),
        "spec_ids": spec_ids,
        "label_set": cfg.labels,
        "unknown_policy": cfg.unknown,
        "unknown_answers": unknown,
        **{k: rep[k] for k in ("n", "accuracy", "weighted_f1", "uar", "war", "macro_f1", "per_class")},
        "config": cfg.saved(),
    }
    if cfg.unknown == INVALID:
        metrics["invalid"] = unknown
    if cfg.emer:
        metrics["emer"] = {
            "clue_overlap": sum(r["clue_overlap"] for r in rows) / len(rows),
            "label_overlap": sum(r["label_overlap"] for r in rows) / len(rows),
            "n": len(rows),
        }
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "predictions.jsonl", "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    (out / "confusion.json").write_text(
        json.dumps(
            {"classes": list(classes), "rows": "true", "columns": "predicted", "matrix": rep["confusion"]}, indent=2
        )
        + "\n"
    )
    draw_confusion(
        rep["confusion"],
        classes,
        out / "confusion.png",
        f"{cfg.labels}: {rep['n']} samples, accuracy {rep['accuracy']:.3f}",
    )
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    paths = {
        k: str(out / f)
        for k, f in (
            ("predictions", "predictions.jsonl"),
            ("metrics_file", "metrics.json"),
            ("confusion_json", "confusion.json"),
            ("confusion_png", "confusion.png"),
        )
    }
    return {**metrics, **paths, "out_dir": str(out)}
