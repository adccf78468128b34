"""Can a checkpoint be loaded here, now — without loading it (no torch)?

A local directory needs a config.json and weights; a hub id must be in the Hugging Face cache when the
hub is unreachable (HF_HUB_OFFLINE=1), or be reachable and not gated otherwise. The answer carries the
checkpoint's real id2label when its config.json is at hand, so a plan maps the labels the model really
has, and, when the checkpoint is missing, a message that names it and says how to make it available.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

_WEIGHTS = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json", "pytorch_model.bin.index.json")


@dataclass(frozen=True)
class Availability:
    checkpoint: str
    available: bool
    where: str = ""  # local directory, cache snapshot, or "hub" (downloaded on first use)
    labels: tuple[str, ...] | None = None  # id2label from config.json, index order, when read
    message: str = ""  # why it is not available and what to do


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() not in ("", "0", "false", "no", "off")


def how_to_make_available(checkpoint: str) -> str:
    return (f"To use {checkpoint!r} offline: on a machine with network run `huggingface-cli download {checkpoint}` "
            "and copy its Hugging Face cache (HF_HOME, default ~/.cache/huggingface) to this machine or point HF_HOME "
            "at it; or save the model with save_pretrained() and give that directory as the entry's \"checkpoint\" in "
            "your catalog file (CATALOG_FILE).")


def _labels_of(directory: Path) -> tuple[str, ...] | None:
    try:
        config = json.loads((directory / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    id2label = config.get("id2label")
    if not isinstance(id2label, dict) or not id2label:
        return None
    try:
        return tuple(str(id2label[k]) for k in sorted(id2label, key=lambda k: int(k)))
    except (TypeError, ValueError):
        return None


def _has_weights(directory: Path) -> bool:
    return any((directory / name).exists() for name in _WEIGHTS)


def _looks_like_path(checkpoint: str) -> bool:
    return checkpoint.startswith(("/", "./", "../", "~")) or Path(checkpoint).expanduser().exists()


def _cached_snapshot(repo_id: str, cache_dir: str | None) -> Path | None:
    from huggingface_hub import try_to_load_from_cache

    try:
        found = try_to_load_from_cache(repo_id, "config.json", cache_dir=cache_dir)
    except Exception:  # an invalid repo id (HFValidationError) is simply not cached
        return None
    if isinstance(found, str):
        snapshot = Path(found).parent
        return snapshot if _has_weights(snapshot) else None
    return None


def check(checkpoint: str, cache_dir: str | None = None, timeout: float = 5.0) -> Availability:
    """Whether `checkpoint` (hub id or local directory) is loadable; never raises."""
    if _looks_like_path(checkpoint):
        directory = Path(checkpoint).expanduser()
        if (directory / "config.json").exists() and _has_weights(directory):
            return Availability(checkpoint, True, str(directory), _labels_of(directory))
        return Availability(checkpoint, False, message=(
            f"checkpoint {checkpoint!r} is not loadable: the directory has no config.json and weights "
            "(write it with save_pretrained())."))
    snapshot = _cached_snapshot(checkpoint, cache_dir)
    if snapshot is not None:
        return Availability(checkpoint, True, str(snapshot), _labels_of(snapshot))
    if hub_offline():
        return Availability(checkpoint, False, message=(
            f"checkpoint {checkpoint!r} is not available offline: it is not a local directory and not in the Hugging "
            f"Face cache, and HF_HUB_OFFLINE is set. {how_to_make_available(checkpoint)}"))
    return _check_hub(checkpoint, timeout)


def _check_hub(checkpoint: str, timeout: float) -> Availability:
    """Online: the repository exists and this machine may read it (a gated model needs an accepted license and a
    token); it is downloaded on first use."""
    from huggingface_hub import HfApi
    from huggingface_hub.utils import GatedRepoError, RepositoryNotFoundError

    try:
        HfApi().model_info(checkpoint, timeout=timeout)
    except GatedRepoError:
        why = ("is gated on the Hugging Face hub: accept its license on huggingface.co with your account and set "
               "HF_TOKEN")
    except RepositoryNotFoundError:
        why = "does not exist on the Hugging Face hub (or is private): check the id"
    except Exception as exc:  # no network, DNS, proxy, timeout
        why = f"could not be fetched from the Hugging Face hub ({type(exc).__name__}: {str(exc)[:160]})"
    else:
        return Availability(checkpoint, True, "hub")
    message = f"checkpoint {checkpoint!r} {why}. {how_to_make_available(checkpoint)}"
    return Availability(checkpoint, False, message=message)
