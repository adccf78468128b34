"""Real checkpoints, catalogs and label configs for the planning tests (issue #6).

Checkpoints are built from the shipped all-MiniLM-L6-v2 with save_pretrained, as the `minilm_classifier_dir`
fixture does: a 'good' one whose head is trained on clearly worded sentiment texts, and a 'constant' one whose
head always answers the same label (no better than chance by construction).
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

FINANCE_XML = ('<View><Text name="text" value="$text"/><Choices name="tone" toName="text">'
               '<Choice value="Bearish"/><Choice value="Bullish"/><Choice value="Neutral"/></Choices></View>')
SENTIMENT_CHOICES = ["Positive", "Negative", "Neutral"]

_WORDS = {
    "Positive": ["love", "wonderful", "great", "excellent", "happy", "fantastic", "amazing", "delighted"],
    "Negative": ["hate", "awful", "terrible", "horrible", "angry", "disgusting", "worst", "miserable"],
    "Neutral": ["meeting", "tuesday", "report", "schedule", "address", "office", "number", "document"],
}
_FRAMES = {
    "Positive": ["i {} this so much", "what a {} day, {} indeed", "{} news, truly {}"],
    "Negative": ["i {} this so much", "what a {} day, {} indeed", "{} news, truly {}"],
    "Neutral": ["the {} is on file", "please send the {} and the {}", "the {} moved to the {}"],
}
# The finance names of the same three meanings.
FINANCE = {"Positive": "Bullish", "Negative": "Bearish", "Neutral": "Neutral"}


def sentiment_rows(n: int, seed: int = 0, skew: str | None = None) -> list[tuple[str, str]]:
    """(text, Positive|Negative|Neutral) pairs worded so a sentence encoder separates them; `skew` makes one label
    half of the rows (a majority class, for the chance tests)."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        label = skew if skew and i % 2 == 0 else SENTIMENT_CHOICES[i % 3]
        frame = rng.choice(_FRAMES[label])
        words = rng.sample(_WORDS[label], frame.count("{}"))
        out.append((frame.format(*words), label))
    rng.shuffle(out)
    return out


def save_checkpoint(out: Path, id2label: dict[int, str], head: str = "random", seed: int = 0) -> Path:
    """A sequence-classification checkpoint on the shipped MiniLM body. head: random | constant:<index> | trained
    (trained on `sentiment_rows` with labels named by id2label's order NEG/NEU/POS-like meanings)."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from backend.specialists.torch_runtime import shipped_minilm_path

    src = shipped_minilm_path()
    torch.manual_seed(seed)
    model = AutoModelForSequenceClassification.from_pretrained(
        src, num_labels=len(id2label), id2label=id2label, label2id={v: k for k, v in id2label.items()})
    tokenizer = AutoTokenizer.from_pretrained(src)
    if head.startswith("constant:"):
        with torch.no_grad():
            model.classifier.weight.zero_()
            model.classifier.bias.zero_()
            model.classifier.bias[int(head.split(":")[1])] = 5.0
    elif head == "trained":
        _train_head(model, tokenizer, id2label)
    shutil.rmtree(out, ignore_errors=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def _train_head(model, tokenizer, id2label: dict[int, str]) -> None:
    """Head only, on embeddings computed once: a few seconds on a CPU."""
    import torch

    meaning = {"NEG": "Negative", "NEU": "Neutral", "POS": "Positive", "negative": "Negative", "neutral": "Neutral",
               "positive": "Positive"}
    index = {meaning[v]: k for k, v in id2label.items()}
    rows = sentiment_rows(90, seed=11)
    batch = tokenizer([t for t, _ in rows], padding=True, return_tensors="pt")
    model.eval()
    with torch.no_grad():
        body = model.bert(**batch)
        pooled = body.pooler_output
    y = torch.tensor([index[label] for _, label in rows])
    opt = torch.optim.Adam(model.classifier.parameters(), lr=0.05)
    for _ in range(150):
        loss = torch.nn.functional.cross_entropy(model.classifier(pooled), y)
        opt.zero_grad()
        loss.backward()
        opt.step()


def hf_cache_with(checkpoint_dir: Path, hf_home: Path, repo_id: str) -> Path:
    """A pre-filled Hugging Face cache (HF_HOME layout) holding `checkpoint_dir` as `repo_id`, as
    `huggingface-cli download` leaves it (files in the snapshot instead of symlinks to blobs)."""
    repo = hf_home / "hub" / ("models--" + repo_id.replace("/", "--"))
    commit = "0" * 40
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    shutil.copytree(checkpoint_dir, repo / "snapshots" / commit, dirs_exist_ok=True)
    return hf_home


def catalog_file(path: Path, entries: list[dict]) -> Path:
    path.write_text(json.dumps({"entries": entries}, indent=1))
    return path


def local_entry(entry_id: str, checkpoint: Path | str, labels: list[str], **extra) -> dict:
    return {"id": entry_id, "family": "hf", "task": "sentiment", "labels": labels, "languages": ["en"],
            "params_m": 22.7, "size_mb": 90, "license": "apache-2.0", "domain": "test checkpoint",
            "checkpoint": str(checkpoint), **extra}
