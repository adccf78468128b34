"""Family name → specialist class, imported only when used (torch stays out of light processes)."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from backend.specialists.base import Specialist, read_spec

_FAMILIES = {
    "tfidf": "backend.specialists.tfidf:TfidfSpecialist",
    "encoder": "backend.specialists.encoder:EncoderSpecialist",
    "hf": "backend.specialists.hf:HFClassifierSpecialist",
}


def families() -> list[str]:
    return sorted(_FAMILIES)


def family(name: str) -> type[Specialist]:
    try:
        module, attr = _FAMILIES[name].split(":")
    except KeyError:
        raise ValueError(f"unknown specialist family {name!r}; known: {', '.join(families())}") from None
    return getattr(importlib.import_module(module), attr)


def create(family_name: str, name: str, labels: list[str], multiple: bool, params: dict[str, Any] | None = None,
           **runtime: Any) -> Specialist:
    return family(family_name)(name, labels, multiple, params, **runtime)


def load(path: Path, **runtime: Any) -> Specialist:
    return family(read_spec(path)["family"]).load(path, **runtime)
