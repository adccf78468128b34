"""A strict reader of the LLM's answer: exactly one of the choices, an explicit abstention, or invalid.

Deliberately no fuzzy matching, no case folding, no "the first label mentioned": "positive" for the choice
"Positive", "Positive." or "I think Positive" are all *invalid*. A reviewer that cannot copy a label exactly is not
reliable enough to label data unsupervised, and every coercion rule would turn some wrong answers into labels. An
invalid answer costs a human look, never a wrong label. What is removed before the exact comparison is only
packaging: surrounding whitespace, one or more layers of matching quotes or backticks, a Markdown code fence, and the
{"label": ...} JSON wrapper (or a bare JSON string) that the structured-output request asks for.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from .prompt import abstain_token

_QUOTES = ('"', "'", "`")


@dataclass(frozen=True)
class ParsedAnswer:
    status: Literal["valid", "abstain", "invalid"]
    verdict: str | None
    detail: str = ""


def _unfence(s: str) -> str:
    if s.startswith("```") and s.endswith("```") and len(s) >= 6:
        body = s[3:-3]
        first, nl, rest = body.partition("\n")
        # "```json\n{...}\n```": drop the info string when it is a bare word.
        if nl and first.strip().isalnum():
            body = rest
        return body.strip()
    return s


def _unquote(s: str) -> str:
    while len(s) >= 2 and s[0] == s[-1] and s[0] in _QUOTES:
        s = s[1:-1].strip()
    return s


def parse_answer(raw: str | None, choices: Sequence[str]) -> ParsedAnswer:
    """Read one answer; see the module docstring for what is (and is not) accepted."""
    if raw is None or not raw.strip():
        return ParsedAnswer("invalid", None, "empty answer")
    s = _unfence(raw.strip())
    candidate: str = s
    if s.startswith("{"):
        try:
            data = json.loads(s)
        except ValueError:
            return ParsedAnswer("invalid", None, "malformed JSON")
        if not isinstance(data, dict) or not isinstance(data.get("label"), str):
            return ParsedAnswer("invalid", None, 'JSON without a string "label"')
        candidate = data["label"]
    elif s.startswith('"'):
        try:
            data = json.loads(s)
        except ValueError:
            data = None
        if isinstance(data, str):
            candidate = data
    token = abstain_token(choices)
    for c in (candidate, _unquote(candidate.strip())):
        if c in choices:
            return ParsedAnswer("valid", c)
        if c == token:
            return ParsedAnswer("abstain", None)
    shown = candidate if len(candidate) <= 80 else candidate[:77] + "..."
    return ParsedAnswer("invalid", None, f"got {shown!r}")
