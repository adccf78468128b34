"""Would an int8 encoder keep the served labels? ONNX Runtime's dynamic int8 against the service's bf16 encoder.

The default bundle (trained here, bf16 features) labels held-out TweetEval tweets with its encoder in bf16, fp32 and
in int8: all-MiniLM-L6-v2 exported to ONNX and its weight products quantised per output channel
(`quantize_dynamic(per_channel=True, MatMulConstBOnly)`, the attention's activation products left in fp32), with
some layers' products left in fp32 in the variants. Printed per variant: the share of ensemble labels equal to
bf16's, the encoder member's share, accuracy on the gold labels, and the encoder's own speed (texts/s in
length-sorted batches of 32 on 2,000 tweets; p50 of one tweet).

Needs `pip install onnxruntime onnx` (not among the service's requirements). ≈ 6 minutes on 2 cores.

    EVAL_DATA=... .venv/bin/python bench/int8_encoder.py --out docs/bench-int8-encoder.json
"""

from __future__ import annotations

import json
import logging
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from benchlib import (
    default_ensemble,
    encoder_speed,
    encoder_timing_texts,
    ensemble_labels,
    held_out_parser,
    machine,
    tweeteval_test,
    write_report,
)
from transformers import AutoModel

from backend.specialists import encoder as encoder_module
from backend.specialists import torch_runtime as rt

# Which weight products stay in fp32, by the exported node names.
VARIANTS = {
    "int8, every weight product": lambda n: False,
    "int8, the FFN output products in fp32": lambda n: n.endswith("/output/dense/MatMul") and "/attention/" not in n,
    "int8, the first layer in fp32": lambda n: "/layer.0/" in n,
    "int8, the last two layers in fp32": lambda n: "/layer.4/" in n or "/layer.5/" in n,
    "int8, the attention projections only": lambda n: "/attention/" not in n,
}


class PooledLayers(torch.nn.Module):
    """The encoder's output as the service computes it: each layer mean-pooled and normalised, last first."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.model(input_ids=input_ids, attention_mask=attention_mask,
                            output_hidden_states=True).hidden_states[1:][::-1]
        mask = attention_mask.unsqueeze(-1).to(hidden[0].dtype)
        pooled = torch.stack([(h * mask).sum(1) / mask.sum(1).clamp(min=1) for h in hidden], dim=1)
        return torch.nn.functional.normalize(pooled, dim=-1)


def export(model: torch.nn.Module, path: Path) -> list[str]:
    import onnx

    ids = torch.ones((2, 8), dtype=torch.long)
    with warnings.catch_warnings(), torch.inference_mode():
        warnings.simplefilter("ignore")
        torch.onnx.export(PooledLayers(model.float().eval()), (ids, torch.ones_like(ids)), str(path),
                          input_names=["input_ids", "attention_mask"], output_names=["pooled"],
                          dynamic_axes={"input_ids": {0: "batch", 1: "tokens"},
                                        "attention_mask": {0: "batch", 1: "tokens"}, "pooled": {0: "batch"}},
                          opset_version=17, dynamo=False)
    return [n.name for n in onnx.load(str(path)).graph.node if n.op_type == "MatMul"]


class OnnxForward:
    """Stands in for SentenceEncoder._forward: same tokenisation and batches, the pass run by ONNX Runtime."""

    def __init__(self, enc: encoder_module.SentenceEncoder, path: Path):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.enc, self.session = enc, ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def __call__(self, texts: list[str]) -> np.ndarray:
        enc = self.enc
        tok = enc.tokenizer(list(texts), truncation=True, max_length=enc.max_length)
        out = np.zeros((len(texts), enc.depth, enc.dim), dtype=np.float32)
        for idx in rt.length_sorted_batches([len(x) for x in tok["input_ids"]], enc.batch_size):
            batch = enc.tokenizer.pad({"input_ids": [tok["input_ids"][i] for i in idx],
                                       "attention_mask": [tok["attention_mask"][i] for i in idx]},
                                      return_tensors="np", pad_to_multiple_of=8)
            feeds = {k: batch[k].astype(np.int64) for k in ("input_ids", "attention_mask")}
            out[idx] = self.session.run(None, feeds)[0]
        return out


def main() -> int:
    p = held_out_parser(__doc__)
    args = p.parse_args()
    try:
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError:
        raise SystemExit("this benchmark needs: pip install onnxruntime onnx") from None
    texts, gold_names = tweeteval_test(args.texts)
    timing_texts = encoder_timing_texts()
    report: dict[str, Any] = {"benchmark": "int8-encoder", "command": " ".join([Path(sys.executable).name, *sys.argv]),
                              "machine": machine(), "texts": len(texts), "variants": {}}
    logging.getLogger().setLevel(logging.ERROR)  # the quantiser's advice to pre-process (tried: no better)
    with tempfile.TemporaryDirectory(prefix="aa-int8-") as tmp_name:
        tmp = Path(tmp_name)
        manifest, ensemble, which = default_ensemble(tmp, dtype="bfloat16")
        enc = ensemble.specialists[which].encoder
        # Every torch operation on the torch thread, as in the service (a second OpenMP team slows the first).
        nodes = rt.on_torch_thread(enc.device, lambda: export(AutoModel.from_pretrained(enc.name), tmp / "fp32.onnx"))
        bf16_forward = enc._forward
        forwards: dict[str, Any] = {"bf16 (the service)": bf16_forward}
        fp32_enc = encoder_module.SentenceEncoder(enc.name, dtype="float32")
        forwards["fp32"] = fp32_enc._forward
        for label, keep in VARIANTS.items():
            path = tmp / f"{len(forwards)}.onnx"
            quantize_dynamic(str(tmp / "fp32.onnx"), str(path), per_channel=True, weight_type=QuantType.QInt8,
                             op_types_to_quantize=["MatMul"], nodes_to_exclude=[n for n in nodes if keep(n)],
                             extra_options={"MatMulConstBOnly": True})
            forwards[label] = OnnxForward(enc, path)
        reference: tuple[np.ndarray, np.ndarray] | None = None
        for label, forward in forwards.items():
            enc._forward, enc._last = forward, None
            labels, member = ensemble_labels(ensemble, manifest, which, texts)
            if reference is None:
                reference = (labels, member)
            row = {"ensemble_agreement": round(float(np.mean(labels == reference[0])), 4),
                   "encoder_member_agreement": round(float(np.mean(member == reference[1])), 4),
                   "accuracy": round(float(np.mean(labels == gold_names)), 4)}
            row |= encoder_speed(forward, timing_texts)
            report["variants"][label] = row
            print(f"{label:40s} {json.dumps(row)}", flush=True)
        enc._forward = bf16_forward
    return write_report(args.out, report)


if __name__ == "__main__":
    raise SystemExit(main())
