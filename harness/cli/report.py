"""`musicprod report [EXPERIMENT]`: the HTML report and champion.json (or --gpu: the GPU report)."""

from __future__ import annotations

import sys
from pathlib import Path

from harness.layout import resolve_experiment


def add_parser(sub) -> None:
    p = sub.add_parser("report", help="HTML report (index.html, summary.md, summary.json) and champion.json")
    p.add_argument("experiment", nargs="?", default="default", help="name under runs/ or a path (default: default)")
    p.add_argument("--out", default="reports/out", help="reports root; writes OUT/<experiment>/ (default: reports/out)")
    p.add_argument(
        "--gpu",
        nargs="*",
        metavar="RESULTS_DIR",
        default=None,
        help="instead of an experiment: the Unsloth vs HF GPU report from `bench gpu` result folders "
        "(default: every folder under benchmarks/results/gpu/); writes OUT/gpu/",
    )
    p.set_defaults(func=run)


def run(ns) -> int:
    from reports import build_report, choose_champion
    from reports.load import ReportError

    if ns.gpu is not None:
        return _gpu_report(ns)
    experiment_dir = resolve_experiment(ns.experiment)
    try:
        champion = choose_champion(experiment_dir)
        index = build_report(experiment_dir, ns.out)
    except ReportError as e:
        print(f"musicprod report: error: {e}", file=sys.stderr)
        return 2
    print(f"champion: {champion['system']}  ({experiment_dir / 'champion.json'})")
    print(f"report:   {index}  (+ summary.md, summary.json)")
    return 0


def _gpu_report(ns) -> int:
    from reports.gpu import build_gpu_report, find_result_dirs
    from reports.load import ReportError

    dirs = [Path(d) for d in ns.gpu] or find_result_dirs()
    try:
        index = build_gpu_report(dirs, ns.out)
    except ReportError as e:
        print(f"musicprod report --gpu: error: {e}", file=sys.stderr)
        return 2
    print(f"GPU report: {index}  (+ summary.json; from {len(dirs)} result folder(s))")
    return 0
