"""`musicprod bench gpu` (also `python -m harness.bench.gpu`): Unsloth vs Hugging Face on one CUDA GPU.

Two parts, every system in its own fresh process (harness.pipeline.train_system), same data and settings:
- real: hf-lora, hf-qlora, unsloth-lora, unsloth-qlora on the experiment's base model and training data
  (experiment `gpu-real`; adapters come back for CPU-side evaluation like any other);
- synthetic: the same four systems on a Llama-3.2-1B-shaped model with random weights (speed and memory do not
  depend on weight values), at two sequence lengths, on full-length sequences (experiments `gpu-synthetic-s<L>`).
  Records say `"synthetic": true`; their losses mean nothing.

Warm-up steps are excluded from steady tokens/s and step time p50 (trainers.common.WARMUP_STEPS_EXCLUDED).
MFU = steady tokens/s x FLOPs per token / the GPU's dense bf16 peak (PaLM, appendix B: 6N + 12 L d T per token;
it counts the weight gradients a frozen LoRA base skips, so it is the conventional model-FLOPs utilisation).
Figures land in OUT/summary.json and OUT/records/<experiment>/<system>.json (see benchmarks/results/gpu/README.md).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from harness.bench.figures import PAIRS, flops_per_token, mfu, pair_ratios, peak_bf16_tflops  # noqa: F401 (re-exported)
from harness.config import load_config, to_dict
from harness.io import now_iso, write_json_atomic
from harness.records import device_info, git_sha, package_versions

SYSTEMS = [hf for _, hf, _ in PAIRS] + [unsloth for _, _, unsloth in PAIRS]  # the HF systems first
REAL_EXPERIMENT = "gpu-real"
SYNTHETIC_SEQ_LENS = [512, 2048]
SYNTHETIC_TOKENS_PER_STEP = 8192  # batch = this / seq len: the same work per step at every length
SYNTHETIC_STEPS = 30
# Llama-3.2-1B's published shape (config.json of meta-llama/Llama-3.2-1B) except the vocabulary: it must match
# the tokenizer the data is encoded with (SmolLM2's, 49152 tokens) instead of Llama 3's 128256.
LLAMA_32_1B_SHAPE = {
    "hidden_size": 2048,
    "num_hidden_layers": 16,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "intermediate_size": 8192,
    "head_dim": 64,
    "rope_theta": 500000.0,
    "rms_norm_eps": 1e-5,
    "tie_word_embeddings": True,
    "max_position_embeddings": 8192,
}
RECORD_FIGURES = [
    "status",
    "reason",
    "steps",
    "train_tokens",
    "train_tokens_per_s",
    "steady_tokens_per_s",
    "step_time_p50_s",
    "peak_vram_allocated_mib",
    "peak_vram_reserved_mib",
    "final_train_loss",
    "validation_loss",
    "train_wall_s",
    "wall_s",
]


def model_shape(model_path: str) -> dict:
    """Parameter count and shape from config.json alone (meta device: no weights read, no memory used)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(model_path)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return {
        "n_params": sum(p.numel() for p in model.parameters()),
        "n_layers": config.num_hidden_layers,
        "hidden": config.hidden_size,
        "vocab_size": config.vocab_size,
    }


def synthetic_config(vocab_size: int, eos_id: int, pad_id: int, bos_id: int | None, **shape):
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=vocab_size,
        eos_token_id=eos_id,
        pad_token_id=pad_id,
        bos_token_id=bos_id,
        **{**LLAMA_32_1B_SHAPE, **shape},
    )


def build_synthetic_model(out_dir: Path, tokenizer_dir: str, seed: int = 0, **shape) -> Path:
    """A Llama-3.2-1B-shaped model with random (seeded) weights and SmolLM2's tokenizer, saved as an HF folder."""
    import torch
    from transformers import AutoTokenizer, LlamaForCausalLM

    from harness.io import atomic_dir

    marker = out_dir / "musicprod_model.json"
    if marker.exists():
        return out_dir
    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = synthetic_config(len(tok), tok.eos_token_id, tok.pad_token_id, tok.bos_token_id, **shape)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).to(torch.bfloat16)
    with atomic_dir(out_dir) as tmp:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        write_json_atomic(
            tmp / "musicprod_model.json",
            {
                "synthetic": True,
                "shape": "Llama-3.2-1B with SmolLM2's vocabulary" + (f", overridden: {shape}" if shape else ""),
                "config": {
                    k: v for k, v in config.to_dict().items() if k in LLAMA_32_1B_SHAPE or k == "rope_parameters"
                },
                "vocab_size": config.vocab_size,
                "seed": seed,
                "parameters": sum(p.numel() for p in model.parameters()),
                "tokenizer": str(tokenizer_dir),
            },
        )
    return out_dir


def synthetic_dataset(path: Path, train_path: str, min_chars: int, n_items: int) -> Path:
    """Real instructions with answers made of real answers strung together, each longer than the sequence
    length, so every example is truncated to exactly max_length tokens (no padding, answer-only loss)."""
    from harness.data.load import load_training_set

    rows = load_training_set(train_path)
    out = []
    for i in range(n_items):
        row, parts, k = dict(rows[i % len(rows)]), [], i
        while sum(len(p) for p in parts) < min_chars:
            parts.append(rows[k % len(rows)]["response"])
            k += 7
        row.update(id=f"synthetic-{i:05d}", response="\n\n".join(parts))
        out.append(row)
    write_json_atomic(path, out)
    return path


def plan(args, cfg) -> list[dict]:
    """Every training run of the benchmark, in order: experiment name, system, overrides, labels."""
    runs = []
    if args.part in ("real", "all"):
        for system in args.systems:
            runs.append(
                {
                    "experiment": REAL_EXPERIMENT,
                    "system": system,
                    "synthetic": False,
                    "max_length": cfg.train.max_length,
                    "batch_size": cfg.train.batch_size,
                    "max_steps": cfg.train.max_steps,
                    "overrides": [f"name={REAL_EXPERIMENT}"],
                }
            )
    if args.part in ("synthetic", "all"):
        for seq in args.seq_lens:
            batch = max(1, args.synthetic_tokens_per_step // seq)
            for system in args.systems:
                runs.append(
                    {
                        "experiment": f"gpu-synthetic-s{seq}",
                        "system": system,
                        "synthetic": True,
                        "max_length": seq,
                        "batch_size": batch,
                        "max_steps": args.synthetic_steps,
                        "overrides": [
                            f"name=gpu-synthetic-s{seq}",
                            f"train.max_length={seq}",
                            f"train.batch_size={batch}",
                            "train.grad_accum=1",
                            f"train.max_steps={args.synthetic_steps}",
                            "train.logging_steps=5",
                            "data.validation_fraction=0",
                            "data.max_train_items=0",
                            "train.group_by_length=false",
                        ],
                    }
                )
    return runs


def print_plan(runs: list[dict], cfg, args) -> None:
    print(f"bench gpu plan ({len(runs)} training processes, each fresh; warm-up steps excluded from steady figures)")
    print(
        f"  real model: {cfg.model.name}; data {cfg.data.train_path}; lr {cfg.train.learning_rate}, "
        f"{cfg.train.lr_scheduler}, LoRA r {cfg.lora.r} alpha {cfg.lora.alpha} dropout {cfg.lora.dropout}, bf16 {cfg.train.bf16}"
    )
    if any(r["synthetic"] for r in runs):
        print(f"  synthetic model: Llama-3.2-1B shape, random weights, SmolLM2 vocabulary, at {args.synthetic_dir}")
    print(f"  {'experiment':22s} {'system':14s} {'synthetic':9s} {'max_length':>10s} {'batch':>5s} {'steps':>6s}")
    for r in runs:
        steps = "epoch" if r["max_steps"] == -1 else str(r["max_steps"])
        print(
            f"  {r['experiment']:22s} {r['system']:14s} {str(r['synthetic']).lower():9s} {r['max_length']:10d} "
            f"{r['batch_size']:5d} {steps:>6s}"
        )


def row_of(record: dict, run: dict, shape: dict, gpu: str | None) -> dict:
    steps, tokens = record.get("steps") or 0, record.get("train_tokens") or 0
    sequences = steps * run["batch_size"] * (record.get("effective_settings") or {}).get("grad_accum", 1)
    seq_len = run["max_length"] if run["synthetic"] else (tokens / sequences if sequences else run["max_length"])
    fpt = flops_per_token(shape["n_params"], shape["n_layers"], shape["hidden"], seq_len)
    return {
        "experiment": run["experiment"],
        "system": run["system"],
        "synthetic": run["synthetic"],
        "max_length": run["max_length"],
        "batch_size": run["batch_size"],
        **{k: record.get(k) for k in RECORD_FIGURES},
        "flops_per_token": round(fpt),
        "mean_seq_len_for_mfu": round(seq_len, 1),
        "mfu": mfu(record.get("steady_tokens_per_s"), fpt, gpu),
        "peak_bf16_tflops": peak_bf16_tflops(gpu),
    }


def settings_mismatches(records: dict) -> list[str]:
    """Systems of one experiment whose effective settings differ from the first ok one (should be none)."""
    ok = {s: r["effective_settings"] for s, r in records.items() if r.get("status") == "ok"}
    if not ok:
        return []
    first, reference = next(iter(ok.items()))
    return [
        f"{s} differs from {first}: "
        + ", ".join(f"{k}={v!r} vs {reference.get(k)!r}" for k, v in e.items() if reference.get(k) != v)
        for s, e in ok.items()
        if e != reference
    ]


def synthetic_model_dir(args) -> Path:
    """One folder per shape, so a shrunken rehearsal model is never mistaken for the 1B one (or vice versa)."""
    if not args.synthetic_shape:
        return Path(args.synthetic_dir)
    tag = "-".join(f"{k}{v}" for k, v in sorted(args.synthetic_shape.items()))
    return Path(f"{args.synthetic_dir}-{tag}")


def run_all(runs, args, config_path, user_overrides, cfg) -> dict:
    from harness.models import ResolvedModel
    from harness.pipeline import check_and_prepare, train_system

    real_model = check_and_prepare(cfg)
    out = Path(args.out)
    gpu = device_info().get("gpu")
    shapes, records, rows = {}, {}, []
    synthetic_model = None
    for run in runs:
        overrides = [*user_overrides, *run["overrides"]]
        model = real_model
        if run["synthetic"]:
            if synthetic_model is None:
                path = build_synthetic_model(synthetic_model_dir(args), real_model.path, **args.synthetic_shape)
                synthetic_model = ResolvedModel("synthetic-llama-3.2-1b-shape", str(path), None, {"synthetic": True})
            data = synthetic_dataset(
                Path(args.synthetic_dir + "-data")
                / f"s{run['max_length']}-n{run['max_steps'] * run['batch_size']}.json",
                cfg.data.train_path,
                min_chars=run["max_length"] * 6,
                n_items=run["max_steps"] * run["batch_size"],
            )
            overrides.append(f"data.train_path={data}")
            model = synthetic_model
        run_cfg = load_config(config_path, overrides)
        print(f"\n=== bench gpu: {run['experiment']} / {run['system']} ===", flush=True)
        record = train_system(run_cfg, config_path, overrides, run["system"], model)
        record["synthetic"] = run["synthetic"]
        if model.path not in shapes:
            shapes[model.path] = model_shape(model.path)
        row = row_of(record, run, shapes[model.path], gpu)
        record["mfu"] = {k: row[k] for k in ("mfu", "flops_per_token", "mean_seq_len_for_mfu", "peak_bf16_tflops")}
        write_json_atomic(run_cfg.experiment_dir / run["system"] / "run.json", record)
        write_json_atomic(out / "records" / run["experiment"] / f"{run['system']}.json", record)
        records.setdefault(run["experiment"], {})[run["system"]] = record
        rows.append(row)
    summary = {
        "written_at": now_iso(),
        "rehearsal": args.cpu_rehearsal,
        "device": device_info(),
        "versions": package_versions(),
        "git_sha": git_sha(),
        "config": to_dict(cfg),
        "model_shapes": shapes,
        "rows": rows,
        "settings_mismatches": {e: settings_mismatches(r) for e, r in records.items()},
        "pairs": pair_ratios(rows),
        "notes": [
            "synthetic rows: random weights, losses meaningless; speed and memory only",
            "MFU: steady tokens/s x (6N + 12 L d T) / dense bf16 peak; null for an unknown GPU",
        ],
    }
    write_json_atomic(out / "summary.json", summary)
    return summary


def _fmt(x: float | None, unit: str) -> str:
    if x is None:
        return "-"
    return f"{x:.2f}x" if unit == "x" else f"{100 * x:.1f} %"


def print_summary(summary: dict) -> None:
    where = "CPU REHEARSAL (not GPU figures)" if summary.get("rehearsal") else summary["device"].get("gpu")
    print(
        f"\nbench gpu on {where} (torch {summary['versions'].get('torch')}, "
        f"unsloth {summary['versions'].get('unsloth')}, trl {summary['versions'].get('trl')})"
    )
    print(
        f"{'experiment':22s} {'system':14s} {'status':8s} {'steady tok/s':>12s} {'step p50 s':>10s} "
        f"{'VRAM alloc MiB':>14s} {'VRAM resv MiB':>13s} {'MFU':>6s} {'train loss':>10s} {'val loss':>8s}"
    )
    for r in summary["rows"]:
        print(
            f"{r['experiment']:22s} {r['system']:14s} {r['status']:8s} {r['steady_tokens_per_s']!s:>12s} "
            f"{r['step_time_p50_s']!s:>10s} {r['peak_vram_allocated_mib']!s:>14s} {r['peak_vram_reserved_mib']!s:>13s} "
            f"{r['mfu']!s:>6s} {r['final_train_loss']!s:>10s} {r['validation_loss']!s:>8s}"
            + (f"  {r['reason']}" if r["status"] != "ok" else "")
        )
    print(
        f"\n{'experiment':22s} {'pair':6s} {'speed-up':>9s} {'VRAM alloc saved':>16s} {'VRAM resv saved':>15s} "
        f"{'train loss diff':>15s}   (Unsloth relative to HF)"
    )
    for p in summary.get("pairs") or pair_ratios(summary["rows"]):
        if p["reason"]:
            print(f"{p['experiment']:22s} {p['pair']:6s} no comparison: {p['reason']}")
            continue
        print(
            f"{p['experiment']:22s} {p['pair']:6s} {_fmt(p['speedup'], 'x'):>9s} {_fmt(p['vram_allocated_saving'], '%'):>16s} "
            f"{_fmt(p['vram_reserved_saving'], '%'):>15s} {p['final_train_loss_diff']!s:>15s}"
        )
    for experiment, problems in summary["settings_mismatches"].items():
        for p in problems:
            print(f"WARNING {experiment}: effective settings differ: {p}")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="musicprod bench gpu", description=__doc__.split("\n\n")[0])
    p.add_argument("args", nargs="*", help="[CONFIG.yaml] [key=value ...] for the real part (and shared settings)")
    p.add_argument("--dry-run", action="store_true", help="print the plan (systems, steps, sequence lengths) and exit")
    p.add_argument("--part", choices=["real", "synthetic", "all"], default="all")
    p.add_argument(
        "--systems", type=lambda s: s.split(","), default=SYSTEMS, help="comma-separated (default: all four)"
    )
    p.add_argument("--seq-lens", type=lambda s: [int(x) for x in s.split(",")], default=SYNTHETIC_SEQ_LENS)
    p.add_argument("--synthetic-steps", type=int, default=SYNTHETIC_STEPS)
    p.add_argument(
        "--synthetic-tokens-per-step",
        type=int,
        default=SYNTHETIC_TOKENS_PER_STEP,
        help="batch = this / sequence length, the same work per step at every length",
    )
    p.add_argument(
        "--synthetic-dir",
        default="/tmp/musicprod-synthetic-llama-1b",
        help="where the random-weight model is saved (~2.2 GB, built once)",
    )
    p.add_argument("--out", default="runs/gpu-bench", help="summary.json and records/<experiment>/<system>.json")
    p.add_argument(
        "--synthetic-shape",
        type=_shape_overrides,
        default={},
        metavar="KEY=VALUE,...",
        help="override the synthetic model's Llama config (e.g. hidden_size=64,num_hidden_layers=2); "
        "for rehearsals, never for reported figures",
    )
    p.add_argument(
        "--cpu-rehearsal",
        action="store_true",
        help="run the whole benchmark without CUDA to check the procedure (summary says rehearsal: true; "
        "its figures are CPU figures and must never be reported as GPU results)",
    )
    return p


def _shape_overrides(text: str) -> dict:
    out = {}
    for pair in filter(None, text.split(",")):
        key, sep, value = pair.partition("=")
        if not sep or key not in LLAMA_32_1B_SHAPE:
            raise argparse.ArgumentTypeError(
                f"{pair!r}: expected KEY=VALUE with KEY one of {', '.join(LLAMA_32_1B_SHAPE)}"
            )
        out[key] = (
            type(LLAMA_32_1B_SHAPE[key])(value) if not isinstance(LLAMA_32_1B_SHAPE[key], bool) else value == "true"
        )
    return out


def main(argv: list[str]) -> int:
    from harness.config import split_config_args

    args = parser().parse_args(argv)
    config_path, overrides = split_config_args(args.args)
    cfg = load_config(config_path, overrides)
    runs = plan(args, cfg)
    if args.dry_run:
        print_plan(runs, cfg, args)
        return 0
    import torch

    if args.cpu_rehearsal:
        print("bench gpu: CPU REHEARSAL: checks the procedure end to end; its figures are not GPU figures", flush=True)
    elif not torch.cuda.is_available():
        print(
            "musicprod bench gpu: error: no CUDA device (torch.cuda.is_available() is False). This benchmark "
            "measures GPU speed and VRAM and runs only on a CUDA machine; see benchmarks/results/gpu/README.md "
            "for the run procedure, or --dry-run for the plan.",
            file=sys.stderr,
        )
        return 2
    import importlib.util

    if importlib.util.find_spec("unsloth") is None:
        print("bench gpu: warning: unsloth is not importable; its systems will be recorded as skipped", flush=True)
    print_plan(runs, cfg, args)
    summary = run_all(runs, args, config_path, overrides, cfg)
    print_summary(summary)
    return 0 if all(r["status"] in ("ok", "skipped") for r in summary["rows"]) else 1


if __name__ == "__main__":
    from harness import set_offline_env

    set_offline_env()
    sys.exit(main(sys.argv[1:]))
