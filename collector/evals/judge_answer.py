"""Reading an LLM judge's answer: the provider's response document → text → `JudgeVerdict`.

`collector/evals/judge.py` hands in the parsed JSON of an Anthropic Messages or OpenAI/OpenRouter
chat completion; refusals, truncation, provider errors and answers without the asked-for JSON object
become `JudgeError` with a message fit for a rule result (never the API key).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

_FENCE = re.compile(r"```(?:json|JSON)?\s*(.*?)```", re.S)
_REFUSAL = re.compile(r"^\W*(i('m| am)? (sorry|unable|not able)|i can(no|')t|i won't|sorry)", re.I)


@dataclass(frozen=True)
class JudgeVerdict:
    passed: bool  # the output satisfies the criterion
    confidence: float  # 0.0-1.0
    explanation: str


class JudgeError(Exception):
    """The judge gave no verdict: provider down, timeout, key refused, refusal, unparseable."""


def _short(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def provider_error(provider: str, status: int, doc: dict[str, Any] | None, api_key: str) -> str:
    """A one-line description of a provider's error answer, with any echo of the key removed."""
    detail = ""
    error = (doc or {}).get("error")
    if isinstance(error, dict):
        detail = str(error.get("message") or error.get("type") or "")
    elif isinstance(error, str):
        detail = error
    if api_key and len(api_key) >= 8:
        detail = detail.replace(api_key, api_key[:4] + "…")
    return f"{provider} answered {status}" + (f": {_short(detail)}" if detail else "")


def completion_text(provider: str, doc: dict[str, Any]) -> str:
    """The assistant text of a 2xx answer; JudgeError for a refusal, a cut-off or empty answer,
    or an error document (OpenRouter reports some upstream failures with a 200)."""
    if isinstance(doc.get("error"), dict | str):
        raise JudgeError(provider_error(provider, 200, doc, ""))
    if provider == "anthropic":
        if doc.get("stop_reason") == "refusal":
            raise JudgeError(f"{provider}: the judge model refused to evaluate this output")
        blocks = doc.get("content")
        text = "".join(
            str(b.get("text", ""))
            for b in (blocks if isinstance(blocks, list) else [])
            if isinstance(b, dict) and b.get("type") == "text"
        )
        cut = doc.get("stop_reason") == "max_tokens"
    else:
        choices = doc.get("choices")
        choice = choices[0] if isinstance(choices, list) and choices else None
        message = choice.get("message") if isinstance(choice, dict) else None
        if not isinstance(message, dict):
            raise JudgeError(f"{provider}: the answer has no message")
        if message.get("refusal"):
            refusal = _short(str(message["refusal"]))
            raise JudgeError(f"{provider}: the judge model refused: {refusal}")
        finish = choice.get("finish_reason") if isinstance(choice, dict) else None
        if finish == "content_filter":
            raise JudgeError(f"{provider}: the provider's content filter stopped the judge")
        text = str(message.get("content") or "")
        cut = finish == "length"
    if not text.strip():
        raise JudgeError(f"{provider}: the judge gave an empty answer")
    if cut and _object_in(text) is None:
        raise JudgeError(f"{provider}: the judge's answer was cut off (max_tokens)")
    return text


def _object_in(text: str) -> dict[str, Any] | None:
    """The first JSON object with a "pass" key in `text`: the whole text, a ```json fence, or
    an object with prose around it."""
    candidates = [text.strip(), *(m.strip() for m in _FENCE.findall(text))]
    decoder = json.JSONDecoder()
    for candidate in candidates:
        try:
            doc = json.loads(candidate)
        except ValueError:
            continue
        if isinstance(doc, dict) and "pass" in doc:
            return doc
    for start in (i for i, ch in enumerate(text) if ch == "{"):
        try:
            doc, _end = decoder.raw_decode(text, start)
        except ValueError:
            continue
        if isinstance(doc, dict) and "pass" in doc:
            return doc
    return None


def _as_bool(value: object) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "pass", "fail"):
        return value.strip().lower() in ("true", "pass")
    return None


def _as_confidence(value: object) -> float | None:
    if isinstance(value, str):
        try:
            value = float(value.strip().rstrip("%")) / (100 if value.strip().endswith("%") else 1)
        except ValueError:
            return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    if 1 < value <= 100:  # a percentage despite the instructions
        value = value / 100
    return float(value) if 0 <= value <= 1 else None


def parse_verdict(text: str) -> JudgeVerdict:
    """The judge's text → JudgeVerdict; JudgeError naming what was wrong with it."""
    doc = _object_in(text)
    if doc is None:
        if _REFUSAL.match(text.strip()):
            raise JudgeError(f"the judge model refused: {_short(text)}")
        raise JudgeError(f"the judge's answer is not the JSON verdict asked for: {_short(text)}")
    passed = _as_bool(doc.get("pass"))
    if passed is None:
        raise JudgeError(f'the judge\'s "pass" is not true or false: {_short(repr(doc["pass"]))}')
    confidence = _as_confidence(doc.get("confidence", 0.5))  # left out: undecided
    if confidence is None:
        raise JudgeError(
            f'the judge\'s "confidence" is not a number from 0 to 1: '
            f"{_short(repr(doc.get('confidence')))}"
        )
    explanation = doc.get("explanation", "")
    return JudgeVerdict(passed, confidence, _short(str(explanation), 2000))
