"""Any Hugging Face sequence-classification checkpoint, by hub id or local path.

The checkpoint's own labels are mapped onto the project's choices (see `labelmap`); when it is
fine-tuned on project data its head is replaced by one over exactly the project's choices, and the
saved specialist is then a self-contained checkpoint directory.
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from backend.specialists import torch_runtime as rt
from backend.specialists.base import Specialist, one_hot
from backend.specialists.encoder import default_encoder_name
from backend.specialists.labelmap import map_labels

_CKPT = "checkpoint"


class _Encodings:
    """The last few tokenisations, shared by specialists whose tokenizers are the same (the same vocabulary and
    rules, whatever checkpoint they came with): an ensemble of three fine-tuned copies of one base model tokenises
    each request once, not three times. The first caller tokenises; callers with the same key wait for it."""

    def __init__(self, size: int = 4):
        self.size = size
        self._lock = threading.Lock()
        self._entries: dict[tuple[Any, ...], tuple[threading.Lock, list[Any]]] = {}

    @staticmethod
    def _tokenizer_key(tokenizer: Any) -> str:
        key = getattr(tokenizer, "_autoannotator_key", None)
        if key is None:
            backend = getattr(tokenizer, "backend_tokenizer", None)
            key = hashlib.sha1(backend.to_str().encode()).hexdigest() if backend is not None else f"id{id(tokenizer)}"
            tokenizer._autoannotator_key = key
        return key

    def get(self, tokenizer: Any, texts: Sequence[str], max_len: int) -> Any:
        key = (self._tokenizer_key(tokenizer), max_len, len(texts), hash(tuple(texts)))
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                entry = self._entries[key] = (threading.Lock(), [])
                while len(self._entries) > self.size:
                    self._entries.pop(next(iter(self._entries)))
        lock, slot = entry
        with lock:
            if not slot:
                slot.append(tokenizer(list(texts), truncation=True, max_length=max_len))
            return slot[0]


_encodings = _Encodings()


class HFClassifierSpecialist(Specialist):
    """params: checkpoint (empty: the default encoder, fine-tuned), label_map {model label: project choice},
    mode head|full, lr, epochs, train_batch_size, max_length."""

    family = "hf"

    def __init__(self, name: str, labels: Sequence[str], multiple: bool, params: dict[str, Any] | None = None,
                 **runtime: Any):
        super().__init__(name, labels, multiple, params, **runtime)
        self._lock = threading.Lock()
        # No checkpoint: the default encoder's body (DEFAULT_ENCODER, else the shipped MiniLM) under a new head, to
        # be fine-tuned; a recipe that says "" stays portable between machines.
        configured = self.params.get("checkpoint") or default_encoder_name(self.runtime.get("default_encoder", ""))
        self._source = str(configured)
        self.model = None

    # -- loading -------------------------------------------------------------------------------
    def _ensure_loaded(self, need_projection: bool = True) -> None:
        """Load weights on first use; the label projection is only required to predict, not to train."""
        if self.model is not None:
            if need_projection and getattr(self, "projection", None) is None:
                self._build_projection()
            return
        rt.configure_threads(int(self.runtime.get("torch_threads", 0)))
        self.device = rt.resolve_device(self.runtime.get("device", "auto"))
        self.dtype = rt.resolve_dtype(self.runtime.get("dtype", "auto"), self.device)
        self.tokenizer = rt.load_pretrained(AutoTokenizer.from_pretrained, self._source)
        model = rt.load_pretrained(AutoModelForSequenceClassification.from_pretrained, self._source)
        self.model = model.to(self.device).eval()
        self.projection = None
        if need_projection:
            self._build_projection()

    def _build_projection(self) -> None:
        id2label = {int(k): v for k, v in self.model.config.id2label.items()}
        mapping, missing = map_labels(id2label, self.labels, self.params.get("label_map"))
        if missing:
            raise ValueError(
                f"checkpoint {self._source!r} has labels {sorted(id2label.values())}, which cover no "
                f"{missing} of the project's choices; set params.label_map or fine-tune it on project data"
            )
        proj = np.zeros((len(id2label), len(self.labels)), dtype=np.float64)
        for i, j in mapping.items():
            proj[i, j] = 1.0
        self.projection = proj

    def _torch_device(self) -> torch.device:
        return rt.resolve_device(self.runtime.get("device", "auto"))

    # -- inference -----------------------------------------------------------------------------
    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        return rt.on_torch_thread(self._torch_device(), self._predict_proba, texts)

    @torch.inference_mode()
    def _predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        with self._lock:
            self._ensure_loaded()
            if self.model.dtype != self.dtype:
                self.model.to(self.dtype)
            max_len = int(self.params.get("max_length", 128))
            enc = _encodings.get(self.tokenizer, texts, max_len)
            ids = enc["input_ids"]
            raw = np.zeros((len(ids), self.projection.shape[0]), dtype=np.float64)
            order, parts = [], []
            gpu = self.device.type == "cuda"
            if gpu and getattr(self, "_stream", None) is None:
                self._stream = torch.cuda.Stream(self.device)  # its own queue: runs beside other specialists
            with torch.cuda.stream(self._stream) if gpu else contextlib.nullcontext():
                for idx in rt.length_sorted_batches([len(x) for x in ids], int(self.runtime.get("batch_size", 32))):
                    batch = rt.pad_batch(enc, idx, self.tokenizer.pad_token_id or 0,
                                         getattr(self.tokenizer, "padding_side", "right") == "left")
                    # Pinned host memory makes the copy truly asynchronous: the next batch is padded meanwhile.
                    inputs = {k: (v.pin_memory() if gpu else v).to(self.device, non_blocking=True)
                              for k, v in batch.items()}
                    logits = self.model(**inputs).logits
                    p = torch.sigmoid(logits.float()) if self.multiple else torch.softmax(logits.float(), dim=-1)
                    order.append(idx)
                    parts.append(p)  # left on the device: one copy back at the end, no sync per batch on a GPU
                if parts:
                    raw[np.concatenate(order)] = torch.cat(parts).cpu().numpy()
        out = raw @ self.projection
        if not self.multiple:
            sums = out.sum(axis=1, keepdims=True)
            out = np.where(sums > 0, out / np.where(sums > 0, sums, 1), 1.0 / len(self.labels))
        return np.clip(out, 0.0, 1.0)

    # -- training ------------------------------------------------------------------------------
    def fit(self, texts: Sequence[str], y: np.ndarray, sample_weight: np.ndarray | None = None) -> None:
        rt.on_torch_thread(self._torch_device(), self._fit, texts, y, sample_weight)

    def _fit(self, texts: Sequence[str], y: np.ndarray, sample_weight: np.ndarray | None) -> None:
        with self._lock:
            self._ensure_loaded(need_projection=False)
            k = len(self.labels)
            head_labels = [self.model.config.id2label.get(i) for i in range(k)]
            if head_labels != self.labels or self.model.config.num_labels != k:
                # A head over exactly the project's choices; the encoder body keeps its pretrained weights.
                model = AutoModelForSequenceClassification.from_pretrained(
                    self._source, num_labels=k, id2label=dict(enumerate(self.labels)),
                    label2id={x: i for i, x in enumerate(self.labels)}, ignore_mismatched_sizes=True,
                    problem_type="multi_label_classification" if self.multiple else "single_label_classification",
                )
                _init_head_from_mapping(self.model, model, self._old_head_mapping())
                self.model = model.to(self.device)
                self.params.pop("label_map", None)
            self.model.to(torch.float32).train()
            full = self.params.get("mode", "full") == "full"
            base = getattr(self.model, self.model.base_model_prefix, None)
            if base is not None:
                for p in base.parameters():
                    p.requires_grad = full
            params = [p for p in self.model.parameters() if p.requires_grad]
            opt = torch.optim.AdamW(params, lr=float(self.params.get("lr", 5e-5 if full else 1e-3)))
            targets = torch.tensor(one_hot(y, k))
            weights = (torch.ones(len(texts)) if sample_weight is None
                       else torch.tensor(np.asarray(sample_weight), dtype=torch.float32))
            bs = int(self.params.get("train_batch_size", 16))
            seed = int(self.params.get("seed", 0))
            enc = self.tokenizer(list(texts), truncation=True, max_length=int(self.params.get("max_length", 128)))
            lengths = [len(x) for x in enc["input_ids"]]
            pad_id = self.tokenizer.pad_token_id or 0
            left = getattr(self.tokenizer, "padding_side", "right") == "left"
            # bf16 autocast where the hardware has it (fp32 master weights), and length-pooled batches (little
            # padding): fine-tuning on a CPU is the slow part of a stage.
            mixed = self.dtype == torch.bfloat16
            for epoch in range(int(self.params.get("epochs", 2))):
                for idx in rt.shuffled_length_batches(lengths, bs, seed + epoch):
                    batch = {key: v.to(self.device) for key, v in rt.pad_batch(enc, idx, pad_id, left).items()}
                    with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=mixed):
                        logits = self.model(**batch).logits.float()
                    t, w = targets[idx].to(self.device), weights[idx].to(self.device)
                    if self.multiple:
                        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, t, reduction="none").mean(1)
                    else:
                        loss = torch.nn.functional.cross_entropy(logits, t.argmax(1), reduction="none")
                    loss = (loss * w).sum() / w.sum()
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
            self.model.eval()
            # Predicting casts the weights to bf16 in place; the saved checkpoint keeps the trained fp32 ones, so
            # the next stage continues from them, not from a rounded copy.
            self._trained = {key: v.detach().clone() for key, v in self.model.state_dict().items()}
            self._build_projection()

    def _old_head_mapping(self) -> dict[int, int]:
        """{checkpoint label index: choice index} by name, synonym or label_map; empty when nothing maps."""
        id2label = {int(i): v for i, v in self.model.config.id2label.items()}
        try:
            mapping, _ = map_labels(id2label, self.labels, self.params.get("label_map"))
        except ValueError:
            return {}
        return mapping

    # -- persistence ---------------------------------------------------------------------------
    def _save_weights(self, path: Path) -> None:
        rt.on_torch_thread(self._torch_device(), self._save_checkpoint, path)

    def _save_checkpoint(self, path: Path) -> None:
        self._ensure_loaded(need_projection=False)
        target = path / _CKPT
        self.model.to(torch.float32)
        trained = getattr(self, "_trained", None)
        if trained is not None:
            self.model.load_state_dict(trained)
        self.model.save_pretrained(target)
        self.tokenizer.save_pretrained(target)

    def _load_weights(self, path: Path) -> None:
        if (path / _CKPT / "config.json").exists():
            self._source = str(path / _CKPT)
        # Weights load lazily on first use so that listing or /setup never pays for them.


@torch.no_grad()
def _init_head_from_mapping(old: Any, new: Any, mapping: dict[int, int]) -> None:
    """Start each row of the new output layer from the old rows that map onto its choice (averaged), so a
    checkpoint whose labels map onto the project's (a planned one) is fine-tuned from its zero-shot behaviour
    rather than from a random head. Choices nothing maps to keep their fresh initialisation."""
    if not mapping:
        return
    old_state = old.state_dict()
    n_old, k = old.config.num_labels, new.config.num_labels
    body = new.base_model_prefix + "."
    for name, weight in new.state_dict().items():  # tensors share storage with the parameters
        prev = old_state.get(name)
        # Only the head's output rows: outside the encoder body, one row per label in both models.
        if name.startswith(body) or prev is None or prev.shape[0] != n_old or weight.shape[0] != k \
                or prev.shape[1:] != weight.shape[1:]:
            continue
        for j in range(k):
            rows = [i for i, target in mapping.items() if target == j]
            if rows:
                weight[j] = prev[rows].to(weight.device, weight.dtype).mean(0)
