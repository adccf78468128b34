"""Prometheus metrics. With several gunicorn workers set PROMETHEUS_MULTIPROC_DIR so /metrics
aggregates every worker instead of answering for whichever one took the scrape."""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

REQUESTS = Counter("autoannotator_http_requests_total", "HTTP requests", ["endpoint", "status"])
LATENCY = Histogram(
    "autoannotator_http_request_seconds", "HTTP request latency", ["endpoint"],
    buckets=(0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 100),
)
TASKS_PREDICTED = Counter("autoannotator_tasks_predicted_total", "Tasks given a prediction", ["control"])
TASKS_DEFERRED = Counter("autoannotator_tasks_deferred_total", "Tasks a /predict answered empty for lack of time (see "
                         "PREDICT_SECONDS): pushed when ready (retrieve) or only computed (warm)", ["kind"])
TASKS_UNTRAINED = Counter("autoannotator_tasks_without_bundle_total", "Tasks answered empty: no bundle for the labels")
WEBHOOK_EVENTS = Counter("autoannotator_webhook_events_total", "Webhook events recorded", ["action"])
WEBHOOK_FAILURES = Counter("autoannotator_webhook_failures_total", "Webhook events stored but not applied (retried)")
WEBHOOKS_UNAUTHENTICATED = Counter("autoannotator_webhooks_unauthenticated_total",
                                   "Webhooks without valid credentials: stored, not applied")
CONFIDENCE = Histogram("autoannotator_prediction_confidence", "Calibrated confidence of predictions",
                       buckets=(0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0))
ROUTES = Counter("autoannotator_routes_total", "Where predicted tasks ended: auto, llm or human", ["route"])
LLM_CALLS = Counter("autoannotator_llm_reviews_total", "LLM reviews by outcome", ["status"])
LLM_TOKENS = Counter("autoannotator_llm_tokens_total", "LLM tokens, from each response's usage", ["kind"])
LLM_COST = Counter("autoannotator_llm_cost_usd_total", "LLM cost in USD, from the price table")
BUNDLES_LOADED = Gauge("autoannotator_bundles_loaded", "Ensembles loaded in this process", multiprocess_mode="max")


TRUST_N = Gauge("autoannotator_llm_trust_checks", "LLM answers a person also labelled, per class answered",
                ["project", "control", "model", "label"], multiprocess_mode="max")
TRUST_ACCURACY = Gauge("autoannotator_llm_trust_accuracy", "The LLM's measured accuracy per class answered, with the "
                       "ends of its 95% interval", ["project", "control", "model", "label", "bound"],
                       multiprocess_mode="max")
TRUST_ENSEMBLE = Gauge("autoannotator_llm_trust_ensemble_accuracy", "The ensemble's accuracy on the same checked items",
                       ["project", "control", "model", "label"], multiprocess_mode="max")
TRUST_STATE = Gauge("autoannotator_llm_trust_state", "1 for the class's state (probation, trusted, distrusted)",
                    ["project", "control", "model", "label", "state"], multiprocess_mode="max")


def observe_trust(report: dict) -> None:
    """Set the trust gauges from a `/trust` report."""
    pid = str(report.get("project"))
    for led in report.get("ledgers", []):
        for c in led["classes"]:
            key = (pid, led["control"], led["llm_model"], c["label"])
            TRUST_N.labels(*key).set(c["n"])
            TRUST_ENSEMBLE.labels(*key).set(c["ensemble_accuracy"] if c["ensemble_accuracy"] is not None else -1)
            ci = c["llm_interval"] or [None, None]
            for bound, value in (("point", c["llm_accuracy"]), ("low", ci[0]), ("high", ci[1])):
                TRUST_ACCURACY.labels(*key, bound).set(value if value is not None else -1)
            for state in ("probation", "trusted", "distrusted"):
                TRUST_STATE.labels(*key, state).set(1 if c["state"] == state else 0)


def render() -> tuple[bytes, str]:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(), CONTENT_TYPE_LATEST
