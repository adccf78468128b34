"""Each specialist family trained, saved, loaded in a fresh object, and asked again: same answers."""

from __future__ import annotations

import numpy as np
import pytest

from backend.datasets import load_labelled
from backend.specialists import registry
from backend.specialists.torch_runtime import CheckpointUnavailable, shuffled_length_batches
from finetune.training import encode_targets
from tests.conftest import ROOT, SENTIMENT, forked_exit_code

LABELS = ["Positive", "Negative", "Neutral"]


@pytest.fixture(scope="module")
def sample():
    data = load_labelled(SENTIMENT)
    y = encode_targets(data, LABELS, False)
    return data.texts[:600], y[:600], data.texts[600:800], y[600:800]


@pytest.mark.parametrize("params", [{"classifier": "lr"}, {"classifier": "nb"}])
def test_tfidf_round_trip(tmp_path, sample, params):
    xtr, ytr, xte, yte = sample
    sp = registry.create("tfidf", "t", LABELS, False, params)
    sp.fit(xtr, ytr)
    p = sp.predict_proba(xte)
    assert p.shape == (len(xte), 3)
    np.testing.assert_allclose(p.sum(1), 1, atol=1e-6)
    assert (p.argmax(1) == yte).mean() > 0.45  # well above chance (0.33) on 600 tweets
    version = sp.save(tmp_path / "t")
    again = registry.load(tmp_path / "t")
    assert again.version == version and version.startswith("tfidf-")
    np.testing.assert_allclose(again.predict_proba(xte), p)


def test_hashed_tfidf_is_what_a_fitted_vocabulary_gives(sample):
    """Hashing replaces the fitted vocabulary: the same columns (min_df, max_features), idf and rows."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    xtr, _, xte, _ = sample
    sp = registry.create("tfidf", "t", LABELS, False)
    _, char, min_df, max_features = sp._analyzers()[1]
    from backend.specialists.tfidf import HashedTfidf

    hashed = HashedTfidf([(min_df, max_features)]).fit(char.transform(xtr))
    fitted = TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True, min_df=2,
                             max_features=200_000, lowercase=True).fit(xtr)
    # Rare n-grams sharing a bucket may pass min_df together: a few columns in a thousand.
    assert abs(len(hashed.columns) - len(fitted.vocabulary_)) <= 0.01 * len(fitted.vocabulary_)
    a, b = hashed.transform(char.transform(xte)), fitted.transform(xte)
    # Row by row, the same values up to column order, hash collisions aside.
    same = [a[i].nnz == b[i].nnz and np.allclose(np.sort(a[i].data), np.sort(b[i].data), rtol=0.01)
            for i in range(a.shape[0])]
    assert np.mean(same) >= 0.95


def test_tfidf_reads_known_texts_from_the_feature_store(tmp_path, sample, monkeypatch):
    xtr, ytr, xte, _ = sample
    runtime = {"cache_dir": str(tmp_path / "cache")}
    sp = registry.create("tfidf", "t", LABELS, False, {}, **runtime)
    sp.fit(xtr, ytr)
    first = sp.predict_proba(xte)
    refit = registry.create("tfidf", "t2", LABELS, False, {"C": 1.0}, **runtime)  # a later stage's specialist

    def counted(self, texts):
        raise AssertionError("a known text was counted again")

    from sklearn.feature_extraction.text import HashingVectorizer

    monkeypatch.setattr(HashingVectorizer, "transform", counted)
    refit.fit(xtr, ytr)  # replayed texts: read back
    assert refit.predict_proba(xte).shape == first.shape
    np.testing.assert_allclose(sp.predict_proba(xte), first)


def test_a_tfidf_bundle_saved_with_a_fitted_vocabulary_still_serves(tmp_path, sample):
    import joblib
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline

    xtr, ytr, xte, _ = sample
    sp = registry.create("tfidf", "t", LABELS, False)
    sp.fit(xtr, ytr)
    sp.save(tmp_path / "t")
    old = Pipeline([("features", TfidfVectorizer()), ("clf", LogisticRegression(max_iter=500))]).fit(xtr, ytr)
    (tmp_path / "t" / "tfidf.joblib").unlink()
    joblib.dump(old, tmp_path / "t" / "pipeline.joblib")
    again = registry.load(tmp_path / "t")
    np.testing.assert_allclose(again.predict_proba(xte), old.predict_proba(xte))


def test_tfidf_multi_label(tmp_path):
    from tests.conftest import topic_rows

    rows = topic_rows(200)
    labels = ["Sports", "Politics", "Tech"]
    y = np.array([[int(x in r["label"]) for x in labels] for r in rows])
    sp = registry.create("tfidf", "m", labels, True)
    sp.fit([r["text"] for r in rows], y)
    p = sp.predict_proba(["the coach said the team will score a goal", "new phone chip from a startup"])
    assert p[0].argmax() == 0 and p[1].argmax() == 2
    assert p.shape == (2, 3)


def test_encoder_specialist_uses_one_shared_encoder(tmp_path, sample):
    xtr, ytr, xte, yte = sample
    a = registry.create("encoder", "a", LABELS, False)
    b = registry.create("encoder", "b", LABELS, False, {"C": 0.5})
    a.fit(xtr, ytr)
    b.fit(xtr, ytr)
    assert a.encoder is b.encoder  # loaded once per process
    p = a.predict_proba(xte)
    assert (p.argmax(1) == yte).mean() > 0.5
    a.save(tmp_path / "a")
    again = registry.load(tmp_path / "a")
    assert again.params["encoder"] == ""  # machine-independent: the deployment's default encoder
    np.testing.assert_allclose(again.predict_proba(xte), p, atol=1e-6)


def test_encoder_heads_read_the_last_layers_from_one_pass(tmp_path, sample):
    xtr, ytr, xte, yte = sample
    one = registry.create("encoder", "one", LABELS, False)
    three = registry.create("encoder", "three", LABELS, False, {"layers": 3})
    enc = three.encoder
    last = enc.encode(xte[:5])
    deep = enc.encode(xte[:5], 3)
    assert last.shape == (5, enc.dim) and deep.shape == (5, 3 * enc.dim)
    np.testing.assert_allclose(deep[:, :enc.dim], last, atol=1e-6)  # the last layer comes first
    np.testing.assert_allclose(np.linalg.norm(deep.reshape(5, 3, enc.dim), axis=-1), 1, atol=1e-5)
    assert not np.allclose(deep[:, enc.dim:2 * enc.dim], last)  # and the layers below differ from it
    with pytest.raises(ValueError, match="layers must be between 1 and 6"):
        enc.encode(xte[:2], 7)
    # A head saved before the option (no "layers") reads the last layer, as it was trained to.
    assert one.layers == 1 and "layers" not in one.params
    three.fit(xtr, ytr)
    assert three.head.coef_.shape[1] == 3 * enc.dim
    p = three.predict_proba(xte)
    assert (p.argmax(1) == yte).mean() > 0.5
    three.save(tmp_path / "three")
    again = registry.load(tmp_path / "three")
    assert again.layers == 3
    np.testing.assert_allclose(again.predict_proba(xte), p, atol=1e-6)


def test_encoder_cache_keeps_each_depth_apart(tmp_path, sample):
    xtr, ytr, _, _ = sample
    runtime = {"cache_dir": str(tmp_path / "cache")}
    for layers in (1, 3):
        sp = registry.create("encoder", f"d{layers}", LABELS, False, {"layers": layers}, **runtime)
        sp.fit(xtr[:40], ytr[:40])
        assert sp.head.coef_.shape[1] == layers * sp.encoder.dim
    # Read back from the cache at both depths: no vector of one depth is served for the other.
    for layers in (1, 3):
        sp = registry.create("encoder", "c", LABELS, False, {"layers": layers}, **runtime)
        cached = sp.embeddings(xtr[:40])
        assert cached.shape == (40, layers * sp.encoder.dim)
        np.testing.assert_allclose(cached, sp.encoder.encode(xtr[:40], layers), atol=1e-5)


def test_hf_checkpoint_labels_are_mapped_onto_project_choices(minilm_classifier_dir, sample):
    _, _, xte, _ = sample
    sp = registry.create("hf", "h", LABELS, False, {"checkpoint": str(minilm_classifier_dir)}, dtype="float32")
    p = sp.predict_proba(xte[:20])
    assert p.shape == (20, 3)
    np.testing.assert_allclose(p.sum(1), 1, atol=1e-5)
    # the projection follows id2label {NEG, NEU, POS} → (Positive, Negative, Neutral)
    assert sp.projection.tolist() == [[0, 1, 0], [0, 0, 1], [1, 0, 0]]


def test_hf_override_and_unmappable_labels(minilm_classifier_dir):
    sp = registry.create("hf", "h", ["Bullish", "Bearish", "Flat"], False,
                         {"checkpoint": str(minilm_classifier_dir), "label_map": {"NEU": "Flat"}})
    assert sp.predict_proba(["stocks up"]).shape == (1, 3)
    bad = registry.create("hf", "h", ["Spam", "Ham"], False, {"checkpoint": str(minilm_classifier_dir)})
    with pytest.raises(ValueError, match="cover no"):
        bad.predict_proba(["x"])


def test_hf_fine_tune_replaces_head_and_round_trips(tmp_path, minilm_classifier_dir):
    from tests.conftest import topic_rows

    labels = ["Sports", "Politics", "Tech"]  # nothing maps from NEG/NEU/POS: training installs a new head
    rows = [r for r in topic_rows(260, seed=3) if len(r["label"]) == 1]
    texts = [r["text"] for r in rows]
    y = np.array([labels.index(r["label"][0]) for r in rows])
    sp = registry.create("hf", "h", labels, False,
                         {"checkpoint": str(minilm_classifier_dir), "mode": "full", "epochs": 3, "lr": 1e-4},
                         dtype="float32")
    sp.fit(texts[:120], y[:120])
    p = sp.predict_proba(texts[120:])
    assert (p.argmax(1) == y[120:]).mean() > 0.8
    assert sp.model.config.id2label == {0: "Sports", 1: "Politics", 2: "Tech"}
    version = sp.save(tmp_path / "h")
    again = registry.load(tmp_path / "h", dtype="float32")
    assert again.version == version
    np.testing.assert_allclose(again.predict_proba(texts[120:]), p, atol=1e-4)


def test_training_batches_cover_every_row_once_and_pool_similar_lengths():
    lengths = np.random.default_rng(0).integers(1, 60, size=1000)
    batches = shuffled_length_batches(lengths, 16, seed=3)
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == list(range(1000)) and all(len(b) <= 16 for b in batches)
    assert all((np.diff(lengths[b]) >= 0).all() for b in batches)  # sorted within its pool
    # Padding to each batch's longest row wastes far less than random batches would.
    waste = sum(int(lengths[b].max()) * len(b) - int(lengths[b].sum()) for b in batches)
    rand = np.random.default_rng(3).permutation(1000)
    random_waste = sum(int(lengths[b].max()) * len(b) - int(lengths[b].sum())
                       for b in (rand[i:i + 16] for i in range(0, 1000, 16)))
    assert waste < random_waste / 4
    assert [b.tolist() for b in batches] == [b.tolist() for b in shuffled_length_batches(lengths, 16, seed=3)]
    assert [b.tolist() for b in batches] != [b.tolist() for b in shuffled_length_batches(lengths, 16, seed=4)]


def test_hf_bf16_training_saves_the_trained_fp32_weights_after_predicting(tmp_path, minilm_classifier_dir):
    import torch
    from safetensors.torch import load_file

    from tests.conftest import topic_rows

    labels = ["Sports", "Politics", "Tech"]
    rows = [r for r in topic_rows(260, seed=3) if len(r["label"]) == 1]
    texts = [r["text"] for r in rows]
    y = np.array([labels.index(r["label"][0]) for r in rows])
    sp = registry.create("hf", "h", labels, False, {"checkpoint": str(minilm_classifier_dir), "mode": "full",
                                                    "epochs": 3, "lr": 1e-4}, dtype="bfloat16")
    sp.fit(texts[:120], y[:120])  # bf16 autocast over fp32 weights
    assert all(v.dtype == torch.float32 for v in sp._trained.values() if v.is_floating_point())
    p = sp.predict_proba(texts[120:])  # runs in bf16: the weights are cast in place
    assert sp.model.dtype == torch.bfloat16 and (p.argmax(1) == y[120:]).mean() > 0.8
    sp.save(tmp_path / "h")
    saved = load_file(str(tmp_path / "h" / "checkpoint" / "model.safetensors"))
    for name, tensor in saved.items():
        assert tensor.dtype == torch.float32
        assert torch.equal(tensor, sp._trained[name]), name  # not the bf16-rounded copy


def test_hf_without_a_checkpoint_fine_tunes_the_default_encoder(tmp_path):
    import json

    from backend.specialists.encoder import default_encoder_name

    assert registry.create("hf", "h", LABELS, False, {"checkpoint": ""})._source == default_encoder_name()
    assert registry.create("hf", "h", LABELS, False, {}, default_encoder="/models/mine")._source == "/models/mine"
    recipe = json.loads((ROOT / "samples" / "specialists-finetuned.json").read_text())
    tuned = [s for s in recipe if s["family"] == "hf"]
    assert tuned and all(s["params"]["checkpoint"] == "" and s["params"]["mode"] == "full" for s in tuned)


def test_unavailable_checkpoint_says_how_to_get_it_offline():
    sp = registry.create("hf", "h", LABELS, False, {"checkpoint": "no-such-org/no-such-model"})
    with pytest.raises(CheckpointUnavailable, match=r"(?s)no-such-org/no-such-model.*local directory"):
        sp.predict_proba(["x"])


def test_unknown_family_is_named():
    with pytest.raises(ValueError, match="unknown specialist family 'svm'"):
        registry.create("svm", "x", LABELS, False)


def test_specialists_with_one_tokenizer_tokenise_a_request_once(minilm_classifier_dir, monkeypatch):
    """Three fine-tuned copies of one base model: the request is tokenised once (on a GPU this doubled the rate,
    docs/benchmarks.md), and each still gets exactly its own answers."""
    from backend.specialists import hf

    make = lambda name: registry.create("hf", name, LABELS, False,  # noqa: E731
                                        {"checkpoint": str(minilm_classifier_dir)}, dtype="float32")
    a, b = make("a"), make("b")
    a._ensure_loaded()
    b._ensure_loaded()
    assert a.tokenizer is not b.tokenizer  # two loads of the same files
    kind = type(a.tokenizer)
    calls = []
    real = kind.__call__

    def counted(self, *args, **kw):
        calls.append(len(args[0]))
        return real(self, *args, **kw)

    monkeypatch.setattr(kind, "__call__", counted)
    hf._encodings.__init__()
    texts = ["what a lovely day", "this is awful", "the bus leaves at nine"]
    pa, pb = a.predict_proba(texts), b.predict_proba(texts)
    assert calls == [3]
    np.testing.assert_allclose(pa, pb, atol=1e-6)  # same checkpoint, same answers
    a.predict_proba(["another request"])
    assert calls == [3, 1]


def test_requests_waiting_for_the_encoder_share_one_pass(sample):
    """Requests that arrive while the encoder is busy are encoded together in its next pass, and each gets exactly
    the rows of its own texts (repeats included), as it would alone; a failed pass fails its requests only."""
    import os
    import threading

    from backend.specialists.encoder import SentenceEncoder, default_encoder_name

    _, _, xte, _ = sample
    enc = SentenceEncoder(default_encoder_name(), dtype="float32")
    asks = [xte[i * 5:i * 5 + 5] for i in range(6)] + [[xte[0], xte[0], xte[40]]]
    alone = [enc.encode(a, 2) for a in asks]
    enc._last = None
    forward, entered, gate = enc._forward, threading.Event(), threading.Event()

    def busy(texts):  # the first pass is slow: everything asked meanwhile waits for the next
        entered.set()
        gate.wait(60)
        return forward(texts)

    enc._forward = busy
    results: dict[int, np.ndarray] = {}
    threads = [threading.Thread(target=lambda i=i: results.__setitem__(i, enc.encode(asks[i], 2)))
               for i in range(len(asks))]
    before = enc.passes
    threads[0].start()
    assert entered.wait(60)  # the encoder is busy with the first request
    for t in threads[1:]:
        t.start()
    while len(enc._asks) < len(asks) - 1:
        threading.Event().wait(0.01)
    gate.set()
    for t in threads:
        t.join(60)
    assert enc.passes - before == 2  # the first request, then the six that waited, together
    for i in range(len(asks)):
        np.testing.assert_allclose(results[i], alone[i], atol=1e-5)

    def broken(texts):
        raise RuntimeError("out of memory")

    enc._forward = broken
    with pytest.raises(RuntimeError, match="out of memory"):
        enc.encode(["a text never seen"], 2)
    enc._forward = forward
    np.testing.assert_allclose(enc.encode(asks[0], 2), alone[0], atol=1e-5)  # the encoder still serves

    # A forked child (a gunicorn worker of a preloaded app) runs passes of its own.
    child = os.fork()
    if child == 0:
        try:
            os._exit(0 if np.allclose(enc.encode(asks[1], 2), alone[1], atol=1e-5) else 1)
        finally:
            os._exit(2)
    assert forked_exit_code(child) == 0


def test_torch_work_runs_on_one_thread(monkeypatch):
    """The encoder is loaded and run on the process's one torch thread, whatever thread asks: a thread that runs
    torch's parallel CPU operations keeps an OpenMP team for life, and more teams than cores made every operation
    wake its threads (2× per tweet on 2 cores). A call made on that thread runs inline; errors reach the caller; a
    GPU model is not funnelled; a forked child gets its own thread."""
    import os
    import threading

    import torch

    from backend.specialists import torch_runtime as rt
    from backend.specialists.encoder import SentenceEncoder, default_encoder_name

    seen: dict[str, set[int]] = {"load": set(), "forward": set()}
    load, forward = SentenceEncoder._load, SentenceEncoder._forward

    def loading(self):
        seen["load"].add(threading.get_ident())
        return load(self)

    def forwarding(self, texts):
        seen["forward"].add(threading.get_ident())
        return forward(self, texts)

    monkeypatch.setattr(SentenceEncoder, "_load", loading)
    monkeypatch.setattr(SentenceEncoder, "_forward", forwarding)
    enc = SentenceEncoder(default_encoder_name(), dtype="float32")
    askers = [threading.Thread(target=enc.encode, args=([f"text number {i}"],)) for i in range(4)]
    for t in askers:
        t.start()
    for t in askers:
        t.join(60)
    enc.encode(["one more from the main thread"])
    assert len(seen["load"]) == 1 and seen["load"] == seen["forward"]
    (torch_thread,) = seen["load"]
    assert torch_thread not in {threading.get_ident(), *(t.ident for t in askers)}

    def ended(device, fn):
        raise RuntimeError("can't start new thread")

    with monkeypatch.context() as m:  # a pass that could not be scheduled leaves no request waiting on it
        m.setattr(rt, "start_on_torch_thread", ended)
        with pytest.raises(RuntimeError, match="start new thread"):
            enc.encode(["never scheduled"])
    assert enc.encode(["scheduled after all"]).shape == (1, enc.dim)

    cpu = torch.device("cpu")
    inner = rt.on_torch_thread(cpu, lambda: rt.on_torch_thread(cpu, threading.get_ident))  # no deadlock
    assert inner == torch_thread

    def fails():
        raise ValueError("bad batch")

    with pytest.raises(ValueError, match="bad batch"):
        rt.on_torch_thread(cpu, fails)
    assert rt.on_torch_thread(torch.device("cuda"), threading.get_ident) == threading.get_ident()

    child = os.fork()
    if child == 0:
        try:
            os._exit(0 if rt.on_torch_thread(cpu, threading.get_ident) != threading.get_ident() else 1)
        finally:
            os._exit(2)
    assert forked_exit_code(child) == 0  # None: it hung calling the torch thread


def test_torch_loads_with_a_short_openmp_spin():
    """torch is first imported under backend.specialists, which sets libgomp's spin before torch loads it (a
    GOMP_SPINCOUNT of the operator's own is kept)."""
    import subprocess
    import sys

    code = ("import os, sys, backend.specialists.encoder; "
            "print('torch' in sys.modules, os.environ.get('GOMP_SPINCOUNT'))")
    for env, want in (({}, "20000"), ({"GOMP_SPINCOUNT": "500"}, "500")):
        out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True,
                             env={"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1", **env})
        assert out.stdout.split() == ["True", want]


def _minilm(dtype):
    import torch
    from transformers import AutoModel

    from backend.specialists import torch_runtime as rt
    from backend.specialists.encoder import default_encoder_name

    cpu = torch.device("cpu")
    return rt.on_torch_thread(cpu, lambda: AutoModel.from_pretrained(default_encoder_name()).to(dtype=dtype).eval())


@pytest.mark.parametrize("dtype_name", ["float32", "bfloat16"])
def test_fast_bert_gives_the_layers_transformers_gives(dtype_name, monkeypatch):
    """The written-out BERT pass (fused QKV, weights packed for oneDNN in bf16) against `transformers`' own on a
    padded batch: the same hidden states at every real token with the texts end to end, and the same means per text
    in both layouts (end to end, padded batches), to the dtype's rounding."""
    import torch
    from transformers import AutoTokenizer

    from backend.specialists import fast_bert
    from backend.specialists import torch_runtime as rt
    from backend.specialists.encoder import default_encoder_name
    from backend.specialists.fast_bert import FastBert

    dtype = getattr(torch, dtype_name)
    model = _minilm(dtype)
    fast = rt.on_torch_thread(torch.device("cpu"), FastBert.of, model)
    assert fast is not None
    monkeypatch.setattr(fast_bert, "_PACK_TOKENS", 40)  # several packs, the longest text alone in one
    tok = AutoTokenizer.from_pretrained(default_encoder_name())
    texts = ["ok", "@user the new update is 🔥🔥 but the battery... not so much #fail", "no", "yes",
             "Ünïcödé, ñ and 漢字 mixed in", "word " * 300, "ok"]  # "word " * 300 is truncated at 128 tokens
    ids = tok(texts, truncation=True, max_length=128)["input_ids"]
    batch = tok.pad({"input_ids": ids}, return_tensors="pt")

    def both():
        with torch.inference_mode():
            theirs = model(**batch, output_hidden_states=True).hidden_states[1:]
            fast.padded = False  # texts end to end (fp32), whatever this CPU runs
            packed = list(fast.mean_pooled(ids))
            fast.padded = True  # padded batches (where oneDNN's bf16 kernels run)
            return theirs, fast.hidden_states(ids), packed, list(fast.mean_pooled(ids))

    theirs, ours, packed, padded = rt.on_torch_thread(torch.device("cpu"), both)
    assert len(ours) == len(theirs) == model.config.num_hidden_layers
    real = batch["attention_mask"].bool()
    tolerance = 1e-4 if dtype == torch.float32 else 0.125  # bf16 keeps 8 bits: values of ~10 round at 1/16
    for a, b in zip(theirs, ours, strict=True):
        a = a[real]  # the real tokens, text after text: how the packed pass lays them out
        assert b.dtype == a.dtype == dtype and b.shape == a.shape
        assert float((a.float() - b.float()).abs().max()) < tolerance
        assert float(torch.nn.functional.cosine_similarity(a.float(), b.float(), dim=-1).min()) > 0.999
    assert len(packed) >= 3
    mask = batch["attention_mask"].unsqueeze(-1).float()
    for passes in (packed, padded):
        order = np.concatenate([idx for idx, _ in passes])
        assert sorted(order.tolist()) == list(range(len(texts)))
        means = torch.cat([m for _, m in passes])
        assert means.dtype == dtype and means.shape == (len(texts), len(theirs), model.config.hidden_size)
        for layer, h in enumerate(theirs):
            expected = ((h.float() * mask).sum(1) / mask.sum(1))[torch.as_tensor(order)]
            cos = torch.nn.functional.cosine_similarity(expected, means[:, layer].float(), dim=-1)
            assert float(cos.min()) > 0.999


def test_fast_bert_takes_only_what_it_reproduces(minilm_classifier_dir):
    """A model in training mode, another architecture or a BertModel with relative positions runs through
    `transformers`; the encoder serves the default MiniLM through the fast pass."""
    import torch
    from transformers import AutoModelForSequenceClassification

    from backend.specialists import torch_runtime as rt
    from backend.specialists.encoder import SentenceEncoder, default_encoder_name
    from backend.specialists.fast_bert import FastBert

    cpu = torch.device("cpu")
    model = _minilm(torch.float32)
    assert rt.on_torch_thread(cpu, FastBert.of, model.train()) is None
    model.eval()
    model.config.position_embedding_type = "relative_key"
    assert rt.on_torch_thread(cpu, FastBert.of, model) is None
    classifier = rt.on_torch_thread(cpu, AutoModelForSequenceClassification.from_pretrained, str(minilm_classifier_dir))
    assert rt.on_torch_thread(cpu, FastBert.of, classifier.eval()) is None
    enc = SentenceEncoder(default_encoder_name(), dtype="float32")
    assert enc._fast is not None
    texts = ["a plain sentence", "and a second, longer one with more words in it"]
    fast = rt.on_torch_thread(cpu, enc._forward, texts)
    enc._fast = None
    np.testing.assert_allclose(fast, rt.on_torch_thread(cpu, enc._forward, texts), atol=1e-5)
