"""Ask the configured LLM (OPENAI_BASE_URL / LLM_MODEL, the reviewer's endpoint) to choose and map specialists.

The LLM sees the project's choices, a few sample texts and the matcher's shortlist of available checkpoints
(labels, meanings, task, languages, size, license, domain, the matcher's own mapping) and answers with a JSON
plan: checkpoints best first, each with a label_map and a reason. Its answer is only a proposal: `validate`
reads it strictly and the planner falls back to the matcher when it is malformed or invalid.

Transport is `backend.llm.client`'s: structured output (json_schema) first, plain text for endpoints that
refuse it (remembered per endpoint, shared with the reviewer), retries only where a retry can help.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import openai

from backend.llm.client import (
    error_message,
    make_client,
    note_schema_support,
    rejects_schema,
    retry_after,
    retryable,
    schema_supported,
    usage_tokens,
)
from backend.planning.matcher import Candidate

MAX_TOKENS = 1024  # a plan is a short JSON document

PLAN_PROMPT_VERSION = "plan-v1"
_SAMPLE_CHARS = 200


class PlannerUnavailable(RuntimeError):
    """No answer came from the LLM (connection, HTTP error, timeout); the message says what happened."""


@dataclass(frozen=True)
class LLMAnswer:
    raw: str
    model: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    structured: bool = False
    latency_s: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"model": self.model, "prompt_version": PLAN_PROMPT_VERSION, "raw": self.raw[:4000],
                "prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                "structured": self.structured, "latency_s": round(self.latency_s, 3)}


def plan_schema(candidates: Sequence[Candidate], choices: Sequence[str]) -> dict[str, Any]:
    """response_format for the plan: label_map as a list of pairs, since strict schemas allow no free keys."""
    labels = sorted({x for c in candidates for x in c.labels})
    pair = {"type": "object", "additionalProperties": False, "required": ["checkpoint_label", "choice"],
            "properties": {"checkpoint_label": {"type": "string", "enum": labels},
                           "choice": {"type": "string", "enum": list(choices)}}}
    spec = {"type": "object", "additionalProperties": False, "required": ["checkpoint", "label_map", "reason"],
            "properties": {"checkpoint": {"type": "string", "enum": [c.entry.id for c in candidates]},
                           "label_map": {"type": "array", "items": pair},
                           "reason": {"type": "string"}}}
    return {"type": "json_schema", "json_schema": {"name": "plan", "strict": True, "schema": {
        "type": "object", "additionalProperties": False, "required": ["specialists", "reason"],
        "properties": {"specialists": {"type": "array", "items": spec}, "reason": {"type": "string"}}}}}


def _describe(c: Candidate) -> dict[str, Any]:
    e = c.entry
    out: dict[str, Any] = {"checkpoint": e.id, "task": e.task, "labels": list(c.labels)}
    if e.meanings and tuple(c.labels) == e.labels:
        out["label_meanings"] = dict(zip(e.labels, e.meanings, strict=True))
    out.update({"multi_label": e.multiple, "languages": list(e.languages), "params_millions": e.params_m,
                "license": e.license, "domain": e.domain, "matcher_mapping": c.label_map})
    return out


def build_messages(choices: Sequence[str], multiple: bool, control: str, candidates: Sequence[Candidate],
                   samples: Sequence[str], max_pretrained: int, structured: bool) -> list[dict[str, str]]:
    listed = ", ".join(json.dumps(c, ensure_ascii=False) for c in choices)
    if structured:
        fmt = ('Answer with JSON only: {"specialists": [{"checkpoint": <candidate id>, "label_map": '
               '[{"checkpoint_label": <label>, "choice": <project choice>}, ...], "reason": <one sentence>}], '
               '"reason": <one sentence about the whole choice>}.')
    else:
        fmt = ('Answer with JSON only, no other text: {"specialists": [{"checkpoint": <candidate id>, "label_map": '
               '{<checkpoint label>: <project choice>, ...}, "reason": <one sentence>}], "reason": <one sentence '
               'about the whole choice>}.')
    system = (
        "You configure an ensemble of small pretrained text classifiers for a data-labelling project. From the "
        f"candidate checkpoints, choose at most {max_pretrained} that suit the project, best first, or none if none "
        f"fits. The project's choices are {listed}. For each checkpoint, map every checkpoint label that means one of "
        "the choices onto that choice; leave "
        "out labels that mean none of them. Each chosen checkpoint must cover every project choice. Copy checkpoint "
        "labels exactly as listed under \"labels\" and choices exactly as written. " + fmt
    )
    user = {
        "project": {"control": control, "choices": list(choices), "mode": "multiple" if multiple else "single"},
        "sample_texts": [t[:_SAMPLE_CHARS] for t in samples[:5]],
        "candidates": [_describe(c) for c in candidates],
    }
    return [{"role": "system", "content": system},
            {"role": "user", "content": json.dumps(user, ensure_ascii=False, indent=1)}]


def ask(settings: Any, candidates: Sequence[Candidate], choices: Sequence[str], multiple: bool, control: str,
        samples: Sequence[str] = (), max_pretrained: int = 2) -> LLMAnswer:
    """One plan from the LLM. Raises PlannerUnavailable when no answer comes (the caller falls back)."""
    client = make_client(settings.openai_base_url, settings.openai_api_key, settings.llm_timeout_seconds)
    endpoint = str(client.base_url)
    structured = schema_supported(endpoint)
    fell_back = False
    delay = max(float(settings.llm_backoff_seconds), 0.0)
    retries, started = 0, time.monotonic()
    try:
        while True:
            kwargs: dict[str, Any] = {"response_format": plan_schema(candidates, choices)} if structured else {}
            messages = build_messages(choices, multiple, control, candidates, samples, max_pretrained, structured)
            try:
                resp = client.chat.completions.create(
                    model=settings.llm_model, messages=messages, temperature=0.0,  # type: ignore[arg-type]
                    max_tokens=MAX_TOKENS, **kwargs)
            except openai.APITimeoutError:
                raise PlannerUnavailable(f"no answer within {settings.llm_timeout_seconds}s") from None
            except openai.APIStatusError as exc:
                message = f"HTTP {exc.status_code}: {error_message(exc)}"
                if structured and not fell_back and rejects_schema(exc.status_code, message):
                    structured, fell_back = False, True
                    continue
                if not retryable(exc.status_code) or retries >= settings.llm_max_retries:
                    raise PlannerUnavailable(message) from None
                wait_s = max(delay, retry_after(exc))
            except openai.APIConnectionError as exc:
                if retries >= settings.llm_max_retries:
                    raise PlannerUnavailable(f"connection error: {exc}") from None
                wait_s = delay
            else:
                if fell_back or structured:
                    note_schema_support(endpoint, not fell_back)
                choice = resp.choices[0] if resp.choices else None
                raw = (choice.message.content if choice is not None and choice.message is not None else None) or ""
                p_tok, c_tok = usage_tokens(resp)
                return LLMAnswer(raw, settings.llm_model, p_tok, c_tok, structured, time.monotonic() - started)
            retries += 1
            time.sleep(wait_s)
            delay *= 2
    finally:
        client.close()
