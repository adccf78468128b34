"""The meta-controller (issue #6): choose and map the specialists of a project from a catalog of checkpoints.

catalog (what can be chosen) → matcher (deterministic ranking and label mapping) → availability (loadable here?)
→ llm_planner (the configured LLM chooses and maps, when there is one) → validate (never trusted blindly) → plan
(stored in MODEL_DIR/plans) → apply (zero-shot bundle, accuracy check on human annotations) and service (/setup).
Only `apply` loads models; everything else is light enough for the HTTP process.
"""
