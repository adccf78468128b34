"""The HTTP face: Label Studio's ML-backend protocol over Flask, thin on purpose.

Each route parses and validates the request, calls the service, and shapes the answer;
no model code lives here and nothing here imports torch (a test checks it). Every caller mistake
ends as a 4xx JSON body with a message.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import logging
import time
import uuid
from typing import TYPE_CHECKING, Any

from flask import Flask, Response, g, jsonify, request
from werkzeug.exceptions import HTTPException

from backend import metrics, payload
from backend.errors import ApiError
from backend.settings import Settings

if TYPE_CHECKING:
    from backend.service import AnnotationService

log = logging.getLogger(__name__)

_OPEN_PATHS = {"/health", "/"}


def _json_body() -> dict[str, Any]:
    raw = request.get_data(cache=True)
    if not raw.strip():
        raise ApiError("request body is empty: a JSON object is expected", status=400)
    body = payload.loads(raw)
    if not isinstance(body, dict):
        raise ApiError("the JSON body must be an object", status=400)
    return body


def _authorized(settings: Settings) -> bool:
    header = request.headers.get("Authorization", "")
    if not header.startswith("Basic "):
        return False
    try:
        user, _, password = base64.b64decode(header[6:], validate=True).decode("utf-8").partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return False
    return hmac.compare_digest(user, settings.basic_auth_user) and hmac.compare_digest(password,
                                                                                      settings.basic_auth_pass)


def create_app(settings: Settings, service: AnnotationService) -> Flask:
    """The Flask app over a built service (the commands build it: `backend.commands.wsgi`)."""
    app = Flask("autoannotator")
    app.config["MAX_CONTENT_LENGTH"] = settings.max_request_bytes
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.extensions["autoannotator.service"] = service

    @app.before_request
    def _start() -> Response | None:
        g.t0 = time.perf_counter()
        if settings.auth_enabled and request.path not in _OPEN_PATHS and not _authorized(settings):
            body: dict[str, Any] = {"status": 401, "error": "authentication required: HTTP basic auth "
                                                            "(BASIC_AUTH_USER/BASIC_AUTH_PASS)"}
            if request.path == "/webhook" and request.method == "POST":
                # Label Studio creates its ML webhook without headers: kept and counted, so it is never silent.
                body["event_id"] = service.unauthenticated_webhook(request.get_data(cache=True))
                body["error"] += ("; this webhook was stored but not applied. Label Studio sends webhooks without "
                                  "credentials unless they are set on the webhook: set LABEL_STUDIO_URL and "
                                  "LABEL_STUDIO_API_KEY and the backend sets them at the project's next /setup")
            resp = jsonify(body)
            resp.status_code = 401
            resp.headers["WWW-Authenticate"] = 'Basic realm="autoannotator"'
            return resp
        return None

    @app.after_request
    def _observe(resp: Response) -> Response:
        endpoint = request.url_rule.rule if request.url_rule else "unmatched"
        metrics.REQUESTS.labels(endpoint, str(resp.status_code)).inc()
        metrics.LATENCY.labels(endpoint).observe(time.perf_counter() - g.get("t0", time.perf_counter()))
        return resp

    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError) -> tuple[Response, int]:
        return jsonify(exc.to_json()), exc.status

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> tuple[Response, int]:
        code = exc.code or 500
        return jsonify(error=exc.description or exc.name, status=code), code

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> tuple[Response, int]:
        error_id = uuid.uuid4().hex[:12]
        log.exception("unhandled error %s on %s", error_id, request.path)
        # Never the exception's text: it can hold SQL and the user's data.
        return jsonify(error=f"internal error ({type(exc).__name__}); the server log has the details under "
                             f"error id {error_id}", status=500, error_id=error_id), 500

    @app.get("/")
    @app.get("/health")
    def health() -> Response:
        return jsonify(service.health())

    @app.post("/setup")
    def setup() -> Response:
        body = _json_body()
        return jsonify(service.setup(body.get("project"), body.get("schema"), body.get("extra_params")))

    @app.post("/predict")
    def predict() -> Response:
        body = _json_body()
        if "tasks" not in body:
            raise ApiError("'tasks' is missing: Label Studio sends {tasks, label_config, project, params}", status=400)
        params = body.get("params") if isinstance(body.get("params"), dict) else {}
        label_config = body.get("label_config") or body.get("schema")
        results = service.predict(body["tasks"], label_config, body.get("project"), params.get("context"))
        return jsonify(results=results)

    @app.post("/webhook")
    def webhook() -> tuple[Response, int]:
        raw = request.get_data(cache=True)
        text = raw.decode("utf-8", errors="replace")
        problem = None
        try:
            body = payload.loads(raw) if raw.strip() else None
        except ApiError as exc:  # kept anyway, so nothing Label Studio sent is lost; the sender learns why
            body, problem = None, exc.message
        action = body.get("action") if isinstance(body, dict) else None
        name = action if isinstance(action, str) and action else ("NO_ACTION" if isinstance(body, dict)
                                                                  else "INVALID_PAYLOAD")
        out = service.fit(name, body if isinstance(body, dict) else None, text, problem=problem)
        return jsonify(out), 200 if out.get("applied", True) else 202

    @app.get("/jobs")
    def jobs() -> Response:
        project = request.args.get("project")
        pid = service.project(project) if project else None
        return jsonify(jobs=service.jobs.list(project_id=pid), pushes=service.pushes.progress(pid))

    @app.get("/jobs/<int:job_id>")
    def job(job_id: int) -> Response:
        found = service.jobs.get(job_id) if payload.task_id(job_id) else None
        if found is None:
            raise ApiError(f"no training job {job_id}", status=404)
        return jsonify(found)

    @app.get("/tasks/<int:task_id>/provenance")
    def provenance(task_id: int) -> Response:
        records = service.provenance(task_id, request.args.get("project")) if payload.task_id(task_id) else []
        if not records:
            raise ApiError(f"no prediction recorded for task {task_id}", status=404)
        return jsonify(task=task_id, records=records)

    @app.get("/llm/usage")
    def llm_usage() -> Response:
        return jsonify(service.llm_usage(request.args.get("project")))

    @app.get("/trust")
    def trust() -> Response:
        project = request.args.get("project")
        if not project:
            raise ApiError("'project' is required: /trust?project=<Label Studio project id>", status=400)
        report = service.trust(project)
        metrics.observe_trust(report)
        return jsonify(report)

    @app.get("/quality")
    def quality() -> Response:
        project = request.args.get("project")
        if not project:
            raise ApiError("'project' is required: /quality?project=<Label Studio project id>", status=400)
        return jsonify(service.quality(project))

    @app.get("/ui")
    def ui_index() -> Response:
        from backend.http.ui import pages

        return Response(pages.index(service.store.projects()), content_type="text/html; charset=utf-8")

    @app.get("/ui/projects/<project>")
    def ui_project(project: str) -> Response:
        from backend.http.ui import pages
        from backend.http.ui.overview import project_overview

        pid = service.project(project)
        if service.store.project(pid) is None:
            raise ApiError(f"no project {pid!r} has been seen by this backend", status=404)
        task = None
        raw = request.args.get("task", "").strip()
        if raw:
            if not raw.isdigit() or len(raw) > 18 or payload.task_id(int(raw)) is None:
                raise ApiError(f"'task' must be a task id (a whole number from 0 to {payload.MAX_ID})", status=400)
            task = {"task": int(raw), "records": service.provenance(int(raw), pid)}
        return Response(pages.project(project_overview(service, pid), task), content_type="text/html; charset=utf-8")

    @app.get("/review/jobs")
    def review_jobs() -> Response:
        project = request.args.get("project")
        status = request.args.get("status")
        return jsonify(jobs=service.review_jobs.list(project_id=service.project(project) if project else None,
                                                   status=status, limit=200, brief=True))

    @app.get("/versions")
    def versions() -> Response:
        return jsonify(versions=service.versions())

    @app.get("/metrics")
    def prometheus() -> Response:
        for p in service.store.projects():  # the ledgers are in the database: any worker reports them all
            metrics.observe_trust(service.trust(p["project_id"]))
        data, content_type = metrics.render()
        return Response(data, content_type=content_type)

    return app
