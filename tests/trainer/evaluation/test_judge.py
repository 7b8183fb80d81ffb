"""The EMER judge client against a loopback chat-completions server: scores parsed on the 1-10 scale, the key
sent only as a bearer header (never in repr, logs or errors), bounded retries with doubling backoff, final
HTTP errors not retried, and an unreachable URL named in the error."""

from __future__ import annotations

import logging
import socket

import pytest

from tests.trainer.judge_server import judge_server, reply
from trainer.evaluation.judge import JudgeClient, JudgeConfig, JudgeError, parse_scores

KEY = "sk-test-SECRET-0123456789"


def _client(url, sleeps, **kw):
    return JudgeClient(JudgeConfig(url=url, model="judge-1", api_key=KEY, **kw), sleep=sleeps.append)


def test_scores_come_back_and_the_key_goes_only_in_the_header(caplog):
    caplog.set_level(logging.DEBUG)
    sleeps: list[float] = []
    with judge_server([reply('Here: {"clue_overlap": 7, "label_overlap": 9}')]) as (url, seen):
        scores = _client(url, sleeps).score("Brows lowered: angry.", "The person frowns; angry.")
    assert scores == {"clue": 7.0, "label": 9.0}
    assert len(seen) == 1 and seen[0]["path"] == "/v1/chat/completions"
    assert seen[0]["headers"]["Authorization"] == f"Bearer {KEY}"
    body = seen[0]["body"]
    assert body["model"] == "judge-1" and body["temperature"] == 0
    assert "Brows lowered: angry." in body["messages"][1]["content"]
    assert KEY not in repr(JudgeConfig(url=url, api_key=KEY))
    assert KEY not in caplog.text and sleeps == []


def test_config_reads_the_environment(monkeypatch):
    monkeypatch.setenv("EMER_JUDGE_URL", "http://127.0.0.1:9/v1/chat/completions")
    monkeypatch.setenv("EMER_JUDGE_MODEL", "m")
    monkeypatch.setenv("EMER_JUDGE_API_KEY", KEY)
    cfg = JudgeConfig()
    assert (cfg.url, cfg.model, cfg.api_key) == ("http://127.0.0.1:9/v1/chat/completions", "m", KEY)
    assert JudgeConfig(url="http://x/y", api_key="other").api_key == "other"  # config wins over environment
    monkeypatch.delenv("EMER_JUDGE_URL")
    with pytest.raises(ValueError, match="EMER_JUDGE_URL"):
        JudgeClient(JudgeConfig())
    with pytest.raises(ValueError, match="'ftp://x'"):
        JudgeConfig(url="ftp://x")


def test_transient_errors_are_retried_with_doubling_backoff(caplog):
    caplog.set_level(logging.DEBUG)
    sleeps: list[float] = []
    script = [(503, {"error": "busy"}), (429, {"error": "slow down"}), reply('{"clue_overlap": 3, "label_overlap": 4}')]
    with judge_server(script) as (url, seen):
        assert _client(url, sleeps, retries=3, backoff_s=0.5).score("a", "b") == {"clue": 3.0, "label": 4.0}
    assert len(seen) == 3 and sleeps == [0.5, 1.0]
    assert "HTTP 503" in caplog.text and KEY not in caplog.text


def test_retries_are_bounded_and_the_error_names_the_url(caplog):
    caplog.set_level(logging.DEBUG)
    sleeps: list[float] = []
    with judge_server([], default=(503, {"error": "down"})) as (url, seen):
        with pytest.raises(JudgeError) as err:
            _client(url, sleeps, retries=2, backoff_s=0.25).score("a", "b")
    assert len(seen) == 3 and sleeps == [0.25, 0.5]
    assert url in str(err.value) and "3 tries" in str(err.value) and KEY not in str(err.value)
    assert KEY not in caplog.text


def test_a_refusal_is_not_retried():
    sleeps: list[float] = []
    with judge_server([(401, {"error": "bad key"})]) as (url, seen):
        with pytest.raises(JudgeError, match="refused the request: HTTP 401") as err:
            _client(url, sleeps).score("a", "b")
    assert len(seen) == 1 and sleeps == [] and url in str(err.value) and KEY not in str(err.value)


def test_unreachable_judge_names_the_url():
    with socket.socket() as s:  # a port that nothing listens on once this socket closes
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/v1/chat/completions"
    sleeps: list[float] = []
    with pytest.raises(JudgeError, match="cannot be reached after 2 tries") as err:
        _client(url, sleeps, retries=1, backoff_s=0.01, timeout_s=2).score("a", "b")
    assert url in str(err.value) and sleeps == [0.01] and KEY not in str(err.value)


@pytest.mark.parametrize(
    "text,ok",
    [
        ('{"clue_overlap": 10, "label_overlap": 1}', {"clue": 10.0, "label": 1.0}),
        ("Clue overlap: 6\nLabel overlap: 8.5", {"clue": 6.0, "label": 8.5}),
        ('{"clue_overlap": 11, "label_overlap": 5}', None),  # outside EMER's scale
        ('{"clue_overlap": 0, "label_overlap": 5}', None),
        ("I cannot score this.", None),
    ],
)
def test_replies_are_read_on_the_1_to_10_scale(text, ok):
    if ok is None:
        with pytest.raises(JudgeError, match="1-10"):
            parse_scores(text)
    else:
        assert parse_scores(text) == ok
