"""What a request body may hold: a JSON object of bounded depth whose strings every database can store, and ids
Label Studio could have sent. Anything else is the caller's mistake and gets a 4xx with a message.

Pure: no Flask, no database. The HTTP face parses with `loads`; the model checks ids and project keys with
`task_id` and `project_key`.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Any

from backend.errors import ApiError

MAX_DEPTH = 64  # Label Studio's deepest body (a webhook's project with its parsed config) nests about 8 levels
MAX_ID = 2**31 - 1  # Label Studio's ids are 32-bit integers; so are the store's id columns
MAX_KEY = 64  # project keys and control names, as stored

_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")  # NUL (PostgreSQL text refuses it) and lone surrogates (not UTF-8)
_PROJECT = re.compile(r"[A-Za-z0-9_-]{1,64}")


class PayloadError(ApiError):
    status = 400


def _constant(name: str) -> Any:
    raise PayloadError(f"{name} is not a JSON number: send null or a finite number")


def loads(raw: bytes | str) -> Any:
    """Parse a body; strings come back storable (NUL and lone surrogates become U+FFFD)."""
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise PayloadError(f"the body is not UTF-8: byte {exc.start} cannot be decoded") from exc
    try:
        value = json.loads(raw, parse_constant=_constant)
    except RecursionError as exc:
        raise PayloadError(f"JSON nested deeper than {MAX_DEPTH} levels") from exc
    except json.JSONDecodeError as exc:
        raise PayloadError(f"malformed JSON: {exc}") from exc
    return clean(value)


def clean(value: Any, depth: int = 0) -> Any:
    """The same value with storable strings; deeper than MAX_DEPTH is refused."""
    if depth > MAX_DEPTH:
        raise PayloadError(f"JSON nested deeper than {MAX_DEPTH} levels")
    if isinstance(value, str):
        return _UNSTORABLE.sub("\ufffd", value)
    if isinstance(value, dict):
        return {clean(k, depth): clean(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list):
        return [clean(v, depth + 1) for v in value]
    return value


def storable(text: str) -> str:
    """Raw text kept as received, except what a database cannot hold."""
    return _UNSTORABLE.sub("\ufffd", text)


def task_id(value: Any) -> int | None:
    """A Label Studio id (0 … 2^31-1), or None: booleans, floats, strings and huge numbers are not ids."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_ID:
        return value
    return None


def project_key(project: Any) -> str:
    """Label Studio sends "<id>.<created_at>" to /setup and /predict, and {"id": …} in webhooks."""
    if isinstance(project, dict):
        project = project.get("id")
    if project is None or project == "":
        return "unknown"
    if isinstance(project, bool) or not isinstance(project, int | str):
        raise PayloadError("'project' must be a Label Studio project id such as 12 or \"12.1717171717\"")
    key = str(project).split(".")[0]
    if not _PROJECT.fullmatch(key):
        raise PayloadError(f"'project' must be a Label Studio project id (letters, digits, '-' or '_', at most "
                           f"{MAX_KEY} characters before the '.'), got {key[:40]!r}")
    return key


def project_ref(project: Any) -> tuple[str, int | None]:
    """(Label Studio project id, its creation time in whole seconds or None). /setup and /predict send
    "<id>.<created_at>", webhooks the project with an ISO `created_at`; the pair tells two instances' projects of
    the same id apart."""
    key = project_key(project)
    created: Any = None
    if isinstance(project, dict):
        created = project.get("created_at")
        if isinstance(created, datetime):  # the SDK's project object
            created = created.timestamp()
        elif isinstance(created, str):
            try:
                created = datetime.fromisoformat(created.replace("Z", "+00:00")).timestamp()
            except ValueError:
                created = None
    elif isinstance(project, str) and "." in project:
        created = project.split(".", 1)[1]
        created = int(created) if created.isdigit() and len(created) <= 12 else None
    if isinstance(created, bool) or not isinstance(created, int | float) or created != created:
        return key, None
    return key, int(created)


def webhook_problem(body: dict[str, Any]) -> str | None:
    """Why a webhook body is not something Label Studio sends, or None. Checked after the body is stored."""
    action = body.get("action")
    if not isinstance(action, str) or not action.strip():
        return "webhook body has no 'action'"
    if len(action) > MAX_KEY:
        return f"'action' is longer than {MAX_KEY} characters"
    if "project" in body:
        try:
            project_key(body["project"])
        except PayloadError as exc:
            return exc.message
    task = body.get("task")
    if task is not None:
        if isinstance(task, dict):
            if task.get("id") is not None and task_id(task["id"]) is None:
                return f"task.id must be a whole number from 0 to {MAX_ID}"
            if "data" in task and not isinstance(task["data"], dict):
                return "task.data must be an object"
        elif task_id(task) is None:
            return f"'task' must be an object or an id from 0 to {MAX_ID}"
    annotation = body.get("annotation")
    if annotation is not None:
        problem = _annotation_problem(annotation)
        if problem:
            return problem
    annotations = body.get("annotations")
    if annotations is not None:
        if not isinstance(annotations, list):
            return "'annotations' must be a list"
        for a in annotations:
            if not isinstance(a, dict) or task_id(a.get("id")) is None:
                return f"each of 'annotations' must be an object with an id from 0 to {MAX_ID}"
    return None


def _annotation_problem(annotation: Any) -> str | None:
    if not isinstance(annotation, dict):
        return "'annotation' must be an object"
    for key in ("id", "task"):
        value = annotation.get(key)
        if value is not None and not isinstance(value, dict) and task_id(value) is None:
            return f"annotation.{key} must be a whole number from 0 to {MAX_ID}"
    result = annotation.get("result")
    if result is None:
        return None
    if not isinstance(result, list):
        return "annotation.result must be a list of regions"
    for n, region in enumerate(result):
        if not isinstance(region, dict):
            return f"annotation.result[{n}] must be an object"
        name = region.get("from_name")
        if not isinstance(name, str) or not name or len(name) > MAX_KEY:
            return f"annotation.result[{n}].from_name must be a control name of 1 to {MAX_KEY} characters"
        value = region.get("value")
        if not isinstance(value, dict):
            return f"annotation.result[{n}].value must be an object"
        if region.get("type") == "choices":
            choices = value.get("choices")
            if not isinstance(choices, list) or not all(isinstance(c, str) and c for c in choices):
                return f"annotation.result[{n}].value.choices must be a list of label names"
    return None
