"""What reading three layers instead of one costs the encoder: texts/s, side by side in one run.

`SentenceEncoder.encode` now asks the model for every layer's hidden states and mean-pools each, so a head can
read the last few (`params.layers`). This times that path against the pooling it replaced (the last layer only,
written out here as the reference) on the same real tweets, interleaved in rounds because the machine is shared
and its load drifts. The transformer's forward pass is the same in both; the difference is the extra pooling.

    .venv/bin/python bench/encoder_layers.py --out docs/bench-encoder-layers.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from benchlib import EVAL_DATA

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from backend.datasets import load_labelled  # noqa: E402
from backend.specialists import torch_runtime as rt  # noqa: E402
from backend.specialists.encoder import SentenceEncoder, default_encoder_name  # noqa: E402

TWEETS = EVAL_DATA / "tweet-sentiment-extraction" / "initial__train.csv"


@torch.inference_mode()
def last_layer_only(enc: SentenceEncoder, texts: list[str]) -> np.ndarray:
    """The pooling before `layers` existed: the last hidden state only."""
    tok = enc.tokenizer(texts, truncation=True, max_length=enc.max_length)
    ids = tok["input_ids"]
    out = np.zeros((len(ids), enc.dim), dtype=np.float32)
    for idx in rt.length_sorted_batches([len(x) for x in ids], enc.batch_size):
        batch = enc.tokenizer.pad({"input_ids": [ids[i] for i in idx],
                                   "attention_mask": [tok["attention_mask"][i] for i in idx]},
                                  return_tensors="pt", pad_to_multiple_of=8)
        hidden = enc.model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
        out[idx] = torch.nn.functional.normalize(pooled.float(), dim=-1).numpy()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--texts", type=int, default=1000, help="distinct texts per round and path")
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    texts = load_labelled(str(TWEETS), text_col="text", label_col="sentiment").texts
    enc = SentenceEncoder(default_encoder_name())
    paths = {"last layer only (before)": lambda t: last_layer_only(enc, t),
             "encode(layers=1)": lambda t: enc.encode(t, 1),
             "encode(layers=3)": lambda t: enc.encode(t, 3)}
    check = texts[:64]
    assert np.allclose(paths["last layer only (before)"](check), enc.encode(check, 3)[:, :enc.dim], atol=1e-5)
    rates: dict[str, list[float]] = {k: [] for k in paths}
    offset = 64
    names = list(paths)
    for r in range(args.rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:  # each path leads in turn
            fn = paths[name]
            part = texts[offset:offset + args.texts]  # fresh texts every time: no sibling cache answers
            offset += args.texts
            t0 = time.perf_counter()
            fn(part)
            rates[name].append(len(part) / (time.perf_counter() - t0))
    base = statistics.median(rates["last layer only (before)"])
    result = {"texts_per_round": args.texts, "rounds": args.rounds, "encoder": enc.name, "threads":
              torch.get_num_threads(), "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}",
              "paths": {k: {"texts_per_s_median": round(statistics.median(v), 1),
                            "ratio_to_before": round(statistics.median(v) / base, 3),
                            "texts_per_s": [round(x, 1) for x in v]} for k, v in rates.items()}}
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
