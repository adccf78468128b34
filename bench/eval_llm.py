"""`autoannotator evaluate --reviewer llm` against a real local LLM: SmolLM2-135M-Instruct on llama-cpp-python.

The model is small and its labels are poor: the run shows the LLM path end to end (real prompts, real usage
tokens, invalid answers going to humans and never becoming labels) and the LLM-only token count on a sample,
not what a capable LLM would reach. Tokens are priced as gpt-4o-mini through LLM_PRICES.

    .venv/bin/python bench/eval_llm.py            # writes docs/eval/financial-llm/
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import EVAL_DATA
from llm_cost import start_llama

REPO = Path(__file__).resolve().parent.parent
D = EVAL_DATA
S = D / "semeval2017-task4a"
FIN_MAP = {"negative": "Bearish", "positive": "Bullish", "neutral": "Neutral", "0": "Bearish", "1": "Bullish",
           "2": "Neutral"}


def main() -> None:
    proc, base = start_llama()
    try:
        env = {**os.environ, "OPENAI_BASE_URL": base, "OPENAI_API_KEY": "local", "LLM_MODEL": "smollm2",
               "LLM_PRICES": json.dumps({"smollm2": [0.15, 0.60]}), "LLM_TIMEOUT_SECONDS": "60",
               "LLM_CONCURRENCY": "2", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
               "GATE_MARGIN": os.environ.get("GATE_MARGIN", "0.05")}
        source = sorted(str(p) for p in S.glob("Subtask_A__downloaded__twitter-201*-A.tsv"))
        cmd = [str(REPO / ".venv" / "bin" / "autoannotator"), "evaluate", "--name", "financial news, SmolLM2 reviewer",
               "--out", str(REPO / "docs" / "eval" / "financial-llm"),
               "--cache-dir", os.environ.get("EVAL_CACHE", "/tmp/autoannotator-eval-cache"),
               "--source", *source, "--source-text-col", "2", "--source-label-col", "1",
               "--stream", str(D / "twitter-financial-news-sentiment" / "sent_train.csv"),
               "--test", str(D / "twitter-financial-news-sentiment" / "sent_valid.csv"),
               "--label-map", json.dumps(FIN_MAP), "--labels", "Bearish,Bullish,Neutral",
               "--stream-rows", "600", "--test-rows", "600", "--stage-size", "200",
               "--reviewer", "llm", "--rule", "confidence", "--threshold", "0.9", "--max-review-share", "0.25",
               "--llm-only-sample", "100"]
        subprocess.run(cmd, env=env, check=True, cwd=REPO)
    finally:
        proc.kill()
        proc.wait()


if __name__ == "__main__":
    main()
