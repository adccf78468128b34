"""Map a checkpoint's own label names onto a project's choices.

Pure string logic: normalised names, common synonyms (a sentiment model's "POS" is a project's
"Positive", a finance project's "Bullish"), the checkpoint's id2label, and an explicit override that
always wins. A project choice that nothing maps to is reported, never guessed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

_SYNONYMS: list[set[str]] = [
    {"positive", "pos", "bullish", "good", "favorable", "favourable", "happy", "joy", "4stars", "5stars"},
    {"negative", "neg", "bearish", "bad", "unfavorable", "unfavourable", "sad", "1star", "2stars"},
    {"neutral", "neu", "none", "objective", "3stars", "mixed"},
    {"toxic", "offensive", "off", "abusive", "hate", "hateful", "insult", "toxicity"},
    {"nontoxic", "nottoxic", "notoffensive", "nonoffensive", "not", "clean", "normal", "nothate", "nonhate", "neither"},
]


def norm(name: str) -> str:
    return re.sub(r"[^0-9a-z]+", "", str(name).lower())


def _group(name: str) -> int | None:
    n = norm(name)
    for i, group in enumerate(_SYNONYMS):
        if n in group:
            return i
    return None


def map_labels(
    model_labels: Mapping[int, str] | Sequence[str],
    project_labels: Sequence[str],
    override: Mapping[str, str] | None = None,
) -> tuple[dict[int, int], list[str]]:
    """Return ({model label index: project label index}, [project labels left unmapped]).

    `override` maps a model label name (or its index as a string) to a project label name.
    """
    if not isinstance(model_labels, Mapping):
        model_labels = dict(enumerate(model_labels))
    project_index = {norm(x): j for j, x in enumerate(project_labels)}
    mapping: dict[int, int] = {}
    for i, raw in model_labels.items():
        i = int(i)
        target = None
        if override:
            for key in (raw, str(i)):
                if key in override:
                    if norm(override[key]) not in project_index:
                        raise ValueError(f"override maps {key!r} to {override[key]!r}, which is not a project choice")
                    target = project_index[norm(override[key])]
                    break
        if target is None:
            target = project_index.get(norm(raw))
        if target is None:
            g = _group(raw)
            if g is not None:
                matches = [j for j, x in enumerate(project_labels) if _group(x) == g]
                target = matches[0] if len(matches) == 1 else None
        if target is not None:
            mapping[i] = target
    covered = set(mapping.values())
    missing = [x for j, x in enumerate(project_labels) if j not in covered]
    return mapping, missing
