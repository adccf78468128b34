"""The deterministic planner: rank catalog checkpoints for a project's choices by how their labels map
(names, synonyms, id2label meanings — `backend.specialists.labelmap`), task and language, with no LLM.

Pure: no models, no network. It is the plan when no LLM is configured, the fallback when the LLM's plan
is malformed or invalid, and the shortlist the LLM chooses from.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from backend.planning.catalog import MULTILINGUAL, Catalog, CatalogEntry
from backend.specialists.labelmap import map_labels, norm

_TASK_WORDS = {
    "sentiment": {"positive", "negative", "neutral", "pos", "neg", "neu", "bullish", "bearish", "favorable",
                  "unfavorable", "favourable", "unfavourable", "good", "bad", "mixed", "sentiment"},
    "toxicity": {"toxic", "nontoxic", "nottoxic", "clean", "offensive", "notoffensive", "abusive", "insult",
                 "obscene", "threat", "toxicity", "profanity"},
    "hate": {"hate", "hateful", "nothate", "nonhate"},
    "emotion": {"anger", "angry", "joy", "fear", "sadness", "surprise", "disgust", "love", "emotion"},
    "irony": {"irony", "ironic", "sarcasm", "sarcastic", "notironic", "nonirony"},
    "topic": {"sports", "politics", "business", "technology", "tech", "science", "health", "entertainment",
              "music", "travel", "food", "topic"},
}
# A label that says the text is from a domain: entries whose domain notes mention it are preferred.
_DOMAIN_WORDS = {"bullish": "financ", "bearish": "financ", "stock": "financ", "market": "financ"}

_STOPWORDS = {
    "en": {"the", "and", "is", "are", "was", "to", "of", "in", "it", "this", "that", "for", "with", "not", "you", "my"},
    "de": {"der", "die", "das", "und", "ist", "nicht", "ich", "ein", "eine", "mit", "auf", "sehr", "auch", "zu"},
    "fr": {"le", "la", "les", "et", "est", "des", "une", "pas", "je", "du", "que", "pour", "avec", "très", "ce"},
    "es": {"el", "la", "los", "las", "y", "es", "que", "de", "no", "una", "muy", "para", "con", "por", "pero"},
    "it": {"il", "di", "che", "non", "è", "per", "una", "sono", "molto", "con", "gli", "della", "ma", "mi"},
    "pt": {"o", "os", "não", "é", "que", "de", "uma", "com", "muito", "para", "mas", "um", "do", "da", "em"},
    "nl": {"de", "het", "een", "en", "is", "niet", "van", "ik", "met", "zijn", "op", "dat", "heel", "maar"},
}
_SCRIPTS = [("ar", re.compile(r"[\u0600-\u06ff]")), ("hi", re.compile(r"[\u0900-\u097f]")),
            ("ja", re.compile(r"[\u3040-\u30ff]")), ("zh", re.compile(r"[\u4e00-\u9fff]"))]


@dataclass(frozen=True)
class Candidate:
    """One pretrained checkpoint judged for one control."""

    entry: CatalogEntry
    labels: tuple[str, ...]  # the checkpoint's labels (its config's, once known)
    label_map: dict[str, str]  # checkpoint label → project choice
    missing: tuple[str, ...]  # project choices nothing maps to
    unused: tuple[str, ...]  # checkpoint labels that map to no choice (their probability is dropped)
    score: float
    problems: tuple[str, ...] = ()  # why it cannot serve zero-shot (mode, language)
    notes: tuple[str, ...] = field(default=())

    @property
    def usable(self) -> bool:
        """Covers every choice and fits the project: it can label before any annotation exists."""
        return not self.missing and not self.problems

    def reason(self) -> str:
        mapped = ", ".join(f"{k} → {v}" for k, v in self.label_map.items())
        parts = [f"{self.entry.task} model ({self.entry.domain or 'no domain notes'})", f"labels map {mapped}"]
        if self.unused:
            parts.append(f"ignores {list(self.unused)}")
        if self.missing:
            parts.append(f"nothing maps to {list(self.missing)}")
        parts.extend(self.problems)
        return "; ".join(parts)


def project_task(choices: Iterable[str], hints: Iterable[str] = ()) -> str | None:
    """The task the choices (and the control's name) suggest, or None when nothing points to one."""
    words = {norm(x) for x in [*choices, *hints]}
    scores = {task: len(words & vocab) for task, vocab in _TASK_WORDS.items()}
    best = max(scores, key=lambda t: scores[t])
    return best if scores[best] else None


def detect_language(texts: Sequence[str]) -> str | None:
    """A rough guess from stopwords and scripts, for ranking only; None when the sample says too little."""
    if not texts:
        return None
    joined = " ".join(texts[:200])
    for lang, pattern in _SCRIPTS:
        if len(pattern.findall(joined)) >= 10:
            return lang
    tokens = Counter(re.findall(r"[^\W\d_]+", joined.lower()))
    hits = {lang: sum(n for w, n in tokens.items() if w in words) for lang, words in _STOPWORDS.items()}
    ranked = sorted(hits.items(), key=lambda kv: -kv[1])
    (best, n1), (_, n2) = ranked[0], ranked[1]
    return best if n1 >= 3 and n1 >= 1.5 * n2 else None


def map_entry(labels: Sequence[str], meanings: Sequence[str], choices: Sequence[str]
              ) -> tuple[dict[str, str], list[str], list[str]]:
    """({checkpoint label: choice}, choices left unmapped, checkpoint labels left unused).

    Meanings, when the catalog gives them, replace the names: the "neutral" of a toxicity model means
    non-toxic, not a neutral sentiment.
    """
    names = list(meanings) if len(meanings) == len(labels) else list(labels)
    index, _ = map_labels(names, choices)
    label_map = {labels[i]: choices[j] for i, j in sorted(index.items())}
    covered = set(label_map.values())
    return label_map, [c for c in choices if c not in covered], [x for x in labels if x not in label_map]


def judge(entry: CatalogEntry, choices: Sequence[str], multiple: bool, language: str | None = None,
          task: str | None = None, labels: Sequence[str] | None = None) -> Candidate:
    """Score one pretrained entry; `labels` are the checkpoint's real id2label when known (else the catalog's)."""
    real = tuple(labels) if labels else entry.labels
    notes = []
    meanings = entry.label_meanings if real == entry.labels else real
    if real != entry.labels:
        notes.append(f"catalog labels {list(entry.labels)} differ from the checkpoint's config {list(real)}: "
                     "the config's are used")
    label_map, missing, unused = map_entry(real, meanings, choices)
    problems = []
    if entry.multiple != multiple:
        problems.append(f"a {'multi' if entry.multiple else 'single'}-label head for a "
                        f"{'multiple' if multiple else 'single'}-choice control")
    if language and not entry.speaks(language) and MULTILINGUAL not in entry.languages:
        problems.append(f"trained for {list(entry.languages)}, the sample looks {language!r}")
    coverage = 1 - len(missing) / len(choices)
    used = 1 - len(unused) / max(len(real), 1)
    score = coverage + 0.3 * used
    if task and entry.task == task:
        score += 0.2
    if language:
        score += 0.2 if entry.speaks(language) else (0.1 if MULTILINGUAL in entry.languages else -1.0)
    domain_words = {_DOMAIN_WORDS[norm(c)] for c in choices if norm(c) in _DOMAIN_WORDS}
    if any(w in entry.domain.lower() for w in domain_words):
        score += 0.15
    if entry.paper:
        score += 0.05
    if entry.params_m:
        score -= 0.01 * math.log10(max(entry.params_m, 1.0))  # the smaller of two equal candidates
    return Candidate(entry, real, label_map, tuple(missing), tuple(unused), round(score, 4), tuple(problems),
                     tuple(notes))


def rank(catalog: Catalog, choices: Sequence[str], multiple: bool, language: str | None = None,
         hints: Iterable[str] = (), real_labels: Mapping[str, Sequence[str]] | None = None) -> list[Candidate]:
    """Every pretrained entry judged for the control, best first (usable ones before the rest)."""
    task = project_task(choices, hints)
    real_labels = real_labels or {}
    judged = [judge(e, choices, multiple, language, task, real_labels.get(e.id)) for e in catalog.pretrained()]
    return sorted(judged, key=lambda c: (not c.usable, -c.score, c.entry.id))


def specialist_name(entry_id: str, taken: Iterable[str] = ()) -> str:
    """A directory-safe, unique specialist name from a catalog id ("cardiffnlp/x-y" → "x-y")."""
    base = re.sub(r"[^0-9A-Za-z._-]+", "-", entry_id.rstrip("/").split("/")[-1]).strip("-.") or "specialist"
    taken = set(taken)
    name, n = base, 2
    while name in taken:
        name, n = f"{base}-{n}", n + 1
    return name


def pretrained_specialist(entry: CatalogEntry, label_map: Mapping[str, str], reason: str,
                          taken: Iterable[str] = ()) -> dict:
    params = {"checkpoint": entry.location, "label_map": dict(label_map), "mode": "head", **entry.params}
    return {"name": specialist_name(entry.id, taken), "family": "hf", "params": params, "weight": entry.weight,
            "reason": reason, "catalog": entry.id}


def default_specialists(catalog: Catalog, language: str | None = None, taken: Iterable[str] = ()) -> list[dict]:
    """The trainable offline entries: they learn every choice from the project's own annotations."""
    out, names = [], set(taken)
    for e in catalog.defaults():
        reason = "trainable offline specialist: learns every choice from the project's annotations"
        if language and not e.speaks(language):
            reason += f" (its encoder is trained for {list(e.languages)}, the sample looks {language!r})"
        name = specialist_name(e.id, names)
        names.add(name)
        out.append({"name": name, "family": e.family, "params": dict(e.params), "weight": e.weight,
                    "reason": reason, "catalog": e.id})
    return out
