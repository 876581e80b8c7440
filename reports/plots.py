"""Report figures: matplotlib (Agg) rendered to SVG and embedded as data URIs, each with a descriptive alt text.

Every function returns {"id", "title", "alt", "src"} or None when the experiment has no data for the figure.
"""

from __future__ import annotations

import base64
import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from harness.layout import BASE_TARGET  # noqa: E402
from reports.champion import metric, paired, peak_memory_mib  # noqa: E402
from reports.load import Experiment  # noqa: E402

# Text stays text in the SVG (small, selectable); a fixed hash salt and no date keep the output reproducible.
STYLE = {
    "svg.fonttype": "none",
    "svg.hashsalt": "musicprod",
    "font.size": 10,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "figure.dpi": 100,
}
BASE_COLOR = "#7f7f7f"

# (task, metric, label, scale): what quality plots show; scale multiplies the stored value for display.
QUALITY_METRICS = [
    ("qa", "key_fact_recall", "QA key-fact recall (%)", 100),
    ("mc", "acc", "MC accuracy (%)", 100),
    ("mc", "acc_norm", "MC accuracy, length-normalised (%)", 100),
    ("qa", "rougeL", "QA ROUGE-L (0–1)", 1),
    ("qa", "semscore", "QA SemScore (cosine, 0–1)", 1),
    ("qa", "chrf", "QA chrF (0–100)", 1),
    ("qa", "bleu", "QA BLEU (0–100)", 1),
]


def colors(names: list[str]) -> dict[str, str]:
    cmap = plt.get_cmap("tab10")
    systems = [n for n in names if n != BASE_TARGET]
    out = {n: matplotlib.colors.to_hex(cmap(i % 10)) for i, n in enumerate(systems)}
    out[BASE_TARGET] = BASE_COLOR
    return out


def _svg(fig) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None})
    plt.close(fig)
    return "data:image/svg+xml;base64," + base64.b64encode(buf.getvalue().encode("utf-8")).decode("ascii")


def _figure(fig_id: str, title: str, alt: str, fig) -> dict:
    wide = fig.get_size_inches()[0] >= 9 and len(fig.axes) > 1  # multi-panel: scrolls rather than shrinks on phones
    return {"id": fig_id, "title": title, "alt": alt, "src": _svg(fig), "wide": bool(wide)}


def _trained(exp: Experiment) -> list[str]:
    return [s for s in exp.ok_systems if exp.records[s].get("loss_curve")]


def loss_curves(exp: Experiment) -> dict | None:
    systems = _trained(exp)
    if not systems:
        return None
    col = colors(list(exp.records))
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharey=True)
        for s in systems:
            rec = exp.records[s]
            curve = rec["loss_curve"]
            steps = [p["step"] for p in curve]
            axes[0].plot(steps, [p["loss"] for p in curve], marker=".", color=col[s], label=f"{s} train")
            if all(p.get("tokens") is not None for p in curve):
                axes[1].plot(
                    [p["tokens"] / 1000 for p in curve],
                    [p["loss"] for p in curve],
                    marker=".",
                    color=col[s],
                    label=f"{s} train",
                )
            if rec.get("validation_loss") is not None:
                axes[0].scatter(
                    [steps[-1]],
                    [rec["validation_loss"]],
                    marker="X",
                    s=70,
                    color=col[s],
                    zorder=3,
                    edgecolor="black",
                    label=f"{s} validation",
                )
                if rec.get("train_tokens"):
                    axes[1].scatter(
                        [rec["train_tokens"] / 1000],
                        [rec["validation_loss"]],
                        marker="X",
                        s=70,
                        color=col[s],
                        zorder=3,
                        edgecolor="black",
                    )
        axes[0].set(xlabel="optimizer step", ylabel="cross-entropy loss (nats/token)", title="loss per step")
        axes[1].set(xlabel="answer tokens seen (thousands)", title="loss per token")
        axes[0].legend(fontsize=8)
        fig.tight_layout()
    finals = ", ".join(
        f"{s}: train {exp.records[s].get('final_train_loss', float('nan')):.2f}, validation "
        f"{exp.records[s].get('validation_loss') or float('nan'):.2f} nats/token"
        for s in systems
    )
    return _figure(
        "fig-loss",
        "Training loss per step and per token",
        f"Two line charts of training loss (nats per token), against optimizer step and against answer "
        f"tokens seen, one line per system; crosses mark validation loss. Final values: {finals}.",
        fig,
    )


def _bars(
    exp: Experiment,
    fig_id: str,
    title: str,
    ylabel: str,
    values: dict[str, list[float | None]],
    series: list[str],
    alt_unit: str,
) -> dict | None:
    systems = [s for s in values if any(v is not None for v in values[s])]
    if not systems:
        return None
    col = colors(list(exp.records))
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(7, 0.5 + 0.55 * len(systems) * len(series)))
        height = 0.8 / len(series)
        for j, name in enumerate(series):
            ys = np.arange(len(systems)) + j * height
            vals = [values[s][j] or 0 for s in systems]
            bars = ax.barh(
                ys, vals, height=height * 0.9, color=[col[s] for s in systems], alpha=1 - 0.35 * j, label=name
            )
            ax.bar_label(bars, labels=[f"{v:,.0f}" if v >= 100 else f"{v:.2f}" for v in vals], padding=3, fontsize=8)
        ax.set_yticks(np.arange(len(systems)) + height * (len(series) - 1) / 2, systems)
        ax.invert_yaxis()
        ax.set(xlabel=ylabel, title=title)
        ax.margins(x=0.18)
        if len(series) > 1:
            ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
        fig.tight_layout()
    alt = "; ".join(
        f"{s}: " + ", ".join(f"{name} {v:,.1f} {alt_unit}" for name, v in zip(series, values[s]) if v is not None)
        for s in systems
    )
    return _figure(fig_id, title, f"Horizontal bar chart, {title.lower()}, one bar group per system. {alt}.", fig)


def throughput(exp: Experiment) -> dict | None:
    values = {
        s: [exp.records[s].get("train_tokens_per_s"), exp.records[s].get("steady_tokens_per_s")] for s in exp.ok_systems
    }
    return _bars(
        exp,
        "fig-throughput",
        "Training throughput",
        "answer tokens per second",
        values,
        ["overall", "steady state"],
        "tokens/s",
    )


def memory(exp: Experiment) -> dict | None:
    values = {s: [(peak_memory_mib(exp.records[s]) or 0) / 1024 or None] for s in exp.ok_systems}
    kinds = {"VRAM" if exp.records[s].get("peak_vram_allocated_mib") else "RSS" for s in exp.ok_systems}
    label = " / ".join(sorted(kinds))
    return _bars(exp, "fig-memory", f"Peak memory ({label})", f"peak {label} (GiB)", values, ["peak"], "GiB")


def _ci_err(stats: list[dict | None], scale: float) -> tuple[list[float], np.ndarray]:
    means = [s["mean"] * scale if s else np.nan for s in stats]
    lo = [(s["mean"] - s["ci_low"]) * scale if s and s.get("ci_low") is not None else 0 for s in stats]
    hi = [(s["ci_high"] - s["mean"]) * scale if s and s.get("ci_high") is not None else 0 for s in stats]
    return means, np.array([lo, hi])


def quality(exp: Experiment) -> dict | None:
    targets = exp.eval_targets
    shown = [m for m in QUALITY_METRICS if any(metric(exp, t, m[0], m[1]) for t in targets)]
    if not targets or not shown:
        return None
    col = colors(targets)
    ncols = 2
    nrows = -(-len(shown) // ncols)
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(nrows, ncols, figsize=(10, (0.9 + 0.32 * len(targets)) * nrows + 0.3), squeeze=False)
        for ax, (task, name, label, scale) in zip(axes.flat, shown):
            stats = [metric(exp, t, task, name) for t in targets]
            means, err = _ci_err(stats, scale)
            ax.barh(
                range(len(targets)),
                means,
                xerr=err,
                color=[col[t] for t in targets],
                capsize=3,
                error_kw={"elinewidth": 1},
            )
            ax.set_yticks(range(len(targets)), targets)
            ax.invert_yaxis()
            ax.set_title(label, fontsize=10)
            for i, m in enumerate(means):
                if not np.isnan(m):
                    ax.text(
                        m + err[1][i], i, f" {m:.1f}" if scale == 100 or m > 1 else f" {m:.3f}", va="center", fontsize=8
                    )
            ax.margins(x=0.2)
            ax.set_xlim(left=0, right=max(ax.get_xlim()[1], 1))  # scores are >= 0; keeps an all-zero panel readable
        for ax in list(axes.flat)[len(shown) :]:
            ax.set_visible(False)
        fig.tight_layout()
    alt_parts = []
    for task, name, label, scale in shown[:2]:
        vals = [(t, metric(exp, t, task, name)) for t in targets]
        alt_parts.append(
            f"{label}: "
            + ", ".join(
                f"{t} {s['mean'] * scale:.1f} (95 % CI {s['ci_low'] * scale:.1f} to {s['ci_high'] * scale:.1f})"
                for t, s in vals
                if s and s.get("ci_low") is not None
            )
        )
    return _figure(
        "fig-quality",
        "Held-out quality per target and metric (95 % bootstrap CIs)",
        "Bar charts, one panel per metric, one bar per target with 95 % confidence-interval whiskers. "
        + "; ".join(alt_parts)
        + ".",
        fig,
    )


def heatmap(exp: Experiment, slice_name: str) -> dict | None:
    targets = exp.eval_targets
    panels = []
    for task, name, label in (("qa", "key_fact_recall", "QA key-fact recall (%)"), ("mc", "acc", "MC accuracy (%)")):
        groups = sorted(
            {g for t in targets for g in ((exp.eval_target(t) or {}).get(f"by_{slice_name}", {}).get(task) or {})}
        )
        if groups:
            panels.append((task, name, label, groups))
    if not targets or not panels:
        return None
    with plt.rc_context({**STYLE, "axes.grid": False}):
        fig, axes = plt.subplots(
            1, len(panels), figsize=(10, 1.2 + 0.42 * max(len(p[3]) for p in panels)), squeeze=False
        )
        alt = []
        for ax, (task, name, label, groups) in zip(axes[0], panels):
            cells = [
                [
                    ((exp.eval_target(t) or {}).get(f"by_{slice_name}", {}).get(task, {}).get(g, {}).get(name) or {})
                    for t in targets
                ]
                for g in groups
            ]
            grid = np.array([[c["mean"] * 100 if c.get("mean") is not None else np.nan for c in row] for row in cells])
            im = ax.imshow(grid, cmap="viridis", vmin=0, vmax=100, aspect="auto")
            ax.set_xticks(range(len(targets)), targets, rotation=30, ha="right")
            ax.set_yticks(range(len(groups)), groups)
            ax.set_title(label, fontsize=10)
            for i, row in enumerate(cells):
                for j, c in enumerate(row):
                    if c.get("mean") is not None:
                        ax.text(
                            j,
                            i,
                            f"{c['mean'] * 100:.0f}\nn={c.get('n', '?')}",
                            ha="center",
                            va="center",
                            fontsize=7,
                            color="white" if c["mean"] < 0.6 else "black",
                        )
            fig.colorbar(im, ax=ax, shrink=0.8, label="%")
            alt.append(
                f"{label}: "
                + "; ".join(
                    f"{g}: "
                    + ", ".join(
                        f"{t} {c['mean'] * 100:.0f} %" for t, c in zip(targets, row) if c.get("mean") is not None
                    )
                    for g, row in zip(groups, cells)
                )
            )
        fig.tight_layout()
    return _figure(
        f"fig-{slice_name}",
        f"{ {'lang': 'Language', 'topic': 'Topic'}[slice_name] } × target",
        f"Heatmaps of score by {slice_name} (rows) and evaluated target (columns), cell text is the mean "
        f"in percent and the number of items. " + " | ".join(alt) + ".",
        fig,
    )


def pareto_front(points: list[tuple[str, float, float]]) -> list[str]:
    """Names not dominated by another point with cost <= and quality >= (one of them strictly)."""
    front = []
    for name, cost, q in points:
        dominated = any(c2 <= cost and q2 >= q and (c2 < cost or q2 > q) for n2, c2, q2 in points if n2 != name)
        if not dominated:
            front.append(name)
    return front


def cost_quality(exp: Experiment) -> tuple[dict | None, dict[str, list[str]]]:
    """Scatter of key-fact recall against training cost (wall time, peak memory); base costs 0 (no training)."""
    targets = [
        t
        for t in exp.eval_targets
        if metric(exp, t, "qa", "key_fact_recall") and (t == BASE_TARGET or t in exp.records)
    ]
    if len(targets) < 2:
        return None, {}
    col = colors(targets)
    costs = {
        "training wall time (min)": lambda r: (r.get("train_wall_s") or 0) / 60,
        "peak training memory (GiB)": lambda r: (peak_memory_mib(r) or 0) / 1024,
    }
    fronts = {}
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharey=True)
        for ax, (cost_label, cost_fn) in zip(axes, costs.items()):
            pts = []
            for t in targets:
                s = metric(exp, t, "qa", "key_fact_recall")
                cost = 0.0 if t == BASE_TARGET else cost_fn(exp.records[t])
                pts.append((t, cost, s["mean"] * 100))
                if s.get("ci_low") is not None:
                    ax.errorbar(
                        cost,
                        s["mean"] * 100,
                        yerr=[[(s["mean"] - s["ci_low"]) * 100], [(s["ci_high"] - s["mean"]) * 100]],
                        fmt="o",
                        color=col[t],
                        capsize=3,
                        markersize=7,
                    )
                else:
                    ax.plot(cost, s["mean"] * 100, "o", color=col[t], markersize=7)
                ax.annotate(t, (cost, s["mean"] * 100), textcoords="offset points", xytext=(6, 4), fontsize=8)
            front = pareto_front(pts)
            fronts[cost_label] = front
            fp = sorted((c, q) for n, c, q in pts if n in front)
            ax.step(
                [c for c, _ in fp],
                [q for _, q in fp],
                where="post",
                color="black",
                linestyle="--",
                linewidth=1,
                label="Pareto front",
            )
            ax.set(xlabel=cost_label + " (base: 0, no training)", title=f"quality vs {cost_label.split(' (')[0]}")
            ax.margins(x=0.15, y=0.15)
        axes[0].set_ylabel("QA key-fact recall (%), 95 % CI")
        axes[0].legend(fontsize=8, loc="lower right")
        fig.tight_layout()
    alt = "; ".join(f"against {k}: Pareto front {', '.join(v)}" for k, v in fronts.items())
    return _figure(
        "fig-pareto",
        "Quality vs cost, with the Pareto front",
        f"Two scatter plots of QA key-fact recall (percent, with 95 % CI whiskers) against training wall "
        f"time and against peak training memory, one point per target; a dashed step line joins the "
        f"Pareto-optimal targets. {alt}.",
        fig,
    ), fronts


def forest(exp: Experiment) -> dict | None:
    """Paired deltas (system - base) with 95 % CIs for the two headline metrics."""
    rows = []
    for task, name, label in (("qa", "key_fact_recall", "key-fact recall"), ("mc", "acc", "MC accuracy")):
        for t in exp.eval_targets:
            if t == BASE_TARGET:
                continue
            p = paired(exp, t, BASE_TARGET, task, name)
            if p:
                rows.append((f"{t}: {label}", p))
    if not rows:
        return None
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(8, 0.8 + 0.4 * len(rows)))
        for i, (label, p) in enumerate(rows):
            color = "#2ca02c" if p["ci_low"] > 0 else "#d62728" if p["ci_high"] < 0 else "#555555"
            ax.errorbar(
                p["delta"] * 100,
                i,
                xerr=[[(p["delta"] - p["ci_low"]) * 100], [(p["ci_high"] - p["delta"]) * 100]],
                fmt="o",
                color=color,
                capsize=3,
            )
        ax.axvline(0, color="black", linewidth=1)
        ax.set_yticks(range(len(rows)), [r[0] for r in rows])
        ax.invert_yaxis()
        ax.set(
            xlabel="difference to base (percentage points), 95 % paired bootstrap CI",
            title="paired comparison with the base model",
        )
        fig.tight_layout()
    alt = "; ".join(
        f"{label} {p['delta'] * 100:+.1f} points (95 % CI {p['ci_low'] * 100:+.1f} to {p['ci_high'] * 100:+.1f})"
        for label, p in rows
    )
    return _figure(
        "fig-forest",
        "Paired differences to the base model",
        f"Forest plot of each system's paired difference to the base model with 95 % CI; green means the "
        f"interval lies above 0, red below 0, grey includes 0. {alt}.",
        fig,
    )
