"""A frozen BERT encoder's forward pass without the generality of `transformers`' one.

The default encoder (MiniLM) is a plain BertModel. For one tweet, its pass through `transformers` spends about half
its time in Python around the tensor operations (hooks, keyword plumbing, mask building, an attention-backend lookup
per layer) and a bf16 matmul on the CPU reorders its weight on every call. Here each layer is the same operations
written out, with every weight laid out once for oneDNN and the query, key and value projections in one matmul:
2.1× faster for one tweet, 1.2× in batches of 32, and the same hidden states to bf16 rounding. (GELU done inside
its matmul was no faster and moved 0.15 % of the labels; as written, none of 6,000 tweets changed label.)

In fp32, texts are not padded to a batch's longest: their tokens go end to end through the matmuls, and attention
runs per group of texts of one length. Length-sorted batches of 32 padded to a multiple of 8 computed 14 % more
tokens than the tweets hold, and ran up to 1.1× slower. Where oneDNN's bf16 kernels run, texts still go in padded
batches: a packed bf16 weight meets a new kernel per input shape, and padding keeps the shapes few. Texts end to end
there were 1.06× as fast on shapes seen before and moved 0.17 % of labels (a Xeon with AMX, `bench/encoder_pass.py`).

Only what it can reproduce is taken (`FastBert.of` says None otherwise); everything else runs through `transformers`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import accumulate, chain, groupby

import numpy as np
import torch
import torch.nn.functional as F

from backend.specialists import torch_runtime as rt

# Tokens per pass: 2,048 tokens of texts end to end ran 1.03-1.10x as fast as padded batches of 32 (fp32, MiniLM,
# 2,000 tweets); 1,024 and 4,096 about as fast.
_PACK_TOKENS = 2048
_BATCH = 32  # texts per padded batch, where oneDNN's bf16 kernels run


def _packs_bf16(weight: torch.Tensor) -> bool:
    return (weight.device.type == "cpu" and weight.dtype == torch.bfloat16 and torch.backends.mkldnn.is_available()
            and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported()))


@dataclass(frozen=True)
class _Linear:
    """y = x Wᵀ + b, W packed for oneDNN's bf16 kernels where they run."""

    weight: torch.Tensor
    bias: torch.Tensor
    packed: bool

    @classmethod
    def of(cls, weights: list[torch.Tensor], biases: list[torch.Tensor]) -> _Linear:
        w, b = torch.cat([x.detach() for x in weights]), torch.cat([x.detach() for x in biases])
        packed = _packs_bf16(w)
        return cls(torch.ops.mkldnn._reorder_linear_weight(w) if packed else w, b, packed)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.packed:
            return torch.ops.mkldnn._linear_pointwise(x, self.weight, self.bias, "none", [], "")
        return F.linear(x, self.weight, self.bias)


@dataclass(frozen=True)
class _Norm:
    weight: torch.Tensor
    bias: torch.Tensor
    eps: float

    @classmethod
    def of(cls, ln: torch.nn.LayerNorm) -> _Norm:
        return cls(ln.weight.detach(), ln.bias.detach(), float(ln.eps))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, self.weight.shape, self.weight, self.bias, self.eps)


@dataclass(frozen=True)
class _Layer:
    qkv: _Linear
    attention_out: _Linear
    attention_norm: _Norm
    intermediate: _Linear
    out: _Linear
    out_norm: _Norm

    def after_attention(self, attended: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """The layer's output from its input `x` and the attention's (heads concatenated)."""
        x = self.attention_norm(self.attention_out(attended) + x)
        return self.out_norm(self.out(F.gelu(self.intermediate(x))) + x)


class FastBert:
    """A BertModel's layers for lists of token ids (`hidden_states`), and their means per text (`mean_pooled`)."""

    def __init__(self, model: torch.nn.Module):
        emb = model.embeddings
        self.word = emb.word_embeddings.weight.detach()
        self.position = emb.position_embeddings.weight.detach()
        self.token_type = emb.token_type_embeddings.weight.detach()[0]  # no token_type_ids: segment 0
        self.embedding_norm = _Norm.of(emb.LayerNorm)
        self.heads = int(model.config.num_attention_heads)
        self.layers = []
        for layer in model.encoder.layer:
            attn = layer.attention.self
            self.layers.append(_Layer(
                qkv=_Linear.of([attn.query.weight, attn.key.weight, attn.value.weight],
                               [attn.query.bias, attn.key.bias, attn.value.bias]),
                attention_out=_Linear.of([layer.attention.output.dense.weight], [layer.attention.output.dense.bias]),
                attention_norm=_Norm.of(layer.attention.output.LayerNorm),
                intermediate=_Linear.of([layer.intermediate.dense.weight], [layer.intermediate.dense.bias]),
                out=_Linear.of([layer.output.dense.weight], [layer.output.dense.bias]),
                out_norm=_Norm.of(layer.output.LayerNorm)))
        self.padded = bool(self.layers) and self.layers[0].qkv.packed  # texts in padded batches, not end to end

    @classmethod
    def of(cls, model: torch.nn.Module) -> FastBert | None:
        """The fast pass of `model` when it is an encoder-only BertModel on the CPU, in eval mode, whose every part
        this module reproduces; None for anything else."""
        config = getattr(model, "config", None)
        if (type(model).__name__ != "BertModel" or config is None or model.training
                or getattr(config, "model_type", "") != "bert" or getattr(config, "is_decoder", False)
                or getattr(config, "add_cross_attention", False) or config.hidden_act != "gelu"
                or getattr(config, "position_embedding_type", "absolute") != "absolute"
                or config.hidden_size % config.num_attention_heads
                or next(model.parameters()).device.type != "cpu"):
            return None
        return cls(model)

    def mean_pooled(self, ids: Sequence[Sequence[int]]) -> Iterator[tuple[np.ndarray, torch.Tensor]]:
        """Per pass: (the indices of its texts, each layer's hidden states averaged over each text's tokens, (texts,
        layers, dim) first layer first). Texts go in by length: end to end, about `_PACK_TOKENS` tokens a pass, or
        `padded` in batches of `_BATCH`."""
        lengths = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
        width = self.word.shape[1]
        if self.padded:
            for idx in rt.length_sorted_batches(lengths, _BATCH):
                input_ids = rt.pad_batch({"input_ids": ids}, idx, pad_id=0)["input_ids"]
                mask = torch.arange(input_ids.shape[1]) < torch.from_numpy(lengths[idx])[:, None]
                hidden = self._padded(input_ids, mask)
                count = mask.sum(1, keepdim=True).to(hidden[0].dtype)
                yield idx, torch.stack([(h * mask[..., None]).sum(1) / count for h in hidden], dim=1)
            return
        order = np.argsort(lengths, kind="stable")
        for pack in _packs(lengths[order], _PACK_TOKENS):
            idx = order[pack]
            hidden = self.hidden_states([ids[i] for i in idx])
            runs = _runs(lengths[idx])
            means = [torch.cat([h[s:s + n * length].view(n, length, width).sum(1) / length for s, n, length in runs])
                     for h in hidden]
            yield idx, torch.stack(means, dim=1)

    def hidden_states(self, ids: Sequence[Sequence[int]]) -> list[torch.Tensor]:
        """Each transformer layer's hidden states, first layer first (what `hidden_states[1:]` of `transformers`'
        BertModel holds at the texts' tokens), as one (tokens, dim) tensor: the texts' tokens end to end, with no
        padding. Texts of one length that sit next to each other attend in one batch, without a mask."""
        lengths = [len(x) for x in ids]
        flat = torch.tensor(list(chain.from_iterable(ids)), dtype=torch.long)
        starts = torch.tensor([0, *accumulate(lengths)][:-1])
        position = torch.arange(len(flat)) - torch.repeat_interleave(starts, torch.tensor(lengths))
        x = self.embedding_norm(F.embedding(flat, self.word) + self.token_type + F.embedding(position, self.position))
        width = self.word.shape[1]
        heads, head_dim = self.heads, width // self.heads
        runs = _runs(lengths)
        out = []
        for layer in self.layers:
            qkv = layer.qkv(x)
            parts = []
            for s, n, length in runs:
                q, k, v = qkv[s:s + n * length].view(n, length, 3, heads, head_dim).permute(2, 0, 3, 1, 4).unbind(0)
                parts.append(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(n * length, width))
            x = layer.after_attention(torch.cat(parts) if len(parts) > 1 else parts[0], x)
            out.append(x)
        return out

    def _padded(self, input_ids: torch.Tensor, mask: torch.Tensor) -> list[torch.Tensor]:
        """Each layer's hidden states of a padded batch, (texts, tokens, dim), first layer first."""
        batch, tokens = input_ids.shape
        width = self.word.shape[1]
        heads, head_dim = self.heads, width // self.heads
        x = self.embedding_norm(F.embedding(input_ids, self.word) + self.token_type + self.position[:tokens])
        attend = mask[:, None, None, :]  # each query attends to the text's tokens, not padding
        out = []
        for layer in self.layers:
            q, k, v = layer.qkv(x).view(batch, tokens, 3, heads, head_dim).permute(2, 0, 3, 1, 4).unbind(0)
            a = F.scaled_dot_product_attention(q, k, v, attn_mask=attend).transpose(1, 2).reshape(batch, tokens, width)
            x = layer.after_attention(a, x)
            out.append(x)
        return out


def _runs(lengths: Sequence[int]) -> list[tuple[int, int, int]]:
    """(first token, texts, length) of each run of consecutive texts of one length."""
    runs: list[tuple[int, int, int]] = []
    token = 0
    for length, group in groupby(int(x) for x in lengths):
        n = len(list(group))
        runs.append((token, n, length))
        token += n * length
    return runs


def _packs(lengths: np.ndarray, budget: int) -> Iterator[slice]:
    """Consecutive slices of texts holding at most `budget` tokens each (a longer text alone)."""
    start, tokens = 0, 0
    for i, length in enumerate(lengths):
        if tokens and tokens + length > budget:
            yield slice(start, i)
            start, tokens = i, 0
        tokens += int(length)
    if start < len(lengths):
        yield slice(start, len(lengths))
