"""A frozen sentence encoder with a trainable linear head.

The encoder (default all-MiniLM-L6-v2, shipped in a wheel so it loads offline) is loaded once per
process and shared by every specialist and thread that names it; the head is a logistic regression
on normalised mean-pooled embeddings: seconds to train, so it can be retrained at every stage.

A head may read the last few layers, not just the last: each layer is mean-pooled and normalised, and
they are concatenated. MiniLM is tuned for sentence similarity, and its last layer alone serves a tone
classifier worse than the last three. One forward pass serves every depth.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.multiclass import OneVsRestClassifier
from transformers import AutoModel, AutoTokenizer

from backend.specialists import torch_runtime as rt
from backend.specialists.base import Specialist, pad_columns
from backend.specialists.fast_bert import FastBert
from backend.specialists.feature_store import runtime_store

_HEAD = "head.joblib"
_ENCODE_CHUNK = 8192


class SentenceEncoder:
    """Mean-pooled, L2-normalised embeddings; thread-safe; remembers its last batch for sibling heads."""

    def __init__(self, name_or_path: str, device: str = "auto", dtype: str = "auto", batch_size: int = 32,
                 max_length: int = 128, threads: int = 0):
        rt.configure_threads(threads)
        self.name = name_or_path
        self.device = rt.resolve_device(device)
        self.dtype = rt.resolve_dtype(dtype, self.device)
        self.batch_size = batch_size
        self.max_length = max_length
        self.tokenizer = rt.load_pretrained(AutoTokenizer.from_pretrained, name_or_path)
        self.model, self._fast = rt.on_torch_thread(self.device, self._load)
        self.dim = int(self.model.config.hidden_size)
        self._fresh_queue()
        # A forked child (a gunicorn worker of a preloaded app) runs no pass of its parent's, and a lock its
        # parent's pass held at the fork would stay held: it starts afresh.
        fresh = weakref.WeakMethod(self._fresh_queue)
        os.register_at_fork(after_in_child=lambda: (method := fresh()) is not None and method())
        self._last: tuple[tuple[str, ...], np.ndarray] | None = None
        self.passes = 0  # forward passes run (several waiting requests share one)

    def _load(self) -> tuple[torch.nn.Module, FastBert | None]:
        model = rt.load_pretrained(AutoModel.from_pretrained, self.name)
        model = model.to(device=self.device, dtype=self.dtype).eval()
        return model, FastBert.of(model)

    @property
    def depth(self) -> int:
        """How many layers a head can read (the transformer layers, not the word embeddings)."""
        return int(self.model.config.num_hidden_layers)

    def cache_space(self, layers: int = 1) -> str:
        """The embedding-cache namespace of this encoder at one depth (depth 1 keeps the key it always had)."""
        return f"{self.name}|{self.max_length}" + (f"|layers={layers}" if layers > 1 else "")

    def encode(self, texts: Sequence[str], layers: int = 1) -> np.ndarray:
        """(n, dim × layers): the last `layers` layers, each mean-pooled and L2-normalised, last layer first."""
        if not 1 <= layers <= self.depth:
            raise ValueError(f"layers must be between 1 and {self.depth} for {self.name}, not {layers}")
        if len(texts) > _ENCODE_CHUNK:  # bounded memory: every layer's pool is held for one chunk at a time
            return np.concatenate([self.encode(texts[i:i + _ENCODE_CHUNK], layers)
                                   for i in range(0, len(texts), _ENCODE_CHUNK)])
        pooled = self._pooled(texts)
        return np.ascontiguousarray(pooled[:, :layers].reshape(len(pooled), layers * self.dim))

    def _pooled(self, texts: Sequence[str]) -> np.ndarray:
        """(n, depth, dim) per-layer pools, last layer first; the last batch is kept for sibling heads.

        Passes run on the process's torch thread (`torch_runtime`). A request that finds no pass scheduled schedules
        one; the pass takes every request waiting by the time it starts, encodes them together and hands each its
        rows, then takes those that arrived meanwhile: under load a request of a few tweets rides in a batch of
        dozens, where a tweet costs less than in a batch of its own.
        """
        ask = _Ask(tuple(texts))
        with self._queue_lock:
            last = self._last
            if last is not None and last[0] == ask.texts:
                return last[1]
            self._asks.append(ask)
            schedule, self._scheduled = not self._scheduled, True
        if schedule:
            try:
                rt.start_on_torch_thread(self.device, self._passes)
            except BaseException:  # not scheduled (no thread could start): later requests must not wait on it
                with self._queue_lock:
                    self._asks = [a for a in self._asks if a is not ask]
                    self._scheduled = False
                raise
        ask.done.wait()
        if ask.error is not None:
            raise ask.error
        assert ask.out is not None
        return ask.out

    def _fresh_queue(self) -> None:
        self._queue_lock = threading.Lock()
        self._asks: list[_Ask] = []
        self._scheduled = False  # a pass is scheduled or running: it takes what is waiting

    def _passes(self) -> None:
        """On the torch thread: passes over the waiting requests until none is left."""
        while True:
            with self._queue_lock:
                if not self._asks:
                    self._scheduled = False
                    return
                take, size = [self._asks[0]], len(self._asks[0].texts)
                for other in self._asks[1:]:
                    if size + len(other.texts) <= _ENCODE_CHUNK:
                        take.append(other)
                        size += len(other.texts)
                self._asks = [a for a in self._asks if all(a is not t for t in take)]
            try:
                union = list(dict.fromkeys(t for a in take for t in a.texts))
                pooled = self._forward(union)
                row = {t: i for i, t in enumerate(union)}
                for a in take:
                    alone = len(take) == 1 and len(union) == len(a.texts)  # no other asks and no repeated text
                    a.out = pooled if alone else pooled[[row[t] for t in a.texts]]
                self.passes += 1
                with self._queue_lock:
                    self._last = (take[-1].texts, take[-1].out)
            except BaseException as exc:  # each waiting request gets the error; the next pass goes on
                for a in take:
                    a.error = exc
            finally:
                for a in take:
                    a.done.set()

    @torch.inference_mode()
    def _forward(self, texts: Sequence[str]) -> np.ndarray:
        enc = self.tokenizer(list(texts), truncation=True, max_length=self.max_length)
        ids = enc["input_ids"]
        out = np.zeros((len(ids), self.depth, self.dim), dtype=np.float32)
        if self._fast is not None:
            for idx, means in self._fast.mean_pooled(ids):
                out[idx] = torch.nn.functional.normalize(means.flip(1).float(), dim=-1).numpy()
            return out
        for idx in rt.length_sorted_batches([len(x) for x in ids], self.batch_size):
            batch = self.tokenizer.pad({"input_ids": [ids[i] for i in idx],
                                        "attention_mask": [enc["attention_mask"][i] for i in idx]},
                                       return_tensors="pt", pad_to_multiple_of=8)
            batch = {k: v.to(self.device) for k, v in batch.items()}
            hidden = self.model(**batch, output_hidden_states=True).hidden_states[1:][::-1]
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden[0].dtype)
            count = mask.sum(1).clamp(min=1)
            pooled = torch.stack([(h * mask).sum(1) / count for h in hidden], dim=1)
            pooled = torch.nn.functional.normalize(pooled.float(), dim=-1)
            out[idx] = pooled.cpu().numpy()
        return out


@dataclass(eq=False)
class _Ask:
    """One request's texts waiting for the encoder, and their rows once encoded."""

    texts: tuple[str, ...]
    out: np.ndarray | None = None
    error: BaseException | None = None
    done: threading.Event = field(default_factory=threading.Event)


_ENCODERS: dict[tuple[str, str, str], SentenceEncoder] = {}
_ENCODERS_LOCK = threading.Lock()


def shared_encoder(name_or_path: str, device: str = "auto", dtype: str = "auto",
                   batch_size: int = 32, threads: int = 0) -> SentenceEncoder:
    """One encoder per (model, device, dtype) per process, however many specialists use it."""
    key = (name_or_path, device, dtype)
    with _ENCODERS_LOCK:
        if key not in _ENCODERS:
            _ENCODERS[key] = SentenceEncoder(name_or_path, device, dtype, batch_size, threads=threads)
        return _ENCODERS[key]


def default_encoder_name(configured: str = "") -> str:
    if configured:
        return configured
    path = rt.shipped_minilm_path()
    if path is None:
        return "sentence-transformers/all-MiniLM-L6-v2"
    return str(path)


class EncoderSpecialist(Specialist):
    """params: encoder (hub id or path; default the shipped MiniLM), C, layers (how many of the last layers the
    head reads; 1 when absent, which is what heads saved before the option were trained on)."""

    family = "encoder"

    def __init__(self, name: str, labels: Sequence[str], multiple: bool, params: dict[str, Any] | None = None,
                 **runtime: Any):
        super().__init__(name, labels, multiple, params, **runtime)
        # "" means the deployment's default encoder, resolved where it runs (paths differ per machine).
        self.params.setdefault("encoder", "")
        self._encoder: SentenceEncoder | None = None

    @property
    def encoder_name(self) -> str:
        return self.params["encoder"] or default_encoder_name(self.runtime.get("default_encoder", ""))

    @property
    def layers(self) -> int:
        return int(self.params.get("layers", 1))

    @property
    def encoder(self) -> SentenceEncoder:
        if self._encoder is None:
            self._encoder = shared_encoder(
                self.encoder_name,
                self.runtime.get("device", "auto"),
                self.runtime.get("dtype", "auto"),
                int(self.runtime.get("batch_size", 32)),
                int(self.runtime.get("torch_threads", 0)),
            )
        return self._encoder

    def embeddings(self, texts: Sequence[str]) -> np.ndarray:
        """The layers the head reads, through the feature store when the runtime has one: a text the store holds
        (replayed in training, re-predicted after a promotion) is never encoded again."""
        enc, layers = self.encoder, self.layers
        store = runtime_store(self.runtime)
        if store is None:
            return enc.encode(texts, layers)
        return store.dense(enc.cache_space(layers), enc.dim * layers, texts, lambda part: enc.encode(part, layers))

    def fit(self, texts: Sequence[str], y: np.ndarray, sample_weight: np.ndarray | None = None) -> None:
        x = self.embeddings(texts)
        clf = LogisticRegression(C=float(self.params.get("C", 2.0)), max_iter=3000)
        if self.multiple:
            self.head = OneVsRestClassifier(clf).fit(x, np.asarray(y))
        else:
            self.head = clf.fit(x, np.asarray(y), sample_weight=sample_weight)

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        proba = self.head.predict_proba(self.embeddings(texts))
        if self.multiple:
            return np.asarray(proba, dtype=np.float64)
        return pad_columns(proba, self.head.classes_, len(self.labels))

    def _save_weights(self, path: Path) -> None:
        joblib.dump(self.head, path / _HEAD)
        # The encoder's identity is part of the version: the same head on another encoder is another model.
        (path / "encoder.txt").write_text(self.params["encoder"] or "default")

    def _load_weights(self, path: Path) -> None:
        self.head = joblib.load(path / _HEAD)
