"""Which int8 scheme, if any, keeps the served labels? Symmetric int8 simulated inside the written-out encoder pass.

`int8_encoder.py` measures ONNX Runtime's int8 (one scale per weight row, one per activation tensor). Here each
scheme is simulated exactly in fp32 (values rounded to 127 steps of their scale, then multiplied back), so what is
measured is the rounding alone, whatever kernel would run it: weights with one scale per output row, activations
with one scale per token or per tensor, or both. The default bundle (trained here) labels held-out TweetEval tweets
with MiniLM in fp32 and with each scheme; printed per scheme: the share of ensemble labels equal to fp32's, the
encoder member's share and accuracy on the gold labels. Then what int8 would buy: torch's int8 matmul
(`torch._int_mm`, with each token's scale computed and applied, and the int8 product alone) against fp32
`F.linear` on the encoder's four weight shapes, 2,048 tokens a call, median of 20. ≈ 6 minutes on 2 cores.

    EVAL_DATA=... .venv/bin/python bench/int8_schemes.py --out docs/bench-int8-schemes.json
"""

from __future__ import annotations

import copy
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from benchlib import default_ensemble, ensemble_labels, held_out_parser, machine, tweeteval_test, write_report

from backend.specialists import torch_runtime as rt
from backend.specialists.fast_bert import FastBert

# scheme: (weights per output row, activations per "token" | "tensor" | None)
SCHEMES: dict[str, tuple[bool, str | None]] = {
    "weights int8 (per row), activations fp32": (True, None),
    "weights fp32, activations int8 (per token)": (False, "token"),
    "weights and activations int8 (per token)": (True, "token"),
    "weights and activations int8 (per tensor)": (True, "tensor"),
}
_LINEARS = ("qkv", "attention_out", "intermediate", "out")


def _rounded(x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return (x / scale).round().clamp(-127, 127) * scale


class _SimulatedInt8:
    """A written-out pass's linear with its weight and/or input rounded as symmetric int8 would round them."""

    def __init__(self, linear: Any, weights: bool, activations: str | None):
        w = linear.weight
        self.weight = _rounded(w, w.abs().amax(1, keepdim=True).clamp(min=1e-8) / 127) if weights else w
        self.bias, self.activations = linear.bias, activations

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.activations == "token":
            x = _rounded(x, x.abs().amax(-1, keepdim=True).clamp(min=1e-8) / 127)
        elif self.activations == "tensor":
            x = _rounded(x, x.abs().amax().clamp(min=1e-8) / 127)
        return F.linear(x, self.weight, self.bias)


def simulated(fast: FastBert, weights: bool, activations: str | None) -> FastBert:
    out = copy.copy(fast)
    out.layers = [dataclasses.replace(layer, **{n: _SimulatedInt8(getattr(layer, n), weights, activations)
                                                 for n in _LINEARS}) for layer in fast.layers]
    return out


def matmul_speed(fast: FastBert, tokens: int = 2048, rounds: int = 20) -> dict[str, Any]:
    """ms per call of fp32 F.linear and of a per-token int8 linear (quantise, torch._int_mm, rescale)."""
    def best(fn: Any, *args: Any) -> float:
        fn(*args)
        times = []
        for _ in range(rounds):
            t0 = time.perf_counter()
            fn(*args)
            times.append(time.perf_counter() - t0)
        return float(np.median(times)) * 1000

    def int8_linear(x: torch.Tensor, wq_t: torch.Tensor, ws: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        s = x.abs().amax(1, keepdim=True).clamp(min=1e-8) / 127
        return torch._int_mm((x / s).round().to(torch.int8), wq_t).float() * (s * ws) + b

    out: dict[str, Any] = {}
    layer = fast.layers[0]
    for name in _LINEARS:
        lin = getattr(layer, name)
        w, b = lin.weight, lin.bias
        x = torch.randn(tokens, w.shape[1])
        ws = w.abs().amax(1).clamp(min=1e-8) / 127
        wq_t = (w / ws[:, None]).round().to(torch.int8).t()  # (in, out), column by column
        fp32 = best(F.linear, x, w, b)
        int8 = best(int8_linear, x, wq_t, ws, b)
        product = best(torch._int_mm, torch.ones_like(x, dtype=torch.int8), wq_t)
        out[name] = {"shape": [tokens, w.shape[1], w.shape[0]], "fp32_ms": round(fp32, 3), "int8_ms": round(int8, 3),
                     "int8_product_alone_ms": round(product, 3), "speedup": round(fp32 / int8, 2)}
    total = {k: round(sum(v[k] for v in out.values()), 3) for k in ("fp32_ms", "int8_ms", "int8_product_alone_ms")}
    out["all four"] = {**total, "speedup": round(total["fp32_ms"] / total["int8_ms"], 2),
                       "speedup_of_the_product_alone": round(total["fp32_ms"] / total["int8_product_alone_ms"], 2)}
    return out


def main() -> int:
    p = held_out_parser(__doc__)
    args = p.parse_args()
    texts, gold = tweeteval_test(args.texts)
    cpu = torch.device("cpu")
    report: dict[str, Any] = {"benchmark": "int8-schemes", "command": " ".join([Path(sys.executable).name, *sys.argv]),
                              "machine": machine(), "texts": len(texts), "schemes": {}}
    with tempfile.TemporaryDirectory(prefix="aa-int8-") as tmp_name:
        manifest, ensemble, which = default_ensemble(Path(tmp_name))
        enc = ensemble.specialists[which].encoder
        fp32 = rt.on_torch_thread(cpu, lambda: FastBert.of(copy.deepcopy(enc.model).float()))  # end to end
        served = enc._fast
        variants = {"fp32": fp32, **{name: simulated(fp32, *scheme) for name, scheme in SCHEMES.items()}}
        reference: tuple[np.ndarray, np.ndarray] | None = None
        for name, fast in variants.items():
            enc._fast, enc._last = fast, None
            labels, member = ensemble_labels(ensemble, manifest, which, texts)
            reference = reference or (labels, member)
            report["schemes"][name] = {"ensemble_agreement": round(float(np.mean(labels == reference[0])), 5),
                                       "encoder_member_agreement": round(float(np.mean(member == reference[1])), 5),
                                       "accuracy": round(float(np.mean(labels == gold)), 4)}
            print(f"{name:45s} {json.dumps(report['schemes'][name])}", flush=True)
        enc._fast = served
        with torch.inference_mode():
            report["matmul"] = rt.on_torch_thread(cpu, matmul_speed, fp32)
        print("matmuls, 2,048 tokens:", json.dumps(report["matmul"]["all four"]))
    return write_report(args.out, report)


if __name__ == "__main__":
    raise SystemExit(main())
