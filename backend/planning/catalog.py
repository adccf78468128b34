"""The catalog of specialists a plan may choose from: known Hugging Face text classifiers, and the
trainable offline families that learn any label set from a project's own annotations.

What a choice needs is kept per entry: the task, the checkpoint's label names in id2label order (and,
for opaque names such as LABEL_0, what they mean), languages, size and license. The seed ships as
`catalog.json` next to this module; a team adds or overrides entries in its own file (CATALOG_FILE,
JSON or YAML), merged field by field over the seed, so pointing a known checkpoint at a local copy is
one line.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

SEED_FILE = Path(__file__).with_name("catalog.json")
FAMILIES = ("hf", "encoder", "tfidf")
ANY_LANGUAGE = "*"
MULTILINGUAL = "multi"


class CatalogError(ValueError):
    """A catalog file that cannot be read or holds an invalid entry; the message names file and entry."""


@dataclass(frozen=True)
class CatalogEntry:
    id: str  # hub id for hf entries (the default checkpoint), a short name for trainable ones
    family: str  # hf | encoder | tfidf
    task: str = "any"  # sentiment, toxicity, topic, emotion, ...; "any" for families trained on project data
    labels: tuple[str, ...] = ()  # hf: the checkpoint's id2label names, index order
    meanings: tuple[str, ...] = ()  # optional, same order: what opaque names mean ("LABEL_0" → "negative")
    multiple: bool = False  # a multi-label (sigmoid) head
    languages: tuple[str, ...] = ("en",)  # ISO 639-1 codes; "multi": many; "*": any (learned from data)
    params_m: float | None = None  # size in millions of parameters
    size_mb: float | None = None
    license: str = "unspecified"
    domain: str = ""  # what the checkpoint was trained on; shown to the LLM and in plans
    checkpoint: str = ""  # hub id or local directory; empty: the id
    params: dict[str, Any] = field(default_factory=dict)  # extra specialist params (mode, epochs, classifier, ...)
    weight: float = 1.0
    default: bool = False  # trainable entries that every plan includes (the offline defaults)
    paper: bool = False  # chosen by the AutoAnnotator paper
    source: str = "seed"  # which file the entry (or its last override) came from

    @property
    def pretrained(self) -> bool:
        """A checkpoint with its own classification head: it can label before any annotation exists."""
        return self.family == "hf"

    @property
    def location(self) -> str:
        return self.checkpoint or self.id

    @property
    def label_meanings(self) -> tuple[str, ...]:
        return self.meanings if len(self.meanings) == len(self.labels) else self.labels

    def speaks(self, language: str | None) -> bool:
        if not language:
            return True
        return ANY_LANGUAGE in self.languages or language in self.languages

    def as_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        for key in ("labels", "meanings", "languages"):
            out[key] = list(out[key])
        return out


_LIST_FIELDS = {"labels", "meanings", "languages"}
_KNOWN = {f.name for f in fields(CatalogEntry)}


def _entry(raw: Mapping[str, Any], where: str, base: CatalogEntry | None = None) -> CatalogEntry:
    if not isinstance(raw, Mapping):
        raise CatalogError(f"{where}: an entry must be an object, got {type(raw).__name__}")
    unknown = sorted(set(raw) - _KNOWN)
    if unknown:
        raise CatalogError(f"{where}: unknown field(s) {unknown}; known: {sorted(_KNOWN - {'source'})}")
    values = base.as_dict() if base is not None else {}
    values.update(raw)
    if not isinstance(values.get("id"), str) or not values["id"].strip():
        raise CatalogError(f"{where}: every entry needs a non-empty string 'id'")
    where = f"{where} (entry {values['id']!r})"
    if values.get("family") not in FAMILIES:
        raise CatalogError(f"{where}: family must be one of {list(FAMILIES)}, got {values.get('family')!r}")
    for key in _LIST_FIELDS:
        value = values.get(key, ())
        if isinstance(value, str) or not isinstance(value, Iterable) or not all(isinstance(x, str) for x in value):
            raise CatalogError(f"{where}: {key} must be a list of strings")
        values[key] = tuple(value)
    if values["family"] == "hf" and len(values.get("labels", ())) < 2:
        raise CatalogError(f"{where}: an hf entry needs 'labels', the checkpoint's id2label names in order")
    if values.get("meanings") and len(values["meanings"]) != len(values["labels"]):
        raise CatalogError(f"{where}: 'meanings' must have one name per label ({len(values['labels'])})")
    if not isinstance(values.get("params", {}), Mapping):
        raise CatalogError(f"{where}: params must be an object")
    for key in ("params_m", "size_mb", "weight"):
        if values.get(key) is not None and not isinstance(values[key], (int, float)):
            raise CatalogError(f"{where}: {key} must be a number")
    values["params"] = dict(values.get("params") or {})
    return CatalogEntry(**values)


def _read(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise CatalogError(f"catalog file {path}: cannot be read ({exc})") from exc
    try:
        if path.suffix.lower() in {".yaml", ".yml"}:
            import yaml

            return yaml.safe_load(text)
        return json.loads(text)
    except Exception as exc:  # json.JSONDecodeError, yaml.YAMLError
        raise CatalogError(f"catalog file {path}: not valid {path.suffix.lstrip('.').upper() or 'JSON'} ({exc})") \
            from exc


def _raw_entries(data: Any, path: Path) -> tuple[list[Any], list[str]]:
    """A file holds a list of entries, or {"entries": [...], "disable": [ids]}."""
    if isinstance(data, list):
        return data, []
    if isinstance(data, Mapping) and isinstance(data.get("entries", []), list):
        disable = data.get("disable", [])
        if not isinstance(disable, list) or not all(isinstance(x, str) for x in disable):
            raise CatalogError(f"catalog file {path}: 'disable' must be a list of entry ids")
        return list(data.get("entries", [])), disable
    raise CatalogError(f"catalog file {path}: expected a list of entries or an object with 'entries'")


class Catalog:
    """Entries by id, in file order (seed first, then the team's new entries)."""

    def __init__(self, entries: Iterable[CatalogEntry]):
        self.entries: dict[str, CatalogEntry] = {}
        for e in entries:
            self.entries[e.id] = e

    def __iter__(self):
        return iter(self.entries.values())

    def __len__(self) -> int:
        return len(self.entries)

    def __contains__(self, entry_id: object) -> bool:
        return entry_id in self.entries

    def get(self, entry_id: str) -> CatalogEntry | None:
        return self.entries.get(entry_id)

    def pretrained(self) -> list[CatalogEntry]:
        return [e for e in self if e.pretrained]

    def defaults(self) -> list[CatalogEntry]:
        """Trainable entries every plan includes: they learn the project's labels from its annotations."""
        return [e for e in self if e.default and not e.pretrained]

    def merged(self, path: str | Path) -> Catalog:
        """This catalog with a team's file applied: new ids are added, known ids overridden field by field,
        ids under "disable" removed."""
        path = Path(path)
        raw, disable = _raw_entries(_read(path), path)
        entries = dict(self.entries)
        for n, item in enumerate(raw):
            where = f"catalog file {path}, entry #{n + 1}"
            base = entries.get(item.get("id")) if isinstance(item, Mapping) else None
            entry = _entry(item, where, base)
            entries[entry.id] = replace(entry, source=str(path))
        for entry_id in disable:
            entries.pop(entry_id, None)
        return Catalog(entries.values())


def seed_catalog() -> Catalog:
    raw, _ = _raw_entries(_read(SEED_FILE), SEED_FILE)
    return Catalog(_entry(item, f"seed catalog {SEED_FILE.name}, entry #{n + 1}") for n, item in enumerate(raw))


def load_catalog(catalog_file: str | Path | None = None) -> Catalog:
    """The seed catalog, with the team's file (CATALOG_FILE) merged over it when one is given."""
    catalog = seed_catalog()
    if catalog_file:
        catalog = catalog.merged(catalog_file)
    return catalog
