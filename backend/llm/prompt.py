"""The review prompt and the answer format asked of the LLM.

Everything that changes what the LLM is asked is covered by PROMPT_VERSION, which is part of the cache key: bump it
when the wording changes so that no cached verdict outlives the prompt that produced it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

PROMPT_VERSION = "review-v1"

ABSTAIN = "abstain"


def abstain_token(choices: Sequence[str]) -> str:
    """The word that means "I cannot tell"; never one of the choices, so an answer is never ambiguous."""
    token = ABSTAIN
    while token in choices:
        token = f"_{token}_"
    return token


def response_schema(choices: Sequence[str]) -> dict[str, object]:
    """OpenAI `response_format` asking for {"label": <one choice or the abstain token>} and nothing else."""
    return {
        "type": "json_schema",
        "json_schema": {
            "name": "review",
            "strict": True,
            "schema": {
                "type": "object",
                "properties": {"label": {"type": "string", "enum": [*choices, abstain_token(choices)]}},
                "required": ["label"],
                "additionalProperties": False,
            },
        },
    }


def _quote(label: str) -> str:
    return json.dumps(label, ensure_ascii=False)


def build_messages(
    text: str,
    choices: Sequence[str],
    examples: Sequence[tuple[str, str]] = (),
    guideline: str = "",
    structured: bool = True,
) -> list[dict[str, str]]:
    """System + user messages for one text.

    Few-shot examples (text, label) are rendered as earlier user/assistant turns in exactly the answer format asked
    for, which small models imitate far better than a description of the format. Examples whose label is not a
    choice are dropped: they would teach an answer the parser must reject.
    """
    token = abstain_token(choices)
    listed = ", ".join(_quote(c) for c in choices)
    if structured:
        fmt = f'Answer with JSON only: {{"label": <one of {listed} or "{token}">}}.'
    else:
        fmt = f'Answer with exactly one of {listed}, or {token} if you cannot tell. Answer with the label only.'
    system = (
        "You label texts for a dataset. Choose the single label that fits the text best, copying it exactly as "
        f"written (same spelling and case). The labels are: {listed}. If none fits or the text is ambiguous, answer "
        f'"{token}". {fmt}'
    )
    if guideline.strip():
        system += f"\n\nAnnotation guideline:\n{guideline.strip()}"

    def answer(label: str) -> str:
        return json.dumps({"label": label}, ensure_ascii=False) if structured else label

    messages = [{"role": "system", "content": system}]
    for ex_text, ex_label in examples:
        if ex_label in choices:
            messages.append({"role": "user", "content": f"Text: {ex_text}"})
            messages.append({"role": "assistant", "content": answer(ex_label)})
    messages.append({"role": "user", "content": f"Text: {text}"})
    return messages
