"""`autoannotator evaluate`: one cold start, the stream run, an optional threshold sweep, the reports."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import platform
import random
import shutil
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from backend.evaluation import data as eval_data
from backend.evaluation.report import SIMULATION_BANNER, markdown, plots
from backend.evaluation.reviewers import make_reviewer
from backend.evaluation.stream import Harness, no_learning
from backend.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class EvalConfig:
    source: list[Path]
    stream: Path
    out: Path
    test: Path | None = None
    test_split: float = 0.3
    source_test: Path | None = None
    reviewer: str = "oracle"
    stage_size: int = 1000
    text_col: str = "text"
    label_col: str = "label"
    source_text_col: str | None = None
    source_label_col: str | None = None
    label_map: str | None = None
    labels: list[str] | None = None
    seed: int = 0
    source_rows: int | None = None
    stream_rows: int | None = None
    test_rows: int | None = None
    relabel: bool = True
    human_fallback: bool = False
    sweep: list[float] = field(default_factory=list)
    llm_only_sample: int = 0
    cache_dir: Path | None = None
    name: str = ""
    progress: bool = True
    keep_work: bool = False
    shuffle: bool = True
    review_queue: str = "stage"
    specialists: list[dict[str, Any]] | None = None  # the cold start's recipe (default: DEFAULT_SPECIALISTS)


def _machine() -> str:
    return f"{os.cpu_count()} CPUs, {platform.machine()}, load {os.getloadavg()[0]:.2f}"


def llm_only(settings: Settings, data: eval_data.EvalData, figures: dict[str, Any], sample: int, seed: int
             ) -> dict[str, Any] | None:
    """Tokens to label every stream item with the LLM, one prompt per item (the paper's LLM-only baseline).

    With `sample` > 0, that many random stream items are sent through a fresh reviewer (no cache) and the mean
    is measured; otherwise the mean of the run's own review calls is used. Either way it is extrapolated.
    """
    n = figures["items"]
    if sample > 0 and settings.llm_model:
        from backend.llm import Reviewer, ReviewItem
        from backend.llm.cache import LRUCache

        idx = sorted(random.Random(seed).sample(range(len(data.stream)), min(sample, len(data.stream))))
        with Reviewer(settings, cache=LRUCache(sample + 1)) as reviewer:
            results = reviewer.review([ReviewItem(data.stream.texts[i], data.labels) for i in idx],
                                      "llm-only", time_budget_s=0)
        used = [r.prompt_tokens + r.completion_tokens for r in results]
        right = [r.verdict == data.stream.labels[i] for r, i in zip(results, idx, strict=True)]
        mean = sum(used) / max(len(used), 1)
        return {"llm_only_tokens": round(mean * n), "mean_tokens_per_item": round(mean, 1), "sample": len(idx),
                "llm_only_accuracy_on_sample": sum(right) / max(len(right), 1),
                "valid_answers_on_sample": sum(r.verdict is not None for r in results) / max(len(results), 1),
                "method": f"measured on {len(idx)} random stream items, extrapolated to {n}"}
    if figures["llm_calls"]:
        mean = figures["llm_tokens"] / figures["llm_calls"]
        return {"llm_only_tokens": round(mean * n), "mean_tokens_per_item": round(mean, 1),
                "method": f"mean of the run's {figures['llm_calls']} review calls × {n} items"}
    return None


def evaluate(cfg: EvalConfig, settings: Settings | None = None) -> dict[str, Any]:
    """Run the protocol and write DIR/results.json, results.md, stages.png and tradeoff.png."""
    t0 = time.perf_counter()
    settings = settings or Settings.from_env()
    label_map = eval_data.parse_label_map(cfg.label_map)
    data = eval_data.load(cfg.source, cfg.stream, cfg.test, cfg.test_split, cfg.source_test, cfg.text_col,
                          cfg.label_col, label_map, cfg.labels, cfg.seed, cfg.source_rows, cfg.stream_rows,
                          cfg.test_rows, cfg.source_text_col, cfg.source_label_col, cfg.shuffle)
    with contextlib.ExitStack() as stack:
        if cfg.reviewer.startswith("noisy-llm:"):
            settings = stack.enter_context(_noisy_llm(cfg.reviewer, data, settings, cfg.seed))
        return _evaluate(cfg, settings, data, t0)


@contextlib.contextmanager
def _noisy_llm(spec: str, data: eval_data.EvalData, settings: Settings, seed: int) -> Iterator[Settings]:
    """Serve a noisy oracle of the stream's gold on 127.0.0.1 and point the service's LLM settings at it."""
    from backend.evaluation.noisy_llm import NoisyOracle, parse_spec, serving

    p, skew = parse_spec(spec)
    gold = {**dict(zip(data.test.texts, data.test.labels, strict=True)),
            **dict(zip(data.stream.texts, data.stream.labels, strict=True))}
    oracle = NoisyOracle(gold, list(data.labels), p, skew or data.labels[-1], seed)
    with serving(oracle):
        yield settings.with_(llm_model=f"noisy-oracle-p{p:g}", openai_base_url=oracle.base_url,
                             openai_api_key="local", llm_inline_seconds=3600.0, llm_batch_seconds=3600.0)


def _evaluate(cfg: EvalConfig, settings: Settings, data: eval_data.EvalData, t0: float) -> dict[str, Any]:
    reviewer = make_reviewer("llm" if cfg.reviewer.startswith("noisy-llm:") else cfg.reviewer, settings, cfg.seed)
    if cfg.reviewer.startswith("noisy-llm:"):
        reviewer.name, reviewer.simulation = cfg.reviewer, True  # a real HTTP endpoint, a simulated model
    if reviewer.simulation:
        log.warning(SIMULATION_BANNER)
    cfg.out.mkdir(parents=True, exist_ok=True)
    progress = None
    if cfg.progress:
        from tqdm import tqdm

        progress = tqdm
    harness = Harness(data, settings, cfg.out / "work", cfg.cache_dir or (cfg.out / "work" / "cache"), progress,
                      cfg.specialists)
    cold = harness.cold_start()
    log.info("cold start: test %.4f, stream vote %.4f", cold["test_accuracy"], cold["stream_vote_accuracy"])
    try:
        main = harness.run("run", reviewer, cfg.stage_size, cfg.relabel, cfg.human_fallback, cfg.review_queue)
        sweep = []
        for t in cfg.sweep:
            point = main if t == settings.review_confidence_threshold else harness.run(
                f"sweep-{t:g}", make_reviewer(cfg.reviewer, settings, cfg.seed), cfg.stage_size, cfg.relabel,
                cfg.human_fallback, cfg.review_queue, review_confidence_threshold=t)
            sweep.append({"threshold": t, "reviewed_share": point["reviewed_share"],
                          "final_accuracy": point["final_accuracy"], "auto_accuracy": point["auto_accuracy"],
                          "final_accuracy_without_relabel": point["final_accuracy_without_relabel"],
                          "test_accuracy": point["test_accuracy"]})
    finally:
        close = getattr(reviewer, "close", None)
        if close:
            close()
    results: dict[str, Any] = {
        "name": cfg.name or cfg.stream.stem,
        "simulation": reviewer.simulation,
        **{k: main[k] for k in ("final_accuracy", "reviewed_share", "vote_accuracy", "specialists", "llm_calls",
                                "llm_tokens", "people_share", "llm_settled_share", "llm_asked_share")},
        **{k: main[k] for k in ("trust", "target") if k in main},
        "llm_only_tokens": None,
        "stages": [{"stage": s["stage"], "hard_share": s["hard_share"], "specialists": s["test_specialists"],
                    "ensemble": s["test_accuracy"]} for s in main["stages"]],
        "run": main, "cold_start": cold,
        "no_learning": no_learning(harness.cold_stream, data.stream.labels, harness.settings_for(cfg.out / "work"),
                                   data.labels, cfg.stage_size),
        "sweep": sweep,
        "data": {"labels": data.labels, "source": " + ".join(str(p) for p in cfg.source),
                 "source_rows": len(data.source), "stream": data.stream.origin, "stream_rows": len(data.stream),
                 "test": data.test.origin, "test_rows": len(data.test), "notes": data.notes},
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()
                   if k not in ("source",)} | {"source": [str(p) for p in cfg.source]},
    }
    lo = llm_only(settings, data, main, cfg.llm_only_sample, cfg.seed)
    if lo:
        results["llm_only"] = lo
        results["llm_only_tokens"] = lo["llm_only_tokens"]
    results["seconds"] = round(time.perf_counter() - t0, 1)
    results["machine"] = _machine()
    (cfg.out / "results.json").write_text(json.dumps(results, indent=2, default=str))
    (cfg.out / "results.md").write_text(markdown(results))
    plots(results, cfg.out)
    if not cfg.keep_work:  # every run's bundles and database: large, and only needed to debug a run
        shutil.rmtree(cfg.out / "work", ignore_errors=True)
    return results
