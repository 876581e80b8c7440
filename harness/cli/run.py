"""`musicprod run`: the main job (prepare -> train every system -> evaluate -> report)."""

from __future__ import annotations

from harness.config import load_config, split_config_args


def add_parser(sub) -> None:
    p = sub.add_parser("run", help="main job: prepare -> train every system -> evaluate -> report")
    p.add_argument("args", nargs="*", help="[CONFIG.yaml] [key=value ...]")
    p.set_defaults(func=run)


def run(ns) -> int:
    from harness.pipeline import run_experiment

    config_path, overrides = split_config_args(ns.args)
    cfg = load_config(config_path, overrides)
    summary = run_experiment(cfg, config_path, overrides)
    print("\n=== summary ===")
    for system, s in summary["systems"].items():
        extra = s.get("reason") or f"{s.get('train_tokens_per_s')} tok/s, val loss {s.get('validation_loss')}"
        print(f"  {system:14s} {s['status']:8s} {extra}")
    print(f"champion: {summary.get('champion')}  report: {summary.get('report')}")
    print(f"results: {cfg.experiment_dir}/  ({summary['stages']['total_s']:.0f} s)")
    return 0 if all(s["status"] in ("ok", "skipped") for s in summary["systems"].values()) else 1
