"""`autoannotator` command line: serve, stack, train, predict, bundles, plan, prelabel, evaluate, worker, jobs,
trust, settings."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from backend.logs import configure_logging
from backend.settings import Settings, SettingsError


def _control(label_config: str, name: str | None):
    from backend.labelstudio.config import parse_label_config

    space = parse_label_config(label_config)
    if name is None:
        if len(space.controls) > 1:
            sys.exit(f"the label config has several Choices controls {[c.name for c in space.controls]}: "
                     "pick one with --control")
        return space.controls[0]
    for c in space.controls:
        if c.name == name:
            return c
    sys.exit(f"no supported control named {name!r}; supported: {[c.name for c in space.controls]}")


def _json_arg(value: str | None) -> Any:
    """Inline JSON, or a file holding it. Inline JSON is recognised first: a long one is not a valid path."""
    if not value:
        return None
    if value.lstrip()[:1] in ("[", "{"):
        return json.loads(value)
    path = Path(value)
    return json.loads(path.read_text() if path.exists() else value)


def cmd_serve(args: argparse.Namespace, settings: Settings) -> None:
    if settings.bootstrap_default_bundle and not args.no_bootstrap:
        from finetune.bootstrap import ensure_default_bundle

        ensure_default_bundle(settings)
    if args.dev:
        from backend.commands.serve import build_app

        build_app(settings).run(host=settings.host, port=settings.port, threaded=True)
        return
    from gunicorn.app.base import BaseApplication

    if settings.torch_threads == 0 and args.workers > 1:
        # Each worker's torch would take every core: N workers then spin N × cores threads on the same cores.
        settings = settings.with_(torch_threads=max(1, (os.cpu_count() or 1) // args.workers))

    class _Gunicorn(BaseApplication):
        def load_config(self) -> None:
            self.cfg.set("bind", f"{settings.host}:{settings.port}")
            self.cfg.set("workers", args.workers)
            self.cfg.set("threads", args.threads)
            self.cfg.set("timeout", 0)  # a 10,000-task predict may take a while; LS waits 100 s
            # A client reusing a kept-alive connection at the moment the server closes it gets a reset, and its
            # request is lost: with gunicorn's 2 s that met a busy client's pauses between requests.
            self.cfg.set("keepalive", 75)
            self.cfg.set("preload_app", True)
            # gunicorn's control socket lives in $HOME and would be shared by every instance of this user.
            self.cfg.set("control_socket_disable", True)

        def load(self):
            from backend.commands.serve import build_app

            return build_app(settings)

    _Gunicorn().run()


def cmd_train(args: argparse.Namespace, settings: Settings) -> None:
    from backend.datasets import load_labelled
    from backend.serving.bundles import BundleStore
    from finetune.training import train_bundle

    control = _control(Path(args.label_config).read_text(), args.control)
    data = load_labelled(args.data, args.text_col, args.label_col, _json_arg(args.label_map), control.name,
                         control.multiple)
    if not data.texts:
        sys.exit(f"{args.data}: no labelled rows found")
    ref, manifest = train_bundle(BundleStore(settings.model_dir), control.labels, control.multiple, data,
                                 _json_arg(args.specialists), promote=not args.no_promote, **settings.runtime)
    print(json.dumps({"bundle_key": ref.key, "model_version": ref.version, "path": str(ref.path),
                      "promoted": not args.no_promote, "metrics": manifest.metrics}, indent=2))


def cmd_predict(args: argparse.Namespace, settings: Settings) -> None:
    from model import AutoAnnotatorModel

    config = Path(args.label_config).read_text()
    texts = list(args.text or [])
    if args.input:
        texts += [line.rstrip("\n") for line in Path(args.input).read_text().splitlines() if line.strip()]
    if not texts:
        sys.exit("give --text TEXT (repeatable) or --input FILE (one text a line)")
    from backend.labelstudio.config import parse_label_config

    key = parse_label_config(config).controls[0].data_key
    tasks = [{"id": i, "data": {key: t}} for i, t in enumerate(texts)]
    results = AutoAnnotatorModel(settings).predict(tasks, config, project="cli")
    for text, res in zip(texts, results, strict=True):
        print(json.dumps({"text": text, "prediction": res}, ensure_ascii=False))


def cmd_bundles(args: argparse.Namespace, settings: Settings) -> None:
    from backend.serving.bundles import BundleStore

    store = BundleStore(settings.model_dir)
    for key in store.keys():
        cur = store.current(key)
        row = {"bundle_key": key, "current": cur.version if cur else None, "versions": store.versions(key)}
        manifest = store.manifest(cur) if cur else None
        if manifest is not None:  # what the prediction score's temperature was fitted on
            row["calibration"] = {"temperature": manifest.temperature, **manifest.metrics.get("calibration", {})}
            row["vote_weights"] = manifest.vote_weights
        gate = manifest.anchor if manifest is not None else {}
        if gate:  # a project bundle: is its domain router on, against which anchor, and why
            row["domain_router"] = {k: gate.get(k) for k in ("active", "key", "version", "mode", "cutoff", "auc",
                                                           "reason")}
        print(json.dumps(row))


def cmd_worker(args: argparse.Namespace, settings: Settings) -> None:
    from backend.commands.worker import run_rq_worker

    run_rq_worker(settings, burst=args.burst)


def cmd_rollback(args: argparse.Namespace, settings: Settings) -> None:
    from backend.labelstudio.config import project_bundle_key
    from backend.serving.bundles import BundleStore

    store = BundleStore(settings.model_dir)
    key = args.key or project_bundle_key(args.project, args.control)
    try:
        now = store.rollback(key)
    except FileNotFoundError as exc:
        sys.exit(str(exc))
    print(json.dumps({"bundle_key": key, "current": now,
                      "note": None if now else "no earlier version: the shared bundle for the label set serves"}))


def cmd_plan(args: argparse.Namespace, settings: Settings) -> None:
    from backend.commands.plan import run_plan

    run_plan(args, settings)


def cmd_jobs(args: argparse.Namespace, settings: Settings) -> None:
    from backend.push import PushJobs
    from backend.store import Store
    from finetune.jobs import TrainingJobs

    store = Store(settings.database_url)
    if args.pushes:
        for run in PushJobs(store, settings).progress(args.project):
            print(json.dumps(run, default=str))
        return
    for job in TrainingJobs(store, settings).list(project_id=args.project):
        print(json.dumps(job, default=str))


def cmd_prelabel(args: argparse.Namespace, settings: Settings) -> None:
    from backend.commands.prelabel import prelabel, prelabel_queued

    if args.queue:
        if args.limit is not None:
            sys.exit("--limit is for a run in this process; --queue pre-labels every task left")
        report = prelabel_queued(settings, args.project, chunk=args.chunk or 250, set_sampling=args.set_sampling,
                                 progress=not args.no_progress, wait=not args.no_wait)
    else:
        report = prelabel(settings, args.project, chunk=args.chunk or 100, limit=args.limit,
                          set_sampling=args.set_sampling, progress=not args.no_progress)
    print(report.text(), file=sys.stderr)
    print(json.dumps(report.as_dict(), default=str))
    if report.interrupted:
        sys.exit(130)


def cmd_stack(args: argparse.Namespace, settings: Settings) -> None:
    from backend.commands.stack import run_stack

    sys.exit(run_stack(settings, rq_workers=args.rq_workers, serve_workers=args.workers))


def cmd_review_jobs(args: argparse.Namespace, settings: Settings) -> None:
    from backend.review.jobs import ReviewJobs
    from backend.store import Store

    for job in ReviewJobs(Store(settings.database_url), settings).list(project_id=args.project, status=args.status,
                                                                       brief=True):
        print(json.dumps(job, default=str))


def cmd_trust(args: argparse.Namespace, settings: Settings) -> None:
    from model import AutoAnnotatorModel

    report = AutoAnnotatorModel(settings, background=False).trust(args.project)
    if args.json:
        print(json.dumps(report))
        return
    if not report["ledgers"]:
        print(f"project {report['project']}: no LLM checks yet")
    for led in report["ledgers"]:
        print(f"project {report['project']} · {led['control']} · {led['llm_model']}: {led['checks']} checks"
              f"{' (new: every review audited)' if led['new'] else ''}, audit rate {led['audit_rate']:g}")
        print(f"  {'class':<20} {'state':<11} {'n':>5} {'LLM acc':>8} {'95% interval':>15} {'ensemble':>9}")
        for c in led["classes"]:
            ci = c["llm_interval"]
            span = f"{ci[0]:.3f}-{ci[1]:.3f}" if ci else "-"
            acc = "-" if c["llm_accuracy"] is None else f"{c['llm_accuracy']:.3f}"
            ens = "-" if c["ensemble_accuracy"] is None else f"{c['ensemble_accuracy']:.3f}"
            print(f"  {c['label'][:20]:<20} {c['state']:<11} {c['n']:>5} {acc:>8} {span:>15} {ens:>9}")


def _floats(value: str | None) -> list[float]:
    return [float(x) for x in value.split(",") if x.strip()] if value else []


def cmd_evaluate(args: argparse.Namespace, settings: Settings) -> None:
    from backend.evaluation.evaluate import EvalConfig, evaluate

    changes = {k: v for k, v in (("review_confidence_threshold", args.threshold), ("review_rule", args.rule),
                                 ("review_max_share", args.max_review_share)) if v is not None}
    cfg = EvalConfig(
        source=[Path(p) for p in args.source], stream=Path(args.stream), out=Path(args.out),
        test=Path(args.test) if args.test else None, test_split=args.test_split,
        source_test=Path(args.source_test) if args.source_test else None, reviewer=args.reviewer,
        stage_size=args.stage_size, text_col=args.text_col, label_col=args.label_col, label_map=args.label_map,
        source_text_col=args.source_text_col, source_label_col=args.source_label_col,
        labels=[x.strip() for x in args.labels.split(",")] if args.labels else None, seed=args.seed,
        source_rows=args.source_rows, stream_rows=args.stream_rows, test_rows=args.test_rows,
        relabel=not args.no_relabel, human_fallback=args.human_fallback, sweep=_floats(args.sweep),
        llm_only_sample=args.llm_only_sample, cache_dir=Path(args.cache_dir) if args.cache_dir else None,
        name=args.name or "", progress=not args.no_progress, keep_work=args.keep_work, shuffle=not args.no_shuffle,
        review_queue=args.review_queue, specialists=_json_arg(args.specialists))
    try:
        results = evaluate(cfg, settings.with_(**changes))
    except ValueError as exc:
        sys.exit(f"autoannotator evaluate: {exc}")
    print((Path(args.out) / "results.md").read_text(), file=sys.stderr)
    keys = ("final_accuracy", "reviewed_share", "vote_accuracy", "specialists", "llm_calls", "llm_tokens",
            "llm_only_tokens", "simulation")
    print(json.dumps({k: results[k] for k in keys}, default=str))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="autoannotator", description="Label Studio ML backend: SLM ensemble + LLM review")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("serve", help="serve the ML backend on $HOST:$PORT (gunicorn; --dev for Flask's server)")
    s.add_argument("--host")
    s.add_argument("--port", type=int)
    s.add_argument("--workers", type=int, default=1)
    s.add_argument("--threads", type=int, default=8)
    s.add_argument("--dev", action="store_true")
    s.add_argument("--no-bootstrap", action="store_true", help="do not train the sample bundle when none exists")
    s.set_defaults(func=cmd_serve)

    t = sub.add_parser("train", help="train and promote a specialist bundle for a label config")
    t.add_argument("--label-config", required=True, help="Label Studio XML config file")
    t.add_argument("--control", help="<Choices name> when the config has several")
    t.add_argument("--data", required=True, help="CSV, TSV, JSONL or a Label Studio JSON export")
    t.add_argument("--text-col", default="text")
    t.add_argument("--label-col", default="label")
    t.add_argument("--label-map", help='JSON (or a file) renaming labels, e.g. {"0": "Negative"}')
    t.add_argument("--specialists", help="JSON (or a file): [{name, family, params, weight}]")
    t.add_argument("--no-promote", action="store_true", help="write the version without serving it")
    t.set_defaults(func=cmd_train)

    r = sub.add_parser("predict", help="predict texts with the served bundle, print JSON lines")
    r.add_argument("--label-config", required=True)
    r.add_argument("--text", action="append")
    r.add_argument("--input", help="file with one text a line")
    r.set_defaults(func=cmd_predict)

    b = sub.add_parser("bundles", help="list trained bundles and their versions")
    b.set_defaults(func=cmd_bundles)

    w = sub.add_parser("worker", help="run an rq worker for training jobs (needs REDIS_URL)")
    w.add_argument("--burst", action="store_true", help="exit when the queue is empty")
    w.set_defaults(func=cmd_worker)

    rb = sub.add_parser("rollback", help="serve the previously promoted version again")
    rb.add_argument("--project", help="Label Studio project id")
    rb.add_argument("--control", default="", help="<Choices name> of the project's bundle")
    rb.add_argument("--key", help="a bundle key instead of project+control")
    rb.set_defaults(func=cmd_rollback)

    pn = sub.add_parser("plan", help="choose and map the specialists for a label config (the LLM when LLM_MODEL is "
                                     "set, else the deterministic matcher); print and write the plan")
    pn.add_argument("--label-config", required=True, help="Label Studio XML config file")
    pn.add_argument("--control", help="plan only this <Choices name> (default: every supported control)")
    pn.add_argument("--sample", help="sample tasks: texts (LS tasks JSON, JSONL, CSV, or one text a line), with "
                                     "labels they are human annotations the plan is checked on (and --build trains on)")
    pn.add_argument("--text-col", default="text", help="text column of --sample")
    pn.add_argument("--label-col", default="label", help="label column of --sample")
    pn.add_argument("--project", help="Label Studio project id: the plan is that project's (default: every project "
                                      "with this label set)")
    pn.add_argument("--catalog", help="a catalog file merged over the seed (default: CATALOG_FILE)")
    pn.add_argument("--language", help="the texts' language, ISO 639-1 (default: guessed from --sample)")
    pn.add_argument("--no-llm", action="store_true", help="use the deterministic matcher even if an LLM is set")
    pn.add_argument("--dry-run", action="store_true", help="print the plan, write nothing")
    pn.add_argument("--build", action="store_true", help="also build and promote the bundle now: trained on a "
                                                         "labelled --sample, else from the pretrained checkpoints")
    pn.add_argument("--json", action="store_true", help="print each plan as one JSON line")
    pn.set_defaults(func=cmd_plan)

    pl = sub.add_parser("prelabel", help="pre-label every task of a Label Studio project that has no prediction of "
                                         "the current model version (needs LABEL_STUDIO_URL, LABEL_STUDIO_API_KEY)")
    pl.add_argument("--project", type=int, required=True, help="Label Studio project id")
    pl.add_argument("--chunk", type=int, help="tasks per predict call and per write batch (default 100; with "
                                               "--queue, tasks per job: 250)")
    pl.add_argument("--queue", action="store_true", help="spread the project over `autoannotator worker` processes "
                                                         "(REDIS_URL and a shared DATABASE_URL): chunks as durable "
                                                         "jobs, resumable, a dead worker's chunk retried")
    pl.add_argument("--no-wait", action="store_true", help="with --queue: write and send the jobs, then return")
    pl.add_argument("--limit", type=int, help="pre-label at most N tasks this run")
    pl.add_argument("--set-sampling", action="store_true", help='also set the project\'s sampling to "Uncertainty '
                                                                'sampling", so human-flagged tasks are served first')
    pl.add_argument("--no-progress", action="store_true", help="no progress bar")
    pl.set_defaults(func=cmd_prelabel)

    sk = sub.add_parser("stack", help="the queue topology without Docker: Redis (REDIS_URL, or one started here), "
                                      "the backend and rq workers, supervised until Ctrl-C")
    sk.add_argument("--host")
    sk.add_argument("--port", type=int)
    sk.add_argument("--rq-workers", type=int, default=2)
    sk.add_argument("--workers", type=int, default=1, help="gunicorn workers of the backend")
    sk.set_defaults(func=cmd_stack)

    rj = sub.add_parser("review-jobs", help="list asynchronous review jobs (REVIEW_MODE=async)")
    rj.add_argument("--project")
    rj.add_argument("--status")
    rj.set_defaults(func=cmd_review_jobs)

    ev = sub.add_parser("evaluate", help="run the annotation-stream protocol (cold start, staged review and "
                                         "learning) through the service's code; write DIR/results.json, .md, plots")
    ev.add_argument("--source", nargs="+", required=True, help="cold-start training file(s)")
    ev.add_argument("--stream", required=True, help="the items to annotate, in order, in stages")
    ev.add_argument("--test", help="held-out test file (default: --test-split of the stream)")
    ev.add_argument("--test-split", type=float, default=0.3, help="share of the stream held out as test "
                                                                    "when --test is not given")
    ev.add_argument("--source-test", help="a test file from the source domain, to measure forgetting")
    ev.add_argument("--reviewer", default="oracle", help="oracle | simulated:P | llm (OPENAI_BASE_URL, LLM_MODEL) | "
                    "noisy-llm:P[:CLASS] (right with probability P, errors leaning to CLASS, served on 127.0.0.1)")
    ev.add_argument("--stage-size", type=int, default=1000)
    ev.add_argument("--out", required=True, help="output directory")
    ev.add_argument("--text-col", default="text", help="column name, or a position for a file with no header")
    ev.add_argument("--label-col", default="label", help="column name, or a position for a file with no header")
    ev.add_argument("--source-text-col", help="--text-col for the --source and --source-test files")
    ev.add_argument("--source-label-col", help="--label-col for the --source and --source-test files")
    ev.add_argument("--label-map", help='JSON (or a file) renaming labels, e.g. {"negative": "Bearish", "0": '
                                        '"Bearish"}')
    ev.add_argument("--labels", help="the project's choices, comma-separated (default: the labels in the data)")
    ev.add_argument("--threshold", type=float, help="REVIEW_CONFIDENCE_THRESHOLD for this run")
    ev.add_argument("--rule", help="REVIEW_RULE for this run")
    ev.add_argument("--max-review-share", type=float, help="REVIEW_MAX_SHARE for this run")
    ev.add_argument("--specialists", help="JSON (or a file): the cold start's [{name, family, params, weight}] "
                                          "(default: the service's default specialists)")
    ev.add_argument("--sweep", help="also run these thresholds, comma-separated, for the trade-off plot")
    ev.add_argument("--no-relabel", action="store_true", help="keep each item's label from its own stage instead "
                                                              "of re-predicting unreviewed items with the final models")
    ev.add_argument("--human-fallback", action="store_true", help="items the LLM does not settle get the gold label "
                                                                  "(a human settles them) instead of the ensemble's")
    ev.add_argument("--llm-only-sample", type=int, default=0, help="send N random stream items to the LLM to "
                                                                   "measure the LLM-only cost and accuracy")
    ev.add_argument("--source-rows", type=int, help="use a seeded sample of N source rows")
    ev.add_argument("--stream-rows", type=int, help="use a seeded sample of N stream items")
    ev.add_argument("--test-rows", type=int, help="use a seeded sample of N test items")
    ev.add_argument("--seed", type=int, default=0)
    ev.add_argument("--cache-dir", help="embedding cache shared between runs (default: inside --out)")
    ev.add_argument("--name", help="the run's name in reports (default: the stream file's name)")
    ev.add_argument("--no-progress", action="store_true", help="no progress bar")
    ev.add_argument("--keep-work", action="store_true", help="keep DIR/work (every run's bundles and database)")
    ev.add_argument("--no-shuffle", action="store_true", help="stream the items in file order (default: shuffled "
                                                              "with --seed; files are often grouped by label)")
    ev.add_argument("--review-queue", choices=("stage", "backlog"), default="stage",
                    help="stage: review the hardest new items of each stage; backlog: the hardest of every item "
                         "accepted so far, re-scored by the current models (Label Studio's uncertainty sampling)")
    ev.set_defaults(func=cmd_evaluate)

    tr = sub.add_parser("trust", help="the LLM's trust ledger for a project: per class, checks against people, "
                                      "accuracy with a 95%% interval, the ensemble's on the same items, the state")
    tr.add_argument("--project", required=True)
    tr.add_argument("--json", action="store_true", help="print the report as JSON")
    tr.set_defaults(func=cmd_trust)

    st = sub.add_parser("settings", help="check the environment's settings and print them by group (secrets hidden); "
                                         "--markdown prints docs/configuration.md")
    st.add_argument("--markdown", action="store_true")
    st.set_defaults(func=cmd_settings)

    j = sub.add_parser("jobs", help="list training jobs")
    j.add_argument("--project")
    j.add_argument("--pushes", action="store_true", help="the predictions pushed to Label Studio instead, per run")
    j.set_defaults(func=cmd_jobs)
    return p


def cmd_settings(args: argparse.Namespace, settings: Settings) -> None:
    from dataclasses import fields

    from backend.settings import GROUPS, markdown

    if args.markdown:
        print(markdown())
        return
    secret = ("openai_api_key", "basic_auth_pass", "label_studio_api_key")
    for group, title in GROUPS.items():
        print(f"# {title}")
        for f in fields(settings):
            if f.metadata["group"] == group:
                value = getattr(settings, f.name)
                print(f"{f.name.upper()}={'***' if f.name in secret and value else value}")


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    overrides = {k: v for k in ("host", "port") if (v := getattr(args, k, None)) is not None}
    try:
        settings = Settings.from_env(**overrides)
    except SettingsError as exc:
        sys.exit(f"autoannotator: {exc}")
    configure_logging(settings.log_level)
    args.func(args, settings)


if __name__ == "__main__":
    main()
