"""The transport every LLM caller shares: the OpenAI-compatible client built from settings, which errors are worth
a retry, and which endpoints refuse structured output (response_format json_schema).

The reviewer (hard samples) and the planner (choosing specialists) both talk to the configured endpoint through
these pieces, so a server that rejects json_schema is learned once and both fall back to plain text.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

import openai
from openai import OpenAI

RETRYABLE_STATUS = frozenset({429})  # plus every 5xx; no other 4xx: the request itself is wrong
SCHEMA_REJECTED_STATUS = frozenset({400, 422})
MAX_RETRY_AFTER_S = 30.0

# base URL → whether it accepts response_format json_schema (absent: not known yet, try it).
_schema_support: dict[str, bool] = {}
_schema_lock = threading.Lock()


def make_client(base_url: str, api_key: str, timeout: float) -> OpenAI:
    """Retries are the caller's (backoff policy, attempt counts, deadlines), so the client's own are off."""
    return OpenAI(base_url=base_url or None, api_key=api_key or "not-needed", timeout=timeout, max_retries=0)


def retryable(code: int) -> bool:
    return code >= 500 or code in RETRYABLE_STATUS


def rejects_schema(code: int, message: str) -> bool:
    """Did the server refuse response_format? A 400/422, or any error naming it: llama-cpp-python's server, for one,
    answers `json_schema` with a *500* whose body is a validation error on `response_format.type`."""
    lowered = message.lower()
    return code in SCHEMA_REJECTED_STATUS or "response_format" in lowered or "json_schema" in lowered


def error_message(exc: openai.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, Mapping):
        err = body.get("error", body)
        if isinstance(err, Mapping) and err.get("message"):
            return str(err["message"])[:300]
    return str(exc.message)[:300]


def retry_after(exc: openai.APIStatusError) -> float:
    """The server's Retry-After in seconds (capped), or 0 when absent or not a number of seconds."""
    try:
        value = float(exc.response.headers.get("retry-after", "0"))
    except (TypeError, ValueError):
        return 0.0
    return min(max(value, 0.0), MAX_RETRY_AFTER_S)


def schema_supported(endpoint: str) -> bool:
    """Whether to ask this endpoint for json_schema output (yes until it has refused once)."""
    with _schema_lock:
        return _schema_support.get(endpoint, True)


def note_schema_support(endpoint: str, supported: bool) -> None:
    """Remember a refusal for good; a success only when nothing is known yet."""
    with _schema_lock:
        if supported:
            _schema_support.setdefault(endpoint, True)
        else:
            _schema_support[endpoint] = False


def forget_endpoint_capabilities() -> None:
    """Forget which endpoints reject json_schema (tests, or after an endpoint is upgraded)."""
    with _schema_lock:
        _schema_support.clear()


def usage_tokens(resp: Any) -> tuple[int, int]:
    usage = getattr(resp, "usage", None)
    return int(getattr(usage, "prompt_tokens", 0) or 0), int(getattr(usage, "completion_tokens", 0) or 0)
