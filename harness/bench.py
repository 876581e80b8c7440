"""`musicprod bench ...`: benchmarks that print measured figures (no pass/fail thresholds)."""
from __future__ import annotations

from harness.config import load_config

TRAIN_BENCH_DEFAULTS = ["name=bench-train", "systems=[hf-lora,hf-qlora]", "train.max_steps=12",
                        "train.logging_steps=4", "data.validation_fraction=0"]


def bench_train(args: list[str]) -> int:
    from harness.cli import _split_config_args
    from harness.models import prepare
    from harness.pipeline import train_system
    config_path, overrides = _split_config_args(args)
    overrides = TRAIN_BENCH_DEFAULTS + overrides
    cfg = load_config(config_path, overrides)
    model = prepare(cfg.model.name, cfg.model.cache_dir)
    rows = []
    for system in cfg.systems:
        r = train_system(cfg, config_path, overrides, system, model)
        rows.append(r)
    print(f"\nbench train: {cfg.model.name}, {cfg.train.max_steps} steps, batch {cfg.train.batch_size}, "
          f"bf16={cfg.train.bf16}, warm-up steps excluded from steady figures")
    print(f"{'system':14s} {'status':8s} {'tokens':>8s} {'tok/s':>8s} {'steady tok/s':>13s} {'step p50 s':>11s} "
          f"{'peak RSS MiB':>13s} {'peak VRAM MiB':>14s}")
    for r in rows:
        print(f"{r['system']:14s} {r['status']:8s} {r.get('train_tokens', '-')!s:>8s} "
              f"{r.get('train_tokens_per_s', '-')!s:>8s} {r.get('steady_tokens_per_s', '-')!s:>13s} "
              f"{r.get('step_time_p50_s', '-')!s:>11s} {r.get('peak_rss_mib', '-')!s:>13s} "
              f"{r.get('peak_vram_allocated_mib', '-')!s:>14s}" + (f"  {r.get('reason')}" if r['status'] != 'ok' else ""))
    return 0 if all(r["status"] in ("ok", "skipped") for r in rows) else 1


def main(what: str, args: list[str]) -> int:
    if what == "train":
        return bench_train(args)
    if what == "serve":
        from server.bench import main as bench_serve
        return bench_serve(args)
    raise SystemExit(f"unknown benchmark {what!r}")
