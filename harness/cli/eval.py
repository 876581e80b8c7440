"""`musicprod eval [EXPERIMENT]`: lm-eval on the held-out (or dev) set for base, adapters and lookup."""

from __future__ import annotations

import sys

from harness.config import experiment_config
from harness.layout import resolve_experiment


def add_parser(sub) -> None:
    p = sub.add_parser("eval", help="evaluate the base model and every adapter of an experiment (lm-eval)")
    p.add_argument("experiment", nargs="?", default="default", help="name under runs/ or a path (default: default)")
    p.add_argument("overrides", nargs="*", help="key=value, e.g. eval.limit=20 eval.batch_size=8")
    p.add_argument(
        "--only",
        default=None,
        help="comma-separated targets to (re)evaluate, e.g. base,hf-lora,lookup; "
        "SYSTEM@STEP evaluates a saved checkpoint (train.save_steps)",
    )
    p.add_argument(
        "--split",
        choices=["heldout", "dev"],
        default=None,
        help="question set (= eval.split): dev to choose recipes and checkpoints, heldout once at the end",
    )
    p.set_defaults(func=run)


def run(ns) -> int:
    from harness.eval.run import EvalError, format_summary, run_eval
    from harness.layout import eval_dir

    experiment_dir = resolve_experiment(ns.experiment)
    cfg = experiment_config(experiment_dir, ns.overrides + ([f"eval.split={ns.split}"] if ns.split else []))
    try:
        summary = run_eval(experiment_dir, cfg.eval, only=ns.only.split(",") if ns.only else None)
    except EvalError as e:
        print(f"musicprod eval: error: {e}", file=sys.stderr)
        return 2
    print(f"\n=== {cfg.eval.split} evaluation (95 % bootstrap CIs) ===")
    print(format_summary(summary))
    print(f"results: {eval_dir(experiment_dir, cfg.eval.split)}/  ({summary['wall_s']:.0f} s)")
    return 0
