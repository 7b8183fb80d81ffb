"""Evaluation as a user runs it (jobs/evaluate.py in a subprocess) and in-process with scripted answers:
the outputs exist and agree with scikit-learn recomputed from the predictions; the original's label parsing
and the 'invalid' class reach the metrics; a stale cache and a wrong label set are refused naming the values;
EMER goes through a loopback judge without the key showing anywhere."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image
from sklearn import metrics as sk

from tests.trainer.conftest import annotation, make_cache, make_checkpoint
from tests.trainer.judge_server import judge_server, reply
from trainer.evaluation.confusion_png import CELL
from trainer.evaluation.evaluate import EvalConfig, evaluate
from trainer.evaluation.inference import Answerer

REPO = Path(__file__).resolve().parents[3]
JOB = str(REPO / "jobs" / "evaluate.py")
ENV = {**os.environ, "PYTHONWARNINGS": "ignore", "PYTHONPATH": str(REPO)}
KEY = "sk-eval-SECRET-9876543210"


@pytest.fixture(scope="module")
def trained(cache, tiny_llm, tmp_path_factory):
    """A step-0 checkpoint of the tiny model on the 8-sample cache."""
    store, _, ids = cache
    return make_checkpoint(store, tmp_path_factory.mktemp("eval-run"), tiny_llm, ids)


def _run(*args, cwd=None, env=ENV):
    return subprocess.run(
        [sys.executable, JOB, "--no-progress", *map(str, args)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _check_against_sklearn(out: Path, classes):
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    m = json.loads((out / "metrics.json").read_text())
    truth, pred = [r["truth"] for r in rows], [r["pred"] for r in rows]
    assert m["n"] == len(rows)
    assert m["accuracy"] == pytest.approx(sk.accuracy_score(truth, pred))
    assert m["weighted_f1"] == pytest.approx(
        sk.f1_score(truth, pred, labels=list(classes), average="weighted", zero_division=0)
    )
    assert m["uar"] == pytest.approx(sk.balanced_accuracy_score(truth, pred))
    cm = json.loads((out / "confusion.json").read_text())
    assert cm["classes"] == list(classes)
    assert cm["matrix"] == sk.confusion_matrix(truth, pred, labels=list(classes)).tolist()
    with Image.open(out / "confusion.png") as img:
        assert img.format == "PNG" and img.width > len(classes) * CELL and img.height > len(classes) * CELL
    return rows, m


def test_job_writes_metrics_confusion_and_predictions(cache, trained, tmp_path):
    store, _, ids = cache
    out = tmp_path / "eval"
    done = _run("--checkpoint", trained.parent, "--store", store, "--max-new-tokens", 3, "--out-dir", out)
    assert done.returncode == 0, done.stderr
    merr = ("neutral", "angry", "happy", "sad", "worried", "surprise", "fear", "contempt", "doubt")
    rows, m = _check_against_sklearn(out, merr)
    assert [r["truth"] for r in rows] == [annotation(i)["label"] for i in range(8)]
    assert m["spec_ids"] == ids and m["checkpoint"] == str(trained) and m["config"]["max_new_tokens"] == 3
    assert f"merr: 8 samples, accuracy {m['accuracy']:.4f}" in done.stdout
    assert (
        f"confusion matrix: {out}/confusion.png" in done.stdout
        and f"predictions: {out}/predictions.jsonl" in done.stdout
    )


def _scripted(monkeypatch, answers: dict[str, str]):
    def answer(self, examples, max_new_tokens):
        return [answers[e.sample_id] if e.task == "emotion" else f"reasoning of {e.sample_id}" for e in examples]

    monkeypatch.setattr(Answerer, "answer", answer)


ANSWERS = {
    f"demo_{i:04d}": a
    for i, a in enumerate(
        [
            "The emotion is Neutral.",
            "angry",
            "She looks happy!",
            "joyful",
            "I'd say: worried.",
            "sad",
            "fear",
            "",
            "doubt",
        ]
    )
}


@pytest.mark.parametrize("unknown", ["neutral", "invalid"])
def test_last_word_parsing_reaches_the_metrics(monkeypatch, cache, trained, tmp_path, unknown):
    _scripted(monkeypatch, ANSWERS)
    store, _, _ = cache
    m = evaluate(
        EvalConfig(
            checkpoint=str(trained),
            store=str(store),
            labels="mer2023",
            unknown=unknown,
            limit=6,
            out_dir=str(tmp_path),
            progress=False,
        )
    )
    # truths: neutral angry happy sad worried surprise; answers give neutral angry happy ? worried sad
    other = "neutral" if unknown == "neutral" else "invalid"
    classes = ("neutral", "angry", "happy", "sad", "worried", "surprise") + (
        ("invalid",) if unknown == "invalid" else ()
    )
    rows, saved = _check_against_sklearn(tmp_path, classes)
    assert [r["pred"] for r in rows] == ["neutral", "angry", "happy", other, "worried", "sad"]
    assert m["unknown_answers"] == saved["unknown_answers"] == 1 and m["accuracy"] == pytest.approx(4 / 6)
    assert ("invalid" in saved) == (unknown == "invalid")


def test_job_reads_shards_in_order(cache, trained, tmp_path):
    _, shards, _ = cache
    done = _run(
        "--checkpoint", trained, "--cache", "shards", "--shards", shards, "--max-new-tokens", 2, "--out-dir", tmp_path
    )
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in (tmp_path / "predictions.jsonl").read_text().splitlines()]
    assert [r["sample_id"] for r in rows] == [f"demo_{i:04d}" for i in range(8)]
    assert [r["truth"] for r in rows] == [annotation(i)["label"] for i in range(8)]


def test_job_reports_invalid_answers(cache, trained, tmp_path):
    store, _, _ = cache
    done = _run(
        "--checkpoint",
        trained,
        "--store",
        store,
        "--max-new-tokens",
        2,
        "--limit",
        2,
        "--unknown",
        "invalid",
        "--out-dir",
        tmp_path,
    )
    assert done.returncode == 0, done.stderr
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert (
        f"answers whose last word is not a label: {m['invalid']} of 2 (counted as their own class 'invalid')"
        in done.stdout
    )


def test_stale_cache_is_refused_naming_both_ids(cache, trained, tmp_path):
    _, _, ids = cache
    store, _, other = make_cache(tmp_path, n=2, weights="w1")
    done = _run("--checkpoint", trained, "--store", store, "--out-dir", tmp_path / "eval")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    named = [s for s in ids if f"spec '{s}'" in done.stderr]  # featstore names the first slot that differs
    assert named and ids[named[0]] in done.stderr and other[named[0]] in done.stderr
    assert not (tmp_path / "eval").exists()


def test_labels_outside_the_set_are_refused(monkeypatch, cache, trained, tmp_path):
    _scripted(monkeypatch, ANSWERS)
    store, _, _ = cache
    with pytest.raises(ValueError, match=r"'demo_0006' has label 'fear', not one of the label set"):
        evaluate(
            EvalConfig(
                checkpoint=str(trained), store=str(store), labels="mer2023", out_dir=str(tmp_path), progress=False
            )
        )


def test_emer_scores_through_the_judge_without_showing_the_key(cache, trained, tmp_path):
    store, _, _ = cache
    script = [
        reply('{"clue_overlap": 6, "label_overlap": 8}'),
        (503, {"error": "busy"}),
        reply("clue overlap: 9, label overlap: 4"),
    ]
    with judge_server(script) as (url, seen):
        env = {**ENV, "EMER_JUDGE_URL": url, "EMER_JUDGE_API_KEY": KEY}
        done = _run(
            "--checkpoint",
            trained,
            "--store",
            store,
            "--max-new-tokens",
            2,
            "--limit",
            2,
            "--emer",
            "--judge-backoff-s",
            0.01,
            "--out-dir",
            tmp_path,
            env=env,
        )
    assert done.returncode == 0, done.stderr
    assert len(seen) == 3 and all(r["headers"]["Authorization"] == f"Bearer {KEY}" for r in seen)
    assert [annotation(i)["reasoning"] in seen[k]["body"]["messages"][1]["content"] for i, k in ((0, 0), (1, 2))] == [
        True,
        True,
    ]
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert m["emer"] == {"clue_overlap": 7.5, "label_overlap": 6.0, "n": 2}
    assert "EMER: clue overlap 7.50, label overlap 6.00" in done.stdout
    assert "judge_key" not in m["config"]
    for text in (done.stdout, done.stderr, *(p.read_text() for p in tmp_path.glob("*.json*"))):
        assert KEY not in text


def test_emer_without_a_judge_url_says_how_to_set_one(cache, trained, tmp_path):
    store, _, _ = cache
    env = {k: v for k, v in ENV.items() if not k.startswith("EMER_JUDGE")}
    done = _run("--checkpoint", trained, "--store", store, "--emer", "--out-dir", tmp_path, env=env)
    assert done.returncode == 2 and "EMER_JUDGE_URL" in done.stderr and "--judge-url" in done.stderr


def test_no_arguments_evaluate_the_demo(demo_tree):
    root, _ = demo_tree
    done = _run("--max-new-tokens", 8, cwd=root)  # every other option at its default (500 tokens: jobs' own run)
    assert done.returncode == 0, done.stderr
    assert "merr: 3 samples" in done.stdout and "demo_out/train/checkpoints/step-00000000" in done.stdout
    for name in ("metrics.json", "confusion.json", "confusion.png", "predictions.jsonl"):
        assert (root / "demo_out" / "eval" / name).is_file()


def test_no_arguments_without_demo_say_what_to_run(demo_tree, tmp_path):
    done = _run(cwd=tmp_path)
    assert done.returncode == 2 and "python jobs/extract.py" in done.stderr
    root, _ = demo_tree
    done = _run("--store", root / "demo_out" / "store.zarr", cwd=tmp_path)
    assert done.returncode == 2 and "python jobs/train.py" in done.stderr and "Traceback" not in done.stderr
