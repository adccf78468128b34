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
TASKS_UNTRAINED = Counter("autoannotator_tasks_without_bundle_total", "Tasks answered empty: no bundle for the labels")
WEBHOOK_EVENTS = Counter("autoannotator_webhook_events_total", "Webhook events recorded", ["action"])
CONFIDENCE = Histogram("autoannotator_prediction_confidence", "Calibrated confidence of predictions",
                       buckets=(0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0))
ROUTES = Counter("autoannotator_routes_total", "Where predicted tasks ended: auto, llm or human", ["route"])
LLM_CALLS = Counter("autoannotator_llm_reviews_total", "LLM reviews by outcome", ["status"])
LLM_TOKENS = Counter("autoannotator_llm_tokens_total", "LLM tokens, from each response's usage", ["kind"])
LLM_COST = Counter("autoannotator_llm_cost_usd_total", "LLM cost in USD, from the price table")
BUNDLES_LOADED = Gauge("autoannotator_bundles_loaded", "Ensembles loaded in this process", multiprocess_mode="max")


def render() -> tuple[bytes, str]:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(), CONTENT_TYPE_LATEST
