"""Which MiniLM layers a linear head should read: the evidence behind `params.layers` = 3.

One forward pass per text gives every layer's hidden states; each pooling below is built from them, and a logistic
regression is fitted on 5,000 SemEval source tweets plus 2,000 stream items (weighted 3, as HUMAN_WEIGHT does), then
scored on 2,000 test items of the stream's domain ("cold" = the source alone). Same samples for every pooling
(seed 0), so the differences are the features'. About two minutes a stream on 2 CPUs.

    .venv/bin/python bench/encoder_pooling.py tse financial --out docs/eval/encoder-pooling.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import levers_sim  # noqa: E402  (the same splits as the evaluation runs)

from backend.specialists.encoder import SentenceEncoder, default_encoder_name  # noqa: E402

Pool = Callable[[tuple[torch.Tensor, ...], torch.Tensor], torch.Tensor]


def _mean(h: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize((h * m).sum(1) / m.sum(1).clamp(min=1), dim=-1)


def _max(h: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize((h - (1 - m) * 1e4).max(1).values, dim=-1)


# hs: every layer's hidden states, last layer first (the word embeddings excluded); m: the attention mask.
POOLS: dict[str, Pool] = {
    "last layer, mean (before)": lambda hs, m: _mean(hs[0], m),
    "last layer, mean + max": lambda hs, m: torch.cat([_mean(hs[0], m), _max(hs[0], m)], 1),
    "last layer, mean + [CLS]": lambda hs, m: torch.cat([_mean(hs[0], m),
                                                         torch.nn.functional.normalize(hs[0][:, 0], dim=-1)], 1),
    "last 2 layers, mean each": lambda hs, m: torch.cat([_mean(h, m) for h in hs[:2]], 1),
    "last 3 layers, mean each (now)": lambda hs, m: torch.cat([_mean(h, m) for h in hs[:3]], 1),
    "last 3 layers averaged": lambda hs, m: torch.nn.functional.normalize(sum(_mean(h, m) for h in hs[:3]), dim=-1),
    "all 6 layers, mean each": lambda hs, m: torch.cat([_mean(h, m) for h in hs], 1),
}


@torch.inference_mode()
def features(enc: SentenceEncoder, texts: list[str]) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    order = np.argsort([len(t) for t in texts], kind="stable")
    for start in range(0, len(texts), 64):
        idx = order[start:start + 64]
        batch = enc.tokenizer([texts[i] for i in idx], truncation=True, max_length=enc.max_length, padding=True,
                              return_tensors="pt")
        hs = enc.model(**batch, output_hidden_states=True).hidden_states[1:][::-1]
        m = batch["attention_mask"].unsqueeze(-1).float()
        for name, pool in POOLS.items():
            v = pool(hs, m).numpy()
            if name not in out:
                out[name] = np.zeros((len(texts), v.shape[1]), dtype=np.float32)
            out[name][idx] = v
    return out


def run(stream: str, enc: SentenceEncoder) -> dict:
    data = levers_sim.load(stream)
    rng = np.random.default_rng(0)

    def sample(split, n: int) -> tuple[list[str], np.ndarray]:
        idx = rng.permutation(len(split))[:n]
        return [split.texts[i] for i in idx], np.array([split.labels[i] for i in idx], dtype=object)

    (src, y_src), (st, y_st), (te, y_te) = sample(data.source, 5000), sample(data.stream, 2000), sample(data.test, 2000)
    t0 = time.perf_counter()
    f_src, f_st, f_te = features(enc, src), features(enc, st), features(enc, te)
    rows = []
    for name in POOLS:
        x = np.vstack([f_src[name], f_st[name]])
        w = np.r_[np.ones(len(src)), np.full(len(st), 3.0)]
        adapted = LogisticRegression(C=2.0, max_iter=3000).fit(x, np.r_[y_src, y_st], sample_weight=w)
        cold = LogisticRegression(C=2.0, max_iter=3000).fit(f_src[name], y_src)
        rows.append({"pooling": name, "dims": int(x.shape[1]),
                     "test_accuracy_source_plus_2000": round(float((adapted.predict(f_te[name]) == y_te).mean()), 4),
                     "test_accuracy_cold": round(float((cold.predict(f_te[name]) == y_te).mean()), 4)})
        print(stream, json.dumps(rows[-1]), flush=True)
    return {"stream": stream, "rows": rows, "seconds": round(time.perf_counter() - t0)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("streams", nargs="+", choices=("tse", "financial"))
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    enc = SentenceEncoder(default_encoder_name())
    results = [run(s, enc) for s in args.streams]
    if args.out:
        args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
