"""`musicprod bench ...`: benchmarks that print measured figures (no pass/fail thresholds)."""
from __future__ import annotations

from pathlib import Path

from harness.config import load_config

TRAIN_BENCH_DEFAULTS = ["name=bench-train", "systems=[hf-lora,hf-qlora,hf-full]", "train.max_steps=12",
                        "train.logging_steps=4", "data.validation_fraction=0"]
# --ablate: hf-lora with each CPU speed-up switched off in turn, back to back on the same data (this machine is
# noisy; A/B in one run is the only honest comparison), and with all of them off (the code as it was).
ABLATIONS = {"all speed-ups (default)": [],
             "allocator glibc": ["train.allocator=glibc"],
             "fp32 adapters": ["train.adapter_dtype=float32"],
             "no torch.compile": ["train.compile=false"],
             "none (as landed before)": ["train.allocator=glibc", "train.adapter_dtype=float32", "train.compile=false"]}


def bench_train(args: list[str]) -> int:
    """Throughput and memory of the HF systems on the real data (`--ablate`: each speed-up's share, 30 steps,
    with each variant's loss curve against the all-off one)."""
    from harness.config import split_config_args
    from harness.pipeline import check_and_prepare, train_system
    ablate = "--ablate" in args
    config_path, overrides = split_config_args([a for a in args if a != "--ablate"])
    overrides = TRAIN_BENCH_DEFAULTS + (["systems=[hf-lora]", "train.max_steps=30", "train.logging_steps=1"]
                                        if ablate else []) + overrides
    cfg = load_config(config_path, overrides)
    model = check_and_prepare(cfg)
    variants = ABLATIONS if ablate else {"": []}
    rows = []
    for label, extra in variants.items():
        name = f"name=bench-train-{_slug(label)}" if label else "name=bench-train"
        run_overrides = [*overrides, name, *extra]
        run_cfg = load_config(config_path, run_overrides)
        for system in run_cfg.systems:
            rows.append((label, train_system(run_cfg, config_path, run_overrides, system, model)))
    print(f"\nbench train: {cfg.model.name}, {cfg.train.max_steps} steps, batch {cfg.train.batch_size}, "
          f"bf16={cfg.train.bf16}, warm-up steps excluded from steady figures")
    print(f"{'variant':26s} {'system':9s} {'status':7s} {'tok/s':>7s} {'steady':>7s} {'step p50':>8s} "
          f"{'peak RSS MiB':>12s} {'loss vs none':>12s}  settings")
    reference = next((r for label, r in rows if label.startswith("none")), None)
    for label, r in rows:
        s = r.get("effective_settings") or {}
        print(f"{label or '-':26s} {r['system']:9s} {r['status']:7s} {r.get('train_tokens_per_s', '-')!s:>7s} "
              f"{r.get('steady_tokens_per_s', '-')!s:>7s} {r.get('step_time_p50_s', '-')!s:>8s} "
              f"{r.get('peak_rss_mib', '-')!s:>12s} {_loss_deviation(r, reference):>12s}  "
              f"{s.get('allocator')}, adapters {s.get('adapter_dtype')}, compile {s.get('torch_compile')}"
              + (f"  {r.get('reason')}" if r['status'] != 'ok' else ""))
    return 0 if all(r["status"] in ("ok", "skipped") for _, r in rows) else 1


def _slug(label: str) -> str:
    return "-".join(w for w in "".join(c if c.isalnum() else " " for c in label.lower()).split())[:40]


def _loss_deviation(record: dict, reference: dict | None) -> str:
    """Largest relative difference of the per-step training loss from the reference run ('-' when not comparable)."""
    if not reference or record is reference or not record.get("loss_curve") or not reference.get("loss_curve"):
        return "-"
    pairs = list(zip([p["loss"] for p in record["loss_curve"]], [p["loss"] for p in reference["loss_curve"]]))
    return f"{100 * max(abs(a - b) / b for a, b in pairs):.2f} %"


def bench_eval(args: list[str]) -> int:
    """Full held-out evaluation of one adapter, merged into the weights vs attached; prints the figures."""
    import json
    import shutil
    from harness.layout import resolve_experiment
    from harness.config import experiment_config
    from harness.eval.run import run_eval
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


RECIPE_DIR = Path("benchmarks/results/recipe")


def bench_recipe(args: list[str]) -> int:
    """Train one system with checkpoints, evaluate every checkpoint on the dev set, append one row per checkpoint
    to benchmarks/results/recipe/sweep.jsonl (with the command), and rewrite the sweep table (sweep.md).

        musicprod bench recipe [CONFIG] name=NAME systems=[hf-lora] train.learning_rate=1e-3 ... [--checkpoints K]

    The held-out set is never read: every figure here is dev.
    """
    import json
    import shlex
    import time
    from harness.config import ExperimentConfig
    from harness.eval.run import run_eval
    from harness.layout import trainer_dir
    from harness.pipeline import check_and_prepare, train_system
    from harness.config import split_config_args
    checkpoints = 4
    if "--checkpoints" in args:
        i = args.index("--checkpoints")
        checkpoints = int(args[i + 1])
        args = args[:i] + args[i + 2:]
    config_path, overrides = split_config_args(args)
    cfg: ExperimentConfig = load_config(config_path, overrides)
    if len(cfg.systems) != 1:
        raise SystemExit(f"bench recipe: one system per sweep row set, got systems={cfg.systems}")
    system = cfg.systems[0]
    steps, per_epoch = planned_steps(cfg)
    every = max(1, steps // checkpoints)
    overrides = overrides + [f"train.save_steps={every}", "train.save_total_limit=0"]
    cfg = load_config(config_path, overrides)
    model = check_and_prepare(cfg)
    started = time.perf_counter()
    record = train_system(cfg, config_path, overrides, system, model)
    if record["status"] != "ok":
        print(f"bench recipe: {system} {record['status']}: {record.get('reason')}")
        return 1
    saved = sorted(int(p.name.split("-")[1]) for p in trainer_dir(cfg.experiment_dir, system).glob("checkpoint-*"))
    targets = [f"{system}@{s}" for s in saved]
    settings = load_config(config_path, overrides + ["eval.split=dev"]).eval
    summary = run_eval(cfg.experiment_dir, settings, only=["base", "lookup", *targets])
    command = "musicprod bench recipe " + " ".join(shlex.quote(a) for a in args)
    rows = []
    for target in targets:
        t = summary["targets"][target]
        step = int(target.split("@")[1])
        point = next((p for p in record["loss_curve"] if p["step"] >= step), record["loss_curve"][-1])
        rows.append({"experiment": cfg.name, "system": system, "step": step, "epoch": round(step / per_epoch, 2),
                     "learning_rate": cfg.train.full_learning_rate if system == "hf-full" else cfg.train.learning_rate,
                     "lora_r": cfg.lora.r, "augmented": bool(cfg.data.augmented_path),
                     "data": ("seed+aug" if cfg.data.train_on_seed else "aug only") if cfg.data.augmented_path else "seed",
                     "base_model": cfg.model.name,
                     "dev_key_fact_recall": t["metrics"]["qa"]["key_fact_recall"],
                     "dev_mc_acc": t["metrics"]["mc"]["acc"], "train_loss": point["loss"],
                     "dev_key_fact_recall_by_lang": {lang: v["key_fact_recall"]["mean"]
                                                     for lang, v in t["by_lang"]["qa"].items()},
                     "validation_loss": record.get("validation_loss") if step == saved[-1] else None,
                     "train_wall_s": record.get("train_wall_s"), "train_tokens_per_s": record.get("train_tokens_per_s"),
                     "peak_rss_mib": record.get("peak_rss_mib"), "decoding": summary["decoding"],
                     "command": command, "finished_at": record.get("finished_at")})
    RECIPE_DIR.mkdir(parents=True, exist_ok=True)
    with open(RECIPE_DIR / "sweep.jsonl", "a", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    write_sweep_table()
    print(f"bench recipe: {len(rows)} rows in {RECIPE_DIR / 'sweep.jsonl'} ({time.perf_counter() - started:.0f} s)")
    return 0


def planned_steps(cfg) -> tuple[int, int]:
    """(optimizer steps the config will run, steps per epoch): the trainer's own arithmetic."""
    import math
    from harness.data.load import experiment_rows
    train, _ = experiment_rows(cfg.data, cfg.train.seed)
    per_epoch = max(1, math.ceil(len(train) / (cfg.train.batch_size * cfg.distributed.num_processes)) // cfg.train.grad_accum)
    return (cfg.train.max_steps if cfg.train.max_steps > 0 else math.ceil(per_epoch * cfg.train.epochs)), per_epoch


def write_sweep_table() -> None:
    import json
    rows = [json.loads(line) for line in open(RECIPE_DIR / "sweep.jsonl", encoding="utf-8") if line.strip()]
    ci = lambda m: f"{m['mean']:.3f} [{m['ci_low']:.3f}, {m['ci_high']:.3f}]" if m.get("ci_low") is not None else f"{m['mean']:.3f}"
    lines = ["# Recipe sweep (dev set only)", "",
             "Written by `musicprod bench recipe`; one row per evaluated checkpoint. Figures are on the dev set "
             "(benchmarks/musicprod/data/dev), never the held-out. Wall time and peak RSS are the whole training run "
             "of that experiment on this machine.", "",
             "| experiment | system | lr | r | data | step | epoch | dev key-fact recall | dev MC acc | train loss | train wall s | tok/s | peak RSS MiB | command |",
             "| --- | --- | ---: | ---: | --- | ---: | ---: | --- | --- | ---: | ---: | ---: | ---: | --- |"]
    for r in rows:
        data = r.get("data") or ("seed+aug" if r["augmented"] else "seed")
        lines.append(f"| {r['experiment']} | {r['system']} | {r['learning_rate']:g} | {r['lora_r']} | "
                     f"{data} | {r['step']} | {r['epoch']} | {ci(r['dev_key_fact_recall'])} | "
                     f"{ci(r['dev_mc_acc'])} | {r['train_loss']:.3f} | {r['train_wall_s']:.0f} | {r['train_tokens_per_s']:.0f} | "
                     f"{r['peak_rss_mib']:.0f} | `{r['command']}` |")
    (RECIPE_DIR / "sweep.md").write_text("\n".join(lines) + "\n", encoding="utf-8")


def main(what: str, args: list[str]) -> int:
    if what == "recipe":
        return bench_recipe(args)
    if what == "eval":
        return bench_eval(args)
    if what == "train":
        return bench_train(args)
    if what == "gpu":
        from harness.bench.gpu import main as bench_gpu
        return bench_gpu(args)
    raise SystemExit(f"unknown benchmark {what!r}")
