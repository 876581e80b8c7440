"""`musicprod bench ...`: benchmarks that print measured figures (no pass/fail thresholds)."""
from __future__ import annotations

from pathlib import Path

from harness.config import load_config

TRAIN_BENCH_DEFAULTS = ["name=bench-train", "systems=[hf-lora,hf-qlora]", "train.max_steps=12",
                        "train.logging_steps=4", "data.validation_fraction=0"]


def bench_train(args: list[str]) -> int:
    from harness.cli import _split_config_args
    from harness.pipeline import check_and_prepare, train_system
    config_path, overrides = _split_config_args(args)
    overrides = TRAIN_BENCH_DEFAULTS + overrides
    cfg = load_config(config_path, overrides)
    model = check_and_prepare(cfg)
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


def bench_eval(args: list[str]) -> int:
    """Full held-out evaluation of one adapter, merged into the weights vs attached; prints the figures."""
    import json
    import shutil
    from harness.layout import resolve_experiment
    from harness.config import experiment_config
    from harness.evaluate import run_eval
    positional = [a for a in args if "=" not in a]
    overrides = [a for a in args if "=" in a]
    source = resolve_experiment(positional[0] if positional else "default")
    system = positional[1] if len(positional) > 1 else "hf-lora"
    record = source / system / "run.json"
    if not record.exists():
        raise SystemExit(f"bench eval: {record} not found (train {system} in {source} first)")
    rows = []
    for merged in (True, False):
        scratch = Path("runs") / f"bench-eval-{'merged' if merged else 'attached'}"
        shutil.rmtree(scratch, ignore_errors=True)
        (scratch / system).mkdir(parents=True)
        shutil.copy(record, scratch / system / "run.json")
        settings = experiment_config(source, [*overrides, "eval.include_base=false", f"eval.merge_adapter={merged}"]).eval
        summary = run_eval(scratch, settings)
        meta = json.loads((scratch / "eval" / system / "results.json").read_text())["musicprod"]
        rows.append((merged, settings, meta, summary["targets"][system]["metrics"]))
    print(f"\nbench eval: {system} from {source}, batch {settings.batch_size}, {settings.dtype}, "
          f"max_gen_toks {settings.max_gen_toks}, limit {settings.limit or 'none'}")
    print(f"{'adapter':9s} {'QA':>4s} {'MC':>4s} {'wall s':>7s} {'items/s':>8s} {'gen tokens':>10s} {'gen tok/s':>9s} {'key-fact recall':>15s} {'MC acc':>7s}")
    for merged, _, meta, metrics in rows:
        n = meta["n_items"]
        print(f"{'merged' if merged else 'attached':9s} {n.get('qa', 0):4d} {n.get('mc', 0):4d} {meta['wall_s']:7.1f} "
              f"{meta['items_per_s']:8.3f} {meta['generated_tokens']:10d} {meta['generated_tokens_per_s']:9.1f} "
              f"{metrics['qa']['key_fact_recall']['mean']:15.3f} {metrics['mc']['acc']['mean']:7.3f}")
    return 0


def main(what: str, args: list[str]) -> int:
    if what == "eval":
        return bench_eval(args)
    if what == "train":
        return bench_train(args)
    if what == "gpu":
        from harness.bench_gpu import main as bench_gpu
        return bench_gpu(args)
    if what == "serve":
        from server.bench import main as bench_serve
        return bench_serve(args)
    raise SystemExit(f"unknown benchmark {what!r}")
