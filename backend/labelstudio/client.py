"""A thin client over label-studio-sdk for what the backend writes back into Label Studio.

Used by `autoannotator prelabel` and by the asynchronous review (REVIEW_MODE=async): list a project's tasks in
pages, create predictions in batches, flag tasks with the data fields `autoannotator_route` (auto / llm / human)
and `autoannotator_reason` — data fields are Data Manager columns and filters in open-source Label Studio, task
meta is not — and align the project's model_version (and optionally its sampling) with ours.

The SDK is imported lazily (it is heavy and only these paths need it), and it is always given `base_url` and
`api_key` explicitly: its constructor defaults to the LABEL_STUDIO_API_KEY read when the module is imported. A
legacy token is sent as "Token <key>"; a personal access token (a JWT refresh token) is exchanged and refreshed by
the SDK itself.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from backend.decision.states import CARE, RouteName
from backend.settings import Settings

if TYPE_CHECKING:
    from label_studio_sdk.client import LabelStudio

log = logging.getLogger(__name__)

ROUTE_FIELD = "autoannotator_route"
REASON_FIELD = "autoannotator_reason"
UNCERTAINTY_SAMPLING = "Uncertainty sampling"
_REASON_CHARS = 500


class LabelStudioUnavailable(RuntimeError):
    """Label Studio could not be reached or refused a call; the message says which and why."""


class LabelStudioClient:
    def __init__(self, url: str, api_key: str, timeout_s: float = 30.0, client: LabelStudio | None = None):
        if not url or not api_key:
            raise ValueError("LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY are both needed to write to Label Studio")
        self.url = url.rstrip("/")
        if client is None:
            from label_studio_sdk.client import LabelStudio

            client = LabelStudio(base_url=self.url, api_key=api_key, timeout=timeout_s, max_retries=2)
        self.sdk = client

    @classmethod
    def from_settings(cls, settings: Settings) -> LabelStudioClient | None:
        """None when LABEL_STUDIO_URL or LABEL_STUDIO_API_KEY is not set."""
        if not (settings.label_studio_url and settings.label_studio_api_key):
            return None
        return cls(settings.label_studio_url, settings.label_studio_api_key, settings.label_studio_timeout_seconds)

    # -- reading -------------------------------------------------------------------------------
    def project(self, project_id: int) -> dict[str, Any]:
        return _plain(self.sdk.projects.get(id=int(project_id)))

    def tasks(self, project_id: int, page_size: int = 100) -> Iterator[dict[str, Any]]:
        """Every task of a project (id, data, predictions, …), fetched one page at a time, in id order."""
        pager = self.sdk.tasks.list(project=int(project_id), page_size=page_size, fields="all")
        for task in pager:
            yield _plain(task)

    def ml_titles(self, project_id: int) -> set[str]:
        """The titles of the project's ML backends: a project whose model_version is one of them is shown its
        backend's current predictions (Label Studio's default once a backend is connected)."""
        return {str(_plain(m).get("title") or "") for m in self.sdk.ml.list(project=int(project_id))}

    def task(self, task_id: int) -> dict[str, Any]:
        return _plain(self.sdk.tasks.get(id=str(task_id)))

    def predictions(self, task_id: int) -> list[dict[str, Any]]:
        return [_plain(p) for p in self.sdk.predictions.list(task=int(task_id))]

    def annotation(self, annotation_id: int) -> dict[str, Any]:
        return _plain(self.sdk.annotations.get(id=int(annotation_id)))

    # -- writing -------------------------------------------------------------------------------
    def authorize_webhooks(self, project_id: int, user: str, authorization: str) -> int:
        """Label Studio makes the ML webhook of a backend without headers, so a backend behind basic auth never
        hears of annotations. Put `authorization` on the webhooks Label Studio made for this project's ML
        backends that log in as `user`; returns how many such webhooks there are (0: not made yet)."""
        ours = set()
        for ml in self.sdk.ml.list(project=int(project_id)):
            m = _plain(ml)
            if str(m.get("auth_method") or "").upper() == "BASIC_AUTH" and m.get("basic_auth_user") in (None, user):
                ours.add(str(m.get("url") or "").rstrip("/") + "/webhook")
        found = 0
        for hook in self.sdk.webhooks.list(project=str(project_id)):
            h = _plain(hook)
            if str(h.get("url") or "").rstrip("/") not in ours:
                continue
            found += 1
            headers = dict(h.get("headers") or {})
            if headers.get("Authorization") != authorization:
                self.sdk.webhooks.update(id=int(h["id"]), url=h["url"], headers={**headers,
                                                                                 "Authorization": authorization})
                log.info("set the Authorization header on Label Studio webhook %s (project %s)", h["id"], project_id)
        return found

    def create_predictions(self, project_id: int, predictions: Sequence[dict[str, Any]], batch: int = 100) -> int:
        """Create predictions ({task, result, score, model_version}) in batches; returns how many were created."""
        created = 0
        for start in range(0, len(predictions), batch):
            chunk = [{"task": int(p["task"]), "result": p["result"], "score": p.get("score"),
                      "model_version": p.get("model_version")} for p in predictions[start:start + batch]]
            resp = self.sdk.projects.import_predictions(id=int(project_id), request=chunk)
            created += int(getattr(resp, "created", None) or len(chunk))
        return created

    def create_prediction(self, task_id: int, result: list[dict[str, Any]], score: float,
                          model_version: str) -> dict[str, Any]:
        return _plain(self.sdk.predictions.create(task=int(task_id), result=result, score=score,
                                                  model_version=model_version))

    def delete_prediction(self, prediction_id: int) -> None:
        self.sdk.predictions.delete(id=int(prediction_id))

    def set_route(self, task_id: int, route: str, reason: str = "", data: dict[str, Any] | None = None) -> None:
        """Write the route flag into task.data, keeping the rest of it; `data` saves a GET when already known."""
        if data is None:
            data = self.task(task_id).get("data") or {}
        new = {**data, ROUTE_FIELD: route, REASON_FIELD: reason[:_REASON_CHARS]}
        if new != data:
            self.sdk.tasks.update(id=str(task_id), data=new)

    def align_project(self, project_id: int, model_version: str, sampling: str | None = None) -> dict[str, Any]:
        """Set project.model_version (so the score column and uncertainty sampling use ours) and maybe sampling.
        Call it only once predictions of that version exist: Label Studio validates the version against them."""
        changes: dict[str, Any] = {"model_version": model_version}
        if sampling:
            changes["sampling"] = sampling
        return _plain(self.sdk.projects.update(id=int(project_id), **changes))


def route_of(records: Sequence[dict[str, Any]]) -> tuple[str, str]:
    """One task's route over its controls' provenance records: the one needing most care wins."""
    if not records:
        return RouteName.AUTO, ""
    worst = max(records, key=lambda r: CARE.get(r["route"], CARE[RouteName.HUMAN]))
    reasons = [f"{r['control']}: {r['reason']}" for r in records if r["route"] == worst["route"]]
    return worst["route"], "; ".join(reasons) if len(records) > 1 else (worst.get("reason") or "")


def _plain(obj: Any) -> dict[str, Any]:
    if isinstance(obj, dict):
        return obj
    if hasattr(obj, "model_dump"):
        return obj.model_dump()
    if hasattr(obj, "dict"):
        return obj.dict()
    return dict(obj)
