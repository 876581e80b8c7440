"""`musicprod bench train`: throughput and memory of the HF systems on the real data; `--ablate` measures each
CPU speed-up's share back to back."""

from __future__ import annotations

from harness.config import load_config

TRAIN_BENCH_DEFAULTS = [
    "name=bench-train",
    "systems=[hf-lora,hf-qlora,hf-full]",
    "train.max_steps=12",
    "train.logging_steps=4",
    "data.validation_fraction=0",
]
# --ablate: hf-lora with each CPU speed-up switched off in turn, back to back on the same data (this machine is
# noisy; A/B in one run is the only honest comparison), and with all of them off (the code as it was).
ABLATIONS = {
    "all speed-ups (default)": [],
    "allocator glibc": ["train.allocator=glibc"],
    "fp32 adapters": ["train.adapter_dtype=float32"],
    "no torch.compile": ["train.compile=false"],
    "none (as landed before)": ["train.allocator=glibc", "train.adapter_dtype=float32", "train.compile=false"],
}


def bench_train(args: list[str]) -> int:
    """Throughput and memory of the HF systems on the real data (`--ablate`: each speed-up's share, 30 steps,
    with each variant's loss curve against the all-off one)."""
    from harness.config import split_config_args
    from harness.pipeline import check_and_prepare, train_system

    ablate = "--ablate" in args
    config_path, overrides = split_config_args([a for a in args if a != "--ablate"])
    overrides = (
        TRAIN_BENCH_DEFAULTS
        + (["systems=[hf-lora]", "train.max_steps=30", "train.logging_steps=1"] if ablate else [])
        + overrides
    )
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
    print(
        f"\nbench train: {cfg.model.name}, {cfg.train.max_steps} steps, batch {cfg.train.batch_size}, "
        f"bf16={cfg.train.bf16}, warm-up steps excluded from steady figures"
    )
    print(
        f"{'variant':26s} {'system':9s} {'status':7s} {'tok/s':>7s} {'steady':>7s} {'step p50':>8s} "
        f"{'peak RSS MiB':>12s} {'loss vs none':>12s}  settings"
    )
    reference = next((r for label, r in rows if label.startswith("none")), None)
    for label, r in rows:
        s = r.get("effective_settings") or {}
        print(
            f"{label or '-':26s} {r['system']:9s} {r['status']:7s} {r.get('train_tokens_per_s', '-')!s:>7s} "
            f"{r.get('steady_tokens_per_s', '-')!s:>7s} {r.get('step_time_p50_s', '-')!s:>8s} "
            f"{r.get('peak_rss_mib', '-')!s:>12s} {_loss_deviation(r, reference):>12s}  "
            f"{s.get('allocator')}, adapters {s.get('adapter_dtype')}, compile {s.get('torch_compile')}"
            + (f"  {r.get('reason')}" if r["status"] != "ok" else "")
        )
    return 0 if all(r["status"] in ("ok", "skipped") for _, r in rows) else 1


def _slug(label: str) -> str:
    return "-".join(w for w in "".join(c if c.isalnum() else " " for c in label.lower()).split())[:40]


def _loss_deviation(record: dict, reference: dict | None) -> str:
    """Largest relative difference of the per-step training loss from the reference run ('-' when not comparable)."""
    if not reference or record is reference or not record.get("loss_curve") or not reference.get("loss_curve"):
        return "-"
    pairs = list(zip([p["loss"] for p in record["loss_curve"]], [p["loss"] for p in reference["loss_curve"]]))
    return f"{100 * max(abs(a - b) / b for a, b in pairs):.2f} %"
