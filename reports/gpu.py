"""The Unsloth vs Hugging Face GPU report: `musicprod report --gpu [RESULTS_DIR ...]` -> reports/out/gpu/.

Input: result folders as `musicprod bench gpu` writes them and benchmarks/results/gpu/ keeps them
(<run>/<part>/summary.json + <run>/<part>/records/<experiment>/<system>.json). Folders measured on the same GPU
are repeats of one another: every ratio is shown per repeat and as the spread across repeats, so a reader sees
how much of a gap is noise. Nothing here is measured; it only reads what the GPU runs recorded.
"""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from harness.bench.figures import PAIRS, pair_ratios
from harness.io import atomic_dir, now_iso
from reports.load import ReportError, read_json
from reports.plots import STYLE, _figure

RESULTS_ROOT = Path("benchmarks/results/gpu")
PART_ORDER = {"gpu-real": 0}
# Published figures the measurements are read against (speed-up = Unsloth tokens/s / HF tokens/s; VRAM saving =
# 1 - Unsloth peak / HF peak). Ranges are the spread of each source's own table. Our HF baseline is PyTorch SDPA,
# whose FlashAttention-2 kernel runs on Hopper, so the "vs HF + FlashAttention-2" rows are the like-for-like ones.
PUBLISHED_CLAIMS = [
    {
        "source": "Unsloth headline (README, Hugging Face organisation page)",
        "url": "https://huggingface.co/spaces/unsloth/README",
        "setting": '"2x (2.2x) faster, 70-80 % less VRAM", mostly 4-bit on 1-70B models',
        "baseline": "HF + FlashAttention-2",
        "pairs": ["LoRA", "QLoRA"],
        "speedup": (2.0, 2.2),
        "vram_saving": (0.70, 0.80),
    },
    {
        "source": "TRL docs, Unsloth integration (1x A100 40GB)",
        "url": "https://huggingface.co/docs/trl/v0.21.0/unsloth_integration",
        "setting": "QLoRA, TinyLlama 1.1B to CodeLlama 34B",
        "baseline": "HF + FlashAttention-2",
        "pairs": ["QLoRA"],
        "speedup": (1.61, 1.95),
        "vram_saving": (0.227, 0.659),
    },
    {
        "source": "LLaMA-Factory wiki, performance comparison (A100)",
        "url": "https://github.com/hiyouga/LLaMA-Factory/wiki/Performance-comparison",
        "setting": "LoRA r 8, LLaMA2-7B, 16-bit, max length 1024",
        "baseline": "HF + FlashAttention-2",
        "pairs": ["LoRA"],
        "speedup": (1.36, 1.36),
        "vram_saving": (0.06, 0.06),
    },
    {
        "source": "LLaMA-Factory wiki, performance comparison (A100)",
        "url": "https://github.com/hiyouga/LLaMA-Factory/wiki/Performance-comparison",
        "setting": "QLoRA r 8, LLaMA2-7B, 4-bit, max length 1024",
        "baseline": "HF (eager attention)",
        "pairs": ["QLoRA"],
        "speedup": (1.54, 1.54),
        "vram_saving": (0.22, 0.22),
    },
]
# one colour per system of the pairs, in pair order: HF blue/green, Unsloth orange/red
SYSTEM_COLORS = dict(
    zip([name for _, hf, unsloth in PAIRS for name in (hf, unsloth)], ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728"])
)


# ---------- loading ----------


def find_result_dirs(root: Path = RESULTS_ROOT) -> list[Path]:
    """Every folder under root holding at least one <part>/summary.json."""
    return sorted({p.parent.parent for p in root.glob("*/*/summary.json")})


def load_run(run_dir: Path) -> dict:
    """One GPU run: its parts' summaries and full records; errors name the file."""
    parts = sorted(run_dir.glob("*/summary.json"))
    if not parts:
        raise ReportError(f"{run_dir}: no <part>/summary.json (expected the output of `musicprod bench gpu`)")
    rows, records, devices, versions, rehearsal, mismatches = [], {}, set(), {}, False, []
    for path in parts:
        summary = read_json(path)
        if not isinstance(summary.get("rows"), list):
            raise ReportError(f"{path}: field 'rows' must be a list of per-system results")
        for i, row in enumerate(summary["rows"]):
            missing = [k for k in ("experiment", "system", "status") if k not in row]
            if missing:
                raise ReportError(f"{path}: rows[{i}] lacks field(s) {', '.join(missing)}")
            rows.append(row)
            rec_path = path.parent / "records" / row["experiment"] / f"{row['system']}.json"
            if rec_path.exists():
                records[(row["experiment"], row["system"])] = read_json(rec_path)
        rehearsal |= bool(summary.get("rehearsal"))
        devices.add(json.dumps(summary.get("device") or {}, sort_keys=True))
        versions.update({k: v for k, v in (summary.get("versions") or {}).items() if v})
        mismatches += [m for ms in (summary.get("settings_mismatches") or {}).values() for m in ms]
    device = json.loads(sorted(devices)[0]) if devices else {}
    gpu = "CPU rehearsal" if rehearsal else device.get("gpu") or "unknown GPU"
    return {
        "dir": run_dir,
        "name": run_dir.name,
        "gpu": gpu,
        "rehearsal": rehearsal,
        "device": device,
        "devices_differ": len(devices) > 1,
        "versions": versions,
        "rows": rows,
        "records": records,
        "pairs": pair_ratios(rows),
        "mismatches": mismatches,
    }


# ---------- comparison ----------


def _spread(values: list[float]) -> dict:
    return {
        "values": values,
        "mean": statistics.fmean(values),
        "min": min(values),
        "max": max(values),
        "n": len(values),
    }


def _spreads(items: list[dict], keys: tuple[str, ...]) -> dict:
    """Per key, the spread of its non-null values over the repeats, or None when no repeat has one."""
    out = {}
    for key in keys:
        values = [x[key] for x in items if x.get(key) is not None]
        out[key] = _spread(values) if values else None
    return out


def _experiment_key(experiment: str) -> tuple:
    """gpu-real first, then synthetic parts by sequence length."""
    digits = "".join(c for c in experiment.rsplit("-s", 1)[-1] if c.isdigit())
    return (PART_ORDER.get(experiment, 1), int(digits) if digits else 0, experiment)


def compare(runs: list[dict]) -> list[dict]:
    """Per GPU, experiment and pair: the speed-up and VRAM savings of every repeat with their spread."""
    grouped = defaultdict(list)
    for run in runs:
        for p in run["pairs"]:
            grouped[(run["gpu"], p["experiment"], p["pair"])].append((run["name"], p))
    out = []
    for (gpu, experiment, pair), entries in sorted(
        grouped.items(), key=lambda kv: (kv[0][0], _experiment_key(kv[0][1]), kv[0][2])
    ):
        ok = [(name, p) for name, p in entries if not p["reason"]]
        row = {
            "gpu": gpu,
            "experiment": experiment,
            "pair": pair,
            "synthetic": entries[0][1]["synthetic"],
            "max_length": entries[0][1]["max_length"],
            "repeats": [name for name, _ in entries],
            "reasons": [f"{name}: {p['reason']}" for name, p in entries if p["reason"]],
        }
        row.update(
            _spreads(
                [p for _, p in ok],
                (
                    "speedup",
                    "vram_allocated_saving",
                    "vram_reserved_saving",
                    "final_train_loss_diff",
                    "validation_loss_diff",
                ),
            )
        )
        row["claims"] = [claim_check(c, row) for c in PUBLISHED_CLAIMS if pair in c["pairs"]]
        out.append(row)
    return out


def _position(value: float, low: float, high: float) -> str:
    return "below" if value < low else "above" if value > high else "within"


def claim_check(claim: dict, row: dict) -> dict:
    """Where the measured mean falls against one published range ('below', 'within', 'above'), or None."""
    speed, vram = row.get("speedup"), row.get("vram_allocated_saving")
    return {
        **claim,
        "speed_vs_claim": _position(speed["mean"], *claim["speedup"]) if speed else None,
        "vram_vs_claim": _position(vram["mean"], *claim["vram_saving"]) if vram else None,
    }


def system_table(runs: list[dict]) -> list[dict]:
    """Absolute figures per GPU, experiment and system, with the spread over repeats."""
    grouped = defaultdict(list)
    for run in runs:
        for r in run["rows"]:
            grouped[(run["gpu"], r["experiment"], r["system"])].append(r)
    order = {s: i for i, s in enumerate(s for _, hf, un in PAIRS for s in (hf, un))}
    out = []
    for (gpu, experiment, system), rows in sorted(
        grouped.items(), key=lambda kv: (kv[0][0], _experiment_key(kv[0][1]), order.get(kv[0][2], 9))
    ):
        ok = [r for r in rows if r.get("status") == "ok"]
        entry = {
            "gpu": gpu,
            "experiment": experiment,
            "system": system,
            "runs": len(rows),
            "ok": len(ok),
            "status": ", ".join(sorted({r.get("status") for r in rows})),
            "reason": "; ".join(sorted({r["reason"] for r in rows if r.get("reason")})),
        }
        entry.update(
            _spreads(
                ok,
                (
                    "steady_tokens_per_s",
                    "step_time_p50_s",
                    "peak_vram_allocated_mib",
                    "peak_vram_reserved_mib",
                    "mfu",
                    "final_train_loss",
                    "validation_loss",
                ),
            )
        )
        out.append(entry)
    return out


# ---------- figures ----------


def ratio_figure(comparison: list[dict]) -> dict | None:
    rows = [r for r in comparison if r["speedup"]]
    if not rows:
        return None
    labels = [
        f"{r['experiment'].removeprefix('gpu-')}\n{r['pair']}"
        + (f"\n{r['gpu']}" if len({x["gpu"] for x in rows}) > 1 else "")
        for r in rows
    ]
    x = np.arange(len(rows))
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(1, 2, figsize=(11, 4))
        for ax, key, ylabel, claim_key in (
            (axes[0], "speedup", "Unsloth tokens/s ÷ HF tokens/s", "speedup"),
            (axes[1], "vram_allocated_saving", "VRAM saved (1 − Unsloth/HF peak allocated)", "vram_saving"),
        ):
            means = [r[key]["mean"] if r[key] else np.nan for r in rows]
            ax.bar(x, means, color=["#8c564b" if r["synthetic"] else "#1f5fbf" for r in rows], zorder=2)
            for i, r in enumerate(rows):  # every repeat as a dot: the spread is visible, not hidden in a mean
                if r[key]:
                    ax.scatter([i] * r[key]["n"], r[key]["values"], color="black", s=14, zorder=3)
            claims = [c for c in PUBLISHED_CLAIMS if "FlashAttention" in c["baseline"]]
            for c in claims:
                low, high = c[claim_key]
                ax.axhspan(low - 0.005, high + 0.005, color="#ffbf00", alpha=0.25, lw=0, zorder=0)
            ax.axhline(1.0 if key == "speedup" else 0.0, color="grey", lw=0.8)
            ax.set_xticks(x, labels, fontsize=8)
            ax.set_ylabel(ylabel)
        axes[0].set_title("Speed-up (bars: mean; dots: repeats)")
        axes[1].set_title("VRAM saving (shaded: published ranges)")
        fig.tight_layout()
    alt = "; ".join(
        f"{r['experiment']} {r['pair']}: speed-up {r['speedup']['mean']:.2f}x"
        + (f", VRAM saved {100 * r['vram_allocated_saving']['mean']:.1f} %" if r["vram_allocated_saving"] else "")
        for r in rows
    )
    return _figure(
        "fig-gpu-ratios",
        "Unsloth relative to Hugging Face, per part and pair",
        f"Two bar charts: Unsloth's speed-up over HF and its VRAM saving, with the published claims shaded. {alt}.",
        fig,
    )


def loss_figure(runs: list[dict]) -> dict | None:
    """The real part's four loss curves, one panel per pair, from the first run that has them."""
    for run in runs:
        curves = {s: run["records"].get(("gpu-real", s), {}).get("loss_curve") for _, hf, un in PAIRS for s in (hf, un)}
        if any(curves.values()):
            break
    else:
        return None
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(1, len(PAIRS), figsize=(10, 3.6), sharey=True)
        for ax, (label, hf, un) in zip(axes, PAIRS):
            for system in (hf, un):
                curve = curves.get(system)
                if curve:
                    ax.plot(
                        [p["step"] for p in curve],
                        [p["loss"] for p in curve],
                        marker=".",
                        color=SYSTEM_COLORS[system],
                        label=system,
                    )
            ax.set(title=label, xlabel="optimizer step")
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=8)
        axes[0].set_ylabel("train loss (nats/token)")
        fig.tight_layout()
    finals = "; ".join(f"{s}: final {c[-1]['loss']:.3f}" for s, c in curves.items() if c)
    return _figure(
        "fig-gpu-loss",
        f"Loss curves of the real part ({run['name']}, {run['gpu']})",
        f"Two line charts of training loss per optimizer step, HF and Unsloth overlaid for LoRA and for "
        f"QLoRA. {finals}.",
        fig,
    )


def sweep_figure(table: list[dict]) -> dict | None:
    """Synthetic sweep: steady tokens/s and peak VRAM against sequence length, one line per system."""
    rows = [r for r in table if r["experiment"].startswith("gpu-synthetic-s") and r["steady_tokens_per_s"]]
    if not rows:
        return None
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
        for system in dict.fromkeys(r["system"] for r in rows):
            pts = sorted((_experiment_key(r["experiment"])[1], r) for r in rows if r["system"] == system)
            xs = [seq for seq, _ in pts]
            axes[0].plot(
                xs,
                [r["steady_tokens_per_s"]["mean"] for _, r in pts],
                marker="o",
                color=SYSTEM_COLORS.get(system),
                label=system,
            )
            axes[1].plot(
                xs,
                [(r["peak_vram_allocated_mib"] or {}).get("mean", np.nan) / 1024 for _, r in pts],
                marker="o",
                color=SYSTEM_COLORS.get(system),
                label=system,
            )
        for ax in axes:
            ax.set_xscale("log", base=2)
            ax.set_xlabel("sequence length (tokens; same tokens per step)")
        axes[0].set(ylabel="steady tokens/s", title="Throughput, synthetic 1B model")
        axes[1].set(ylabel="peak VRAM allocated (GiB)", title="Memory, synthetic 1B model")
        axes[0].legend(fontsize=8)
        fig.tight_layout()
    alt = "; ".join(
        f"{r['system']} at {r['experiment'].rsplit('-s', 1)[-1]}: {r['steady_tokens_per_s']['mean']:,.0f} tokens/s"
        for r in rows
    )
    return _figure(
        "fig-gpu-sweep",
        "Synthetic Llama-3.2-1B-shaped model: throughput and memory by sequence length",
        f"Two line charts against sequence length, one line per system (random weights: speed and memory only). {alt}.",
        fig,
    )


# ---------- output ----------


def build_context(runs: list[dict]) -> dict:
    table = system_table(runs)
    comparison = compare(runs)
    return {
        "created_at": now_iso(),
        "runs": runs,
        "table": table,
        "comparison": comparison,
        "claims": PUBLISHED_CLAIMS,
        "figures": {"ratios": ratio_figure(comparison), "loss": loss_figure(runs), "sweep": sweep_figure(table)},
    }


def build_gpu_report(result_dirs: list[Path], out_root: str | Path = "reports/out") -> Path:
    """Write OUT/gpu/{index.html, summary.json} in one rename; returns index.html."""
    from reports.build import _env

    if not result_dirs:
        raise ReportError(
            f"no GPU results: nothing under {RESULTS_ROOT}/<run>/<part>/summary.json. Run "
            f"`musicprod bench gpu` on a CUDA machine first (procedure: {RESULTS_ROOT}/README.md)"
        )
    runs = [load_run(Path(d)) for d in result_dirs]
    ctx = build_context(runs)
    html = _env(True).get_template("gpu.html.j2").render(**ctx)
    summary = {
        "created_at": ctx["created_at"],
        "runs": [
            {
                "name": r["name"],
                "dir": str(r["dir"]),
                "gpu": r["gpu"],
                "device": r["device"],
                "versions": r["versions"],
                "settings_mismatches": r["mismatches"],
            }
            for r in runs
        ],
        "systems": ctx["table"],
        "comparison": ctx["comparison"],
    }
    final = Path(out_root) / "gpu"
    with atomic_dir(final) as tmp:
        (tmp / "index.html").write_text(html, encoding="utf-8")
        (tmp / "summary.json").write_text(
            json.dumps(summary, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8"
        )
    return final / "index.html"
