"""The encoder's two passes side by side: `transformers`' BertModel and the written-out one the service runs
(`backend/specialists/fast_bert.py`).

The default bundle (trained here) labels held-out TweetEval tweets with each pass; printed per pass: the share of
ensemble labels equal to the `transformers` pass's, the encoder member's share, accuracy on the gold labels, the
largest difference of a pooled feature, and the pass's own speed (texts/s in length-sorted batches of 32 over 2,000
tweets, best of 3; p50 of one tweet over 300), the passes alternated over `--rounds`. ≈ 3 minutes on 2 cores.

    EVAL_DATA=... .venv/bin/python bench/encoder_pass.py --out docs/bench-encoder-pass.json
"""

from __future__ import annotations

import copy
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
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

from backend.specialists import encoder as encoder_module


def main() -> int:
    p = held_out_parser(__doc__)
    p.add_argument("--rounds", type=int, default=2)
    args = p.parse_args()
    texts, gold = tweeteval_test(args.texts)
    timing_texts = encoder_timing_texts()
    report: dict[str, Any] = {"benchmark": "encoder-pass", "command": " ".join([Path(sys.executable).name, *sys.argv]),
                              "machine": machine(), "texts": len(texts), "passes": {}}
    with tempfile.TemporaryDirectory(prefix="aa-pass-") as tmp_name:
        manifest, ensemble, which = default_ensemble(Path(tmp_name))
        enc: encoder_module.SentenceEncoder = ensemble.specialists[which].encoder
        fast = enc._fast
        if fast is None:
            raise SystemExit(f"{enc.name} on {enc.device} ({enc.dtype}) has no written-out pass")
        passes = {"transformers": None, "written out (served)": fast}
        if fast.padded:  # where oneDNN runs bf16, the served pass pads; the end-to-end layout is timed beside it
            passes["written out, end to end"] = copy.copy(fast)
            passes["written out, end to end"].padded = False
        reference: dict[str, np.ndarray] = {}
        speeds: dict[str, list[dict[str, float]]] = {name: [] for name in passes}
        for round_ in range(args.rounds):
            for name, chosen in (passes.items() if round_ % 2 == 0 else reversed(passes.items())):
                enc._fast, enc._last = chosen, None
                speeds[name].append(encoder_speed(enc._forward, timing_texts))
                if name in report["passes"]:
                    continue
                pooled = enc.encode(texts, enc.depth)
                labels, member = ensemble_labels(ensemble, manifest, which, texts)
                if not reference:
                    reference = {"labels": labels, "member": member, "pooled": pooled}
                report["passes"][name] = {
                    "ensemble_agreement": round(float(np.mean(labels == reference["labels"])), 5),
                    "encoder_member_agreement": round(float(np.mean(member == reference["member"])), 5),
                    "largest_feature_difference": round(float(np.abs(pooled - reference["pooled"]).max()), 5),
                    "accuracy": round(float(np.mean(labels == gold)), 4)}
        enc._fast = fast
        for name, runs in speeds.items():
            report["passes"][name] |= {"texts_per_s": max(r["texts_per_s"] for r in runs),
                                       "one_text_p50_ms": min(r["one_text_p50_ms"] for r in runs), "rounds": runs}
            print(f"{name:22s} {json.dumps({k: v for k, v in report['passes'][name].items() if k != 'rounds'})}")
    return write_report(args.out, report)


if __name__ == "__main__":
    raise SystemExit(main())
