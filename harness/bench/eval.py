"""`musicprod bench eval`: the full held-out for one adapter, merged into the weights vs attached."""

from __future__ import annotations

from pathlib import Path


def bench_eval(args: list[str]) -> int:
    """Full held-out evaluation of one adapter, merged into the weights vs attached; prints the figures."""
    import json
    import shutil

    from harness.config import experiment_config
    from harness.eval.run import run_eval
    from harness.layout import resolve_experiment

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
        settings = experiment_config(
            source, [*overrides, "eval.include_base=false", f"eval.merge_adapter={merged}"]
        ).eval
        summary = run_eval(scratch, settings)
        meta = json.loads((scratch / "eval" / system / "results.json").read_text())["musicprod"]
        rows.append((merged, settings, meta, summary["targets"][system]["metrics"]))
    print(
        f"\nbench eval: {system} from {source}, batch {settings.batch_size}, {settings.dtype}, "
        f"max_gen_toks {settings.max_gen_toks}, limit {settings.limit or 'none'}"
    )
    print(
        f"{'adapter':9s} {'QA':>4s} {'MC':>4s} {'wall s':>7s} {'items/s':>8s} {'gen tokens':>10s} {'gen tok/s':>9s} {'key-fact recall':>15s} {'MC acc':>7s}"
    )
    for merged, _, meta, metrics in rows:
        n = meta["n_items"]
        print(
            f"{'merged' if merged else 'attached':9s} {n.get('qa', 0):4d} {n.get('mc', 0):4d} {meta['wall_s']:7.1f} "
            f"{meta['items_per_s']:8.3f} {meta['generated_tokens']:10d} {meta['generated_tokens_per_s']:9.1f} "
            f"{metrics['qa']['key_fact_recall']['mean']:15.3f} {metrics['mc']['acc']['mean']:7.3f}"
        )
    return 0
