"""README claims of jobs/evaluate.py: ``--max-new-tokens`` is 500 by default and that many tokens are
generated; ``--labels dfew`` from DFEW's own label file (integers 1-7) through featstore's manifest to
UAR and WAR, which equal scikit-learn's."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from sklearn import metrics as sk

from featstore import FeatureSpec, FeatureStore
from featstore.manifest import load_manifest
from tests.trainer.conftest import TINY_SHAPES, make_checkpoint
from trainer.evaluation.evaluate import EvalConfig, evaluate
from trainer.evaluation.inference import Answerer
from trainer.model.emotion_llama import EmotionLlama
from trainer.train.config import parse_dataclass

REPO = Path(__file__).resolve().parents[3]
JOB = str(REPO / "jobs" / "evaluate.py")
ENV = {**os.environ, "PYTHONWARNINGS": "ignore", "PYTHONPATH": str(REPO)}
# DFEW's label file: video name, label 1-7 (the dataset's README: 1 happy, 2 sad, 3 neutral, 4 angry,
# 5 surprise, 6 disgust, 7 fear), written out here rather than taken from featstore.names.
DFEW_NAMES = {1: "happy", 2: "sad", 3: "neutral", 4: "angry", 5: "surprise", 6: "disgust", 7: "fear"}
DFEW_ROWS = [("00001", 1), ("00002", 1), ("00003", 6), ("00004", 6), ("00005", 6), ("00006", 3), ("00007", 7)]
# Scripted answers: right for some, wrong for others, one unknown word (neutral), so that UAR, WAR and
# the macro and weighted scores all differ.
ANSWERS = {
    "00001": "The person looks happy.",
    "00002": "sad",
    "00003": "disgust",
    "00004": "I think: disgust!",
    "00005": "fear",
    "00006": "bored",
    "00007": "fear",
}


@pytest.fixture(scope="module")
def dfew(demo_tree, tiny_llm, tmp_path_factory):
    """A DFEW folder (Clip/original/0000N.mp4, copies of the demo's real clips, and set_1_test.csv),
    its store (features seeded random) and a step-0 checkpoint of the tiny model trained on those specs.

    Returns:
        (store path, checkpoint folder).
    """
    root = tmp_path_factory.mktemp("dfew")
    clips = sorted((demo_tree[0] / "demo_out" / "data" / "clips").glob("*.mp4"))
    (root / "data" / "Clip" / "original").mkdir(parents=True)
    for i, (name, _) in enumerate(DFEW_ROWS):
        shutil.copy(clips[i % len(clips)], root / "data" / "Clip" / "original" / f"{name}.mp4")
    lines = ["video_name,label", *(f"{name},{label}" for name, label in DFEW_ROWS)]
    (root / "data" / "set_1_test.csv").write_text("\n".join(lines) + "\n")
    manifest = load_manifest(root / "data", "dfew")
    assert not manifest.problems and [s.sample_id for s in manifest] == [n for n, _ in DFEW_ROWS]
    store = FeatureStore.create(root / "store.zarr")
    store.add_manifest(manifest)
    rng = np.random.default_rng(1)
    ids = {}
    for slot, shape in TINY_SHAPES.items():
        spec = FeatureSpec(name=slot, encoder="TestEncoder", weights="w0", shape=shape, dtype="float16")
        feat = store.add_spec(spec, unit_size=8)  # one unit holds all 7
        feat.write_unit(0, rng.standard_normal((len(DFEW_ROWS), *shape)).astype(np.float16))
        ids[slot] = spec.id
    return root / "store.zarr", make_checkpoint(root / "store.zarr", root / "run", tiny_llm, ids)


def _sklearn(truth, pred):
    present = sorted(set(truth))
    return {
        "accuracy": sk.accuracy_score(truth, pred),
        "uar": sk.recall_score(truth, pred, labels=present, average="macro", zero_division=0),
        "war": sk.recall_score(truth, pred, labels=present, average="weighted", zero_division=0),
    }


def test_labels_dfew_from_the_job(dfew, tmp_path):
    """The job as a user runs it: DFEW's integers arrive as its label names, the 7 DFEW classes, metrics
    equal to scikit-learn's on the predictions it wrote."""
    store, checkpoint = dfew
    done = subprocess.run(
        [sys.executable, JOB, "--no-progress", "--checkpoint", str(checkpoint), "--store", str(store)]
        + ["--labels", "dfew", "--max-new-tokens", "3", "--out-dir", str(tmp_path)],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [json.loads(line) for line in (tmp_path / "predictions.jsonl").read_text().splitlines()]
    assert [(r["sample_id"], r["truth"]) for r in rows] == [(n, DFEW_NAMES[label]) for n, label in DFEW_ROWS]
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert m["label_set"] == "dfew" and m["n"] == len(DFEW_ROWS)
    classes = json.loads((tmp_path / "confusion.json").read_text())["classes"]
    assert sorted(classes) == sorted(DFEW_NAMES.values())
    want = _sklearn([r["truth"] for r in rows], [r["pred"] for r in rows])
    assert {k: m[k] for k in want} == pytest.approx(want, abs=1e-12)
    assert f"UAR {m['uar']:.4f}, WAR {m['war']:.4f}" in done.stdout


@pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true")  # "sad": on purpose
def test_labels_dfew_uar_and_war_equal_scikit_learn(monkeypatch, dfew, tmp_path):
    """Answers scripted over several classes (the untrained model says no label word): UAR is the mean
    recall over the classes in the truth, WAR the support-weighted recall."""
    store, checkpoint = dfew
    monkeypatch.setattr(
        Answerer, "answer", lambda self, examples, max_new_tokens: [ANSWERS[e.sample_id] for e in examples]
    )
    cfg = EvalConfig(checkpoint=str(checkpoint), store=str(store), labels="dfew", out_dir=str(tmp_path), progress=False)
    m = evaluate(cfg)
    truth = [DFEW_NAMES[label] for _, label in DFEW_ROWS]
    pred = ["happy", "sad", "disgust", "disgust", "fear", "neutral", "fear"]
    rows = [json.loads(line) for line in (tmp_path / "predictions.jsonl").read_text().splitlines()]
    assert [r["pred"] for r in rows] == pred and m["unknown_answers"] == 1
    want = _sklearn(truth, pred)
    assert {k: m[k] for k in want} == pytest.approx(want, abs=1e-12)
    assert abs(m["uar"] - m["war"]) > 0.05  # 0.79 and 0.71: a UAR computed as WAR (or over all 7) shows
    assert m["uar"] == pytest.approx(sk.balanced_accuracy_score(truth, pred), abs=1e-12)
    assert m["weighted_f1"] == pytest.approx(
        sk.f1_score(truth, pred, labels=sorted(DFEW_NAMES.values()), average="weighted", zero_division=0), abs=1e-12
    )


def test_default_max_new_tokens_is_the_readmes_and_reaches_generation(monkeypatch, dfew, tmp_path):
    """The job's default (parsed as jobs/evaluate.py parses it) is the README's, and generation runs that
    many tokens: the untrained model never says </s>, so its answer is exactly that long."""
    claimed = re.search(r"`--max-new-tokens`, (\d+) by default", (REPO / "README.md").read_text())
    assert claimed, "README no longer states evaluate's default --max-new-tokens"
    store, checkpoint = dfew
    argv = ["--checkpoint", str(checkpoint), "--store", str(store), "--labels", "dfew", "--limit", "1"]
    cfg = parse_dataclass(EvalConfig, [*argv, "--out-dir", str(tmp_path), "--no-progress"])
    assert cfg.max_new_tokens == int(claimed.group(1))
    generated = []
    generate = EmotionLlama.generate

    def counted(self, batch, *args, **kwargs):
        ids = generate(self, batch, *args, **kwargs)
        generated.append(tuple(ids.shape))
        return ids

    monkeypatch.setattr(EmotionLlama, "generate", counted)
    evaluate(cfg)
    assert generated == [(1, int(claimed.group(1)))]
