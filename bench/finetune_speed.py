"""What the fine-tuning loop of an `hf` specialist trains at on this machine: texts/s, side by side in one run.

`HFClassifierSpecialist.fit` tokenises once, pads batches drawn from length-sorted pools, and runs the forward
pass under bf16 autocast where the CPU has native bf16 (fp32 master weights). This times it against the loop it
replaced (random batches padded by the tokenizer, fp32; written out here as the reference), on the same real
tweets and the same MiniLM checkpoint, one epoch each, interleaved in rounds because the machine is shared.
Each round starts both from the same weights; the figure is the median of the rounds.

    .venv/bin/python bench/finetune_speed.py --out docs/bench-finetune-speed.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from benchlib import EVAL_DATA

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from backend.datasets import load_labelled  # noqa: E402
from backend.specialists import registry  # noqa: E402
from backend.specialists import torch_runtime as rt  # noqa: E402

TWEETS = EVAL_DATA / "tweet-sentiment-extraction" / "initial__train.csv"
LABELS = ["negative", "neutral", "positive"]


def checkpoint(workdir: Path) -> str:
    """A real sequence-classification checkpoint: the shipped MiniLM body and a fresh 3-way head."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    src = str(rt.shipped_minilm_path())
    AutoModelForSequenceClassification.from_pretrained(src, num_labels=3).save_pretrained(workdir)
    AutoTokenizer.from_pretrained(src).save_pretrained(workdir)
    return str(workdir)


def before(ckpt: str, texts: list[str], y: np.ndarray, bs: int) -> None:
    """The loop before: a random permutation in batches, each padded by the tokenizer, fp32 throughout."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(ckpt)
    model = AutoModelForSequenceClassification.from_pretrained(ckpt).train()
    opt = torch.optim.AdamW(model.parameters(), lr=5e-5)
    target = torch.tensor(y)
    for idx in torch.randperm(len(texts), generator=torch.Generator().manual_seed(0)).split(bs):
        batch = tok([texts[i] for i in idx], truncation=True, max_length=128, padding=True, return_tensors="pt")
        loss = torch.nn.functional.cross_entropy(model(**batch).logits, target[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()


def after(ckpt: str, texts: list[str], y: np.ndarray, bs: int) -> None:
    sp = registry.create("hf", "ft", LABELS, False, {"checkpoint": ckpt, "mode": "full", "epochs": 1,
                                                      "train_batch_size": bs})
    sp.fit(texts, y)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--texts", type=int, default=640, help="texts per epoch")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    data = load_labelled(str(TWEETS), text_col="text", label_col="sentiment")
    keep = [i for i, names in enumerate(data.labels) if names and names[0] in LABELS][: args.texts]
    texts = [data.texts[i] for i in keep]
    y = np.array([LABELS.index(data.labels[i][0]) for i in keep])
    paths = {"before: random batches, fp32": before, "now: length-pooled batches, bf16 autocast": after}
    timings: dict[str, list[float]] = {k: [] for k in paths}
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = checkpoint(Path(tmp))
        for r in range(args.rounds):
            for name, fn in (paths.items() if r % 2 == 0 else reversed(paths.items())):
                t0 = time.perf_counter()
                fn(ckpt, texts, y, args.batch_size)
                timings[name].append(len(texts) / (time.perf_counter() - t0))
                print(f"round {r + 1} {name}: {timings[name][-1]:.1f} texts/s", flush=True)
    medians = {k: statistics.median(v) for k, v in timings.items()}
    names = list(paths)
    result = {"texts_per_epoch": len(texts), "rounds": args.rounds, "batch_size": args.batch_size,
              "threads": args.threads, "bf16": rt.cpu_has_bf16(), "texts_per_second": timings,
              "median_texts_per_second": medians, "speedup": medians[names[1]] / medians[names[0]],
              "machine": f"{platform.processor() or platform.machine()}, torch {torch.__version__}"}
    print(json.dumps({k: result[k] for k in ("median_texts_per_second", "speedup", "bf16")}, indent=2))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
