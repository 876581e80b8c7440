"""`musicprod judge [EXPERIMENT]`: the LLM judge (G-Eval rubrics, pairwise, reliability)."""

from __future__ import annotations

import sys

from harness.layout import resolve_experiment


def add_parser(sub) -> None:
    p = sub.add_parser("judge", help="LLM judge: G-Eval rubric scores, pairwise, reliability of saved generations")
    p.add_argument("experiment", nargs="?", default="default", help="name under runs/ or a path (default: default)")
    p.add_argument(
        "args", nargs="*", help="[JUDGE.yaml] [key=value ...], e.g. backend=openai model=qwen2.5:7b max_items=20"
    )
    p.add_argument("--keys", action="store_true", help="list every judge setting with its default and help, then exit")
    p.set_defaults(func=run)


def run(ns) -> int:
    from harness.judge.config import describe_judge, load_judge_settings
    from harness.judge.inputs import JudgeError
    from harness.judge.run import format_summary, run_judge

    if ns.keys:
        for key, default, help_text in describe_judge():
            print(f"{key:18s} {default:28s} {help_text}")
        return 0
    args = list(ns.args)
    config_path = args.pop(0) if args and "=" not in args[0] else None
    settings = load_judge_settings(config_path, args)
    experiment_dir = resolve_experiment(ns.experiment)
    try:
        summary = run_judge(experiment_dir, settings)
    except JudgeError as e:
        print(f"musicprod judge: error: {e}", file=sys.stderr)
        return 2
    print("\n=== LLM judge (G-Eval, 1-5; 95 % bootstrap CIs) ===")
    print(format_summary(summary))
    print(f"results: {experiment_dir}/judge/{summary['judge']}/  ({summary['wall_s']:.0f} s)")
    return 0
