"""EMER scoring: a judge model behind an OpenAI-compatible chat-completions endpoint rates a reasoning
answer against the reference on EMER's two 1-10 scales, clue overlap and label overlap.

Standard library only (urllib). The API key is sent in the ``Authorization`` header and nowhere else:
it is kept out of ``repr``, out of every log line and out of every error message.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["JUDGE_ENV", "JudgeClient", "JudgeConfig", "JudgeError", "SCORE_RANGE", "judge_prompt", "parse_scores"]

log = logging.getLogger(__name__)
SCORE_RANGE = (1, 10)  # EMER's scale for both scores
JUDGE_ENV = {"url": "EMER_JUDGE_URL", "model": "EMER_JUDGE_MODEL", "api_key": "EMER_JUDGE_API_KEY"}
_RETRY_STATUS = (408, 409, 429, 500, 502, 503, 504)  # worth another try; any other HTTP error is final

_SYSTEM = (
    "You compare an emotion analysis of a video with a reference analysis. Score two things on a scale "
    "of 1 to 10: clue_overlap, how far the emotional clues (facial expressions, tone of voice, words, "
    "context) in the answer agree with those in the reference; label_overlap, how far the emotion "
    "labels the answer concludes agree with the reference's. Reply with JSON only: "
    '{"clue_overlap": <1-10>, "label_overlap": <1-10>}.'
)


class JudgeError(RuntimeError):
    """The judge could not be reached, refused the request, or replied with something that is not two scores."""


@dataclass
class JudgeConfig:
    """Where the judge is and how to call it.

    Attributes:
        url: the chat-completions endpoint, e.g. ``https://api.openai.com/v1/chat/completions``
            (default: $EMER_JUDGE_URL).
        model: the judge model's name (default: $EMER_JUDGE_MODEL, else gpt-3.5-turbo as in EMER).
        api_key: bearer token (default: $EMER_JUDGE_API_KEY); never printed or logged.
        retries: further tries after a failed one (connection errors, timeouts, 429 and 5xx).
        backoff_s: wait before the first retry; doubled before each next one.
        timeout_s: per-request time limit.
    """

    url: str | None = None
    model: str | None = None
    api_key: str | None = field(default=None, repr=False)
    retries: int = 3
    backoff_s: float = 1.0
    timeout_s: float = 60.0

    def __post_init__(self) -> None:
        self.url = self.url or os.environ.get(JUDGE_ENV["url"]) or None
        self.model = self.model or os.environ.get(JUDGE_ENV["model"]) or "gpt-3.5-turbo"
        self.api_key = self.api_key or os.environ.get(JUDGE_ENV["api_key"]) or None
        if self.retries < 0 or self.backoff_s < 0 or not self.timeout_s > 0:
            raise ValueError(
                f"judge retries {self.retries!r} and backoff_s {self.backoff_s!r} must be >= 0, "
                f"timeout_s {self.timeout_s!r} > 0"
            )
        if self.url is not None and not re.match(r"^https?://", self.url):
            raise ValueError(f"judge url {self.url!r} must start with http:// or https://")


def judge_prompt(reference: str, answer: str) -> list[dict[str, str]]:
    """The chat messages that ask for the two scores of ``answer`` against ``reference``."""
    return [
        {"role": "system", "content": _SYSTEM},
        {"role": "user", "content": f"Reference analysis:\n{reference}\n\nAnswer to score:\n{answer}"},
    ]


def parse_scores(text: str) -> dict[str, float]:
    """``{"clue": x, "label": y}`` from the judge's reply: JSON, or ``clue_overlap: 7`` style text.

    Raises:
        JudgeError: quoting the reply when a score is missing or outside 1-10.
    """
    found: dict[str, float] = {}
    match = re.search(r"\{.*\}", text, re.S)
    if match:
        try:
            data = json.loads(match.group(0))
            found = {k: float(data[f"{k}_overlap"]) for k in ("clue", "label") if f"{k}_overlap" in data}
        except (ValueError, TypeError):
            found = {}
    for key in ("clue", "label"):
        if key not in found:
            m = re.search(rf"{key}[ _]overlap\W*(\d+(?:\.\d+)?)", text, re.I)
            if m:
                found[key] = float(m.group(1))
    lo, hi = SCORE_RANGE
    if set(found) != {"clue", "label"} or not all(lo <= v <= hi for v in found.values()):
        raise JudgeError(f"judge reply does not hold clue_overlap and label_overlap in {lo}-{hi}: {text[:200]!r}")
    return found


class JudgeClient:
    """Calls the judge endpoint with bounded retries and exponential backoff.

    Args:
        cfg: the judge's settings; its ``url`` must be set.
        sleep: the wait function (tests pass a recorder).

    Raises:
        ValueError: when no URL is configured, naming the option and the environment variable.
    """

    def __init__(self, cfg: JudgeConfig, sleep: Callable[[float], None] = time.sleep) -> None:
        if not cfg.url:
            raise ValueError(
                f"no judge URL: set --judge-url or ${JUDGE_ENV['url']} to an OpenAI-compatible "
                f"chat-completions endpoint"
            )
        self.cfg, self.sleep = cfg, sleep

    def _request(self, messages: list[dict[str, str]]) -> urllib.request.Request:
        body = json.dumps({"model": self.cfg.model, "messages": messages, "temperature": 0}).encode("utf-8")
        headers = {"Content-Type": "application/json"}
        if self.cfg.api_key:
            headers["Authorization"] = f"Bearer {self.cfg.api_key}"
        return urllib.request.Request(self.cfg.url, data=body, headers=headers, method="POST")

    def chat(self, messages: list[dict[str, str]]) -> str:
        """The judge's reply text.

        Raises:
            JudgeError: naming the URL: unreachable after every try, a final HTTP error, or a reply
                that is not a chat completion.
        """
        url, tries = self.cfg.url, self.cfg.retries + 1
        last = ""
        for attempt in range(tries):
            if attempt:
                wait = self.cfg.backoff_s * 2 ** (attempt - 1)
                log.warning("judge at %s: %s; retry %d of %d in %.1f s", url, last, attempt, self.cfg.retries, wait)
                self.sleep(wait)
            try:
                with urllib.request.urlopen(self._request(messages), timeout=self.cfg.timeout_s) as resp:
                    payload = json.loads(resp.read().decode("utf-8"))
            except urllib.error.HTTPError as e:
                last = f"HTTP {e.code} {e.reason}"
                if e.code not in _RETRY_STATUS:
                    raise JudgeError(f"judge at {url} refused the request: {last}") from None
                continue
            except (urllib.error.URLError, TimeoutError, ConnectionError) as e:
                last = f"cannot connect ({getattr(e, 'reason', e)})"
                continue
            except ValueError as e:
                raise JudgeError(f"judge at {url} did not reply with JSON: {e}") from None
            return _content(payload, url)
        raise JudgeError(f"judge at {url} cannot be reached after {tries} tries: {last}")

    def score(self, reference: str, answer: str) -> dict[str, float]:
        """EMER's clue-overlap and label-overlap scores (1-10) of ``answer`` against ``reference``."""
        return parse_scores(self.chat(judge_prompt(reference, answer)))


def _content(payload: Any, url: str) -> str:
    try:
        return str(payload["choices"][0]["message"]["content"])
    except (KeyError, IndexError, TypeError):
        raise JudgeError(
            f"judge at {url} replied without choices[0].message.content: {json.dumps(payload)[:200]}"
        ) from None
