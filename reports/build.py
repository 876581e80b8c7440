"""Build reports/out/<experiment>/{index.html, summary.md, summary.json} from one experiment folder.

The HTML is self-contained (inline CSS, SVG plots as data URIs, no script, no CDN) so it opens from disk.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, select_autoescape

from harness.eval.stats import fdr_adjust
from harness.io import atomic_dir, now_iso, sha256_file
from harness.layout import BASE_TARGET, LOOKUP_TARGET, champion_path, is_system_target, report_dir
from harness.records import git_sha
from reports import plots
from reports.champion import RULE, decide, metric, peak_memory_mib
from reports.load import Experiment, load_experiment, load_generations, read_json, reliable_judge

TEMPLATES = Path(__file__).parent / "templates"
BENCHMARK_FILES = ("benchmarks/musicprod/data/qa.json", "benchmarks/musicprod/data/mc.json")
SIDE_BY_SIDE_ITEMS = 4
ANSWER_CHARS = 1500

# (task, metric, header, scale, unit) in table order. Scales turn stored 0..1 fractions into percent.
TABLE_METRICS = [
    ("qa", "key_fact_recall", "key-fact recall", 100, "%"),
    ("mc", "acc", "MC accuracy", 100, "%"),
    ("mc", "acc_norm", "MC acc. (len-norm)", 100, "%"),
    ("qa", "rougeL", "ROUGE-L", 1, "(0–1)"),
    ("qa", "semscore", "SemScore", 1, "(0–1)"),
    ("qa", "chrf", "chrF", 1, "(0–100)"),
    ("qa", "bleu", "BLEU", 1, "(0–100)"),
]


# ---------- formatting: every number leaves here with its unit ----------


def num(x, digits: int = 2) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    return f"{x:,.{digits}f}"


def duration(seconds) -> str:
    if seconds is None:
        return "–"
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 60:.1f} min" if seconds >= 120 else f"{seconds:.1f} s"


def gib(mib) -> str:
    return "–" if mib is None else f"{mib / 1024:.2f} GiB"


def _digits(scale: float, unit: str) -> int:
    return 1 if scale == 100 or unit == "(0–100)" else 2 if unit == "(1–5)" else 3


def score(s: dict | None, scale: float = 1, unit: str = "") -> dict:
    """{'value': '41.2 %', 'ci': '95 % CI 38.0–44.5 %', 'n': 'n = 301', 'full': ci + n} for templates."""
    if not s or s.get("mean") is None:
        return {"value": "–", "ci": "", "n": "", "full": ""}
    d = _digits(scale, unit)
    u = f" {unit}" if unit == "%" else ""
    value = f"{s['mean'] * scale:.{d}f}{u}"
    if s.get("ci_low") is None:
        ci = "no CI (fewer than 2 items)"
    else:
        ci = f"95 % CI {s['ci_low'] * scale:.{d}f}–{s['ci_high'] * scale:.{d}f}{u}"
    n = f"n = {s['n']}" if s.get("n") is not None else ""
    return {"value": value, "ci": ci, "n": n, "full": ", ".join(x for x in (ci, n) if x)}


def delta(p: dict, scale: float, unit: str) -> dict:
    d = _digits(scale, unit)
    u = " pp" if unit == "%" else ""
    verdict = "better" if p["ci_low"] > 0 else "worse" if p["ci_high"] < 0 else "no detectable difference"
    return {
        "value": f"{p['delta'] * scale:+.{d}f}{u}",
        "ci": f"95 % CI {p['ci_low'] * scale:+.{d}f} to {p['ci_high'] * scale:+.{d}f}{u}",
        "p": "–" if p.get("p_value") is None else f"{p['p_value']:.3g}",
        "p_value": p.get("p_value"),
        "n": p.get("n"),
        "verdict": verdict,
    }


# ---------- sections ----------


def overview(exp: Experiment) -> dict:
    recs = list(exp.records.values())
    ok = [r for r in recs if r.get("status") == "ok"] or recs
    first = ok[0] if ok else {}
    versions = {}
    for r in ok:
        for k, v in (r.get("versions") or {}).items():
            versions.setdefault(k, set()).add(str(v) if v is not None else "not installed")
    data = first.get("data") or {}
    hashes = []
    if data.get("sha256"):
        hashes.append(
            (
                "training set",
                data.get("path"),
                data["sha256"],
                f"{data.get('train_items')} train / {data.get('validation_items')} validation items",
            )
        )
    base = first.get("base_model") or {}
    if base.get("source_sha256"):
        hashes.append(("base model source", base.get("name"), base["source_sha256"], base.get("path") or ""))
    for path in BENCHMARK_FILES:
        if Path(path).exists():
            hashes.append(("held-out benchmark", path, sha256_file(path), "hashed when this report was built"))
    stages = [
        (k.removesuffix("_s").replace("_", " "), duration(v))
        for k, v in ((exp.stages or {}).get("stages") or {}).items()
    ]
    if exp.eval:
        for t in exp.eval_targets:
            w = (exp.eval_target(t) or {}).get("wall_s")
            if w is not None:
                stages.append((f"eval {t}", duration(w)))
        if exp.eval.get("wall_s") is not None:
            stages.append(("eval total", duration(exp.eval["wall_s"])))
    dates = sorted(d for r in recs for d in (r.get("started_at"), r.get("finished_at")) if d)
    devices = {json.dumps(r.get("device"), sort_keys=True) for r in recs if r.get("device")}
    return {
        "devices": [json.loads(d) for d in sorted(devices)],
        "versions": [(k, ", ".join(sorted(v))) for k, v in versions.items()],
        "hashes": hashes,
        "git_shas": sorted({r.get("git_sha") for r in recs if r.get("git_sha")}),
        "report_git_sha": git_sha(),
        "period": (dates[0], dates[-1]) if dates else None,
        "stages": stages,
        "settings": first.get("effective_settings") or {},
        "decoding": (exp.eval or {}).get("decoding"),
        "n_items": (exp.eval or {}).get("n_items"),
        "limit": (exp.eval or {}).get("limit"),
    }


def system_rows(exp: Experiment) -> list[dict]:
    rows = []
    for system, r in exp.records.items():
        mem = peak_memory_mib(r)
        mem_kind = "VRAM" if r.get("peak_vram_allocated_mib") or r.get("peak_vram_mib") else "RSS"
        params = r.get("trainable_params")
        share = (
            f" ({100 * params / r['total_params']:.2f} % of {r['total_params'] / 1e6:,.1f} M)"
            if params and r.get("total_params")
            else ""
        )
        rows.append(
            {
                "system": system,
                "status": r.get("status"),
                "reason": r.get("reason"),
                "device": (r.get("device") or {}).get("gpu") or (r.get("device") or {}).get("cpu") or "–",
                "trainable": f"{params:,}" if params else "–",
                "trainable_share": share.strip(" ()"),
                "steps": r.get("steps"),
                "tokens": f"{r['train_tokens']:,}" if r.get("train_tokens") else "–",
                "tps": num(r.get("train_tokens_per_s"), 1) + (" tokens/s" if r.get("train_tokens_per_s") else ""),
                "steady_tps": num(r.get("steady_tokens_per_s"), 1)
                + (" tokens/s" if r.get("steady_tokens_per_s") else ""),
                "step_p50": num(r.get("step_time_p50_s"), 2) + (" s" if r.get("step_time_p50_s") else ""),
                "memory": f"{gib(mem)} {mem_kind}" if mem else "–",
                "train_wall": duration(r.get("train_wall_s")),
                "wall": duration(r.get("wall_s")),
                "final_loss": num(r.get("final_train_loss"), 3),
                "val_loss": num(r.get("validation_loss"), 3),
                "raw": {
                    k: r.get(k)
                    for k in (
                        "status",
                        "reason",
                        "trainable_params",
                        "total_params",
                        "steps",
                        "train_tokens",
                        "train_tokens_per_s",
                        "steady_tokens_per_s",
                        "step_time_p50_s",
                        "train_wall_s",
                        "wall_s",
                        "final_train_loss",
                        "validation_loss",
                        "adapter_path",
                    )
                }
                | {"peak_memory_mib": mem, "peak_memory_kind": mem_kind},
            }
        )
    return rows


TARGET_NOTES = {LOOKUP_TARGET: "what the training data holds: the nearest training answer, not a model"}


def quality_rows(exp: Experiment, champion: str) -> tuple[list[dict], list[dict]]:
    shown = [m for m in TABLE_METRICS if any(metric(exp, t, m[0], m[1]) for t in exp.eval_targets)]
    header = [
        {
            "label": h,
            "unit": u if u != "%" else "(%)",
            "headline": task == "qa" and name == "key_fact_recall" or task == "mc",
        }
        for task, name, h, _, u in shown
    ]
    rows = []
    for t in exp.eval_targets:
        rows.append(
            {
                "target": t,
                "champion": t == champion,
                "note": TARGET_NOTES.get(t),
                "cells": [score(metric(exp, t, task, name), scale, unit) for task, name, _, scale, unit in shown],
            }
        )
    return header, rows


def dev_rows(exp: Experiment) -> list[dict]:
    """The dev-set figures (where the recipe and the checkpoint were chosen), kept apart from the held-out."""
    dev = exp.eval_dev or {}
    rows = []
    for t, v in (dev.get("targets") or {}).items():
        m = v.get("metrics") or {}
        rows.append(
            {
                "target": t,
                "note": TARGET_NOTES.get(t),
                "kfr": score((m.get("qa") or {}).get("key_fact_recall"), 100, "%"),
                "mc": score((m.get("mc") or {}).get("acc"), 100, "%"),
            }
        )
    return rows


def lookup_share(exp: Experiment, champion: str) -> dict | None:
    """The champion's held-out key-fact recall as a share of the lookup reference's."""
    mine, ref = metric(exp, champion, "qa", "key_fact_recall"), metric(exp, LOOKUP_TARGET, "qa", "key_fact_recall")
    if not mine or not ref or not ref["mean"]:
        return None
    return {
        "share": f"{100 * mine['mean'] / ref['mean']:.0f} %",
        "lookup": f"{100 * ref['mean']:.1f} %",
        "champion": f"{100 * mine['mean']:.1f} %",
    }


def mc_baseline_rows(exp: Experiment) -> list[dict]:
    """Chance and length-only baselines of the evaluated MC items: what an MC accuracy must beat."""
    labels = {
        "chance": "chance (1 / options)",
        "pick_longest": "always the longest option",
        "pick_shortest": "always the shortest option",
    }
    base = (exp.eval or {}).get("mc_baselines") or {}
    return [{"label": labels[k], **score(base[k], 100, "%")} for k in labels if base.get(k)]


def slice_tables(exp: Experiment) -> list[dict]:
    """Per-topic and per-language means with their CIs (the numbers behind the heatmaps)."""
    tables = []
    for slice_name, slice_label in (
        ("coverage", "key-fact coverage in training"),
        ("topic", "topic"),
        ("lang", "language"),
    ):
        for task, name, label in (("qa", "key_fact_recall", "QA key-fact recall"), ("mc", "acc", "MC accuracy")):
            by = {
                t: ((exp.eval_target(t) or {}).get(f"by_{slice_name}") or {}).get(task) or {} for t in exp.eval_targets
            }
            groups = sorted({g for v in by.values() for g in v})
            if groups:
                tables.append(
                    {
                        "title": f"{label} (%) by {slice_label}",
                        "targets": exp.eval_targets,
                        "rows": [
                            (g, [score((by[t].get(g) or {}).get(name), 100, "%") for t in exp.eval_targets])
                            for g in groups
                        ],
                    }
                )
    return tables


def paired_rows(exp: Experiment) -> list[dict]:
    labels = {(task, name): (h, scale, unit) for task, name, h, scale, unit in TABLE_METRICS}
    order = list(labels)
    rows = []
    for p in (exp.eval or {}).get("paired", []):
        key = (p.get("task"), p.get("metric"))
        if p.get("ci_low") is None or key not in labels:
            continue
        h, scale, unit = labels[key]
        rows.append(
            {
                "a": p["a"],
                "b": p["b"],
                "metric": h,
                "vs_base": p["b"] == BASE_TARGET,
                "headline": key in (("qa", "key_fact_recall"), ("mc", "acc")),
                "order": order.index(key),
                **delta(p, scale, unit),
            }
        )
    # Many rows at p < 0.05 invite false positives: give each its Benjamini-Hochberg q over every row shown.
    tested = [r for r in rows if r["p_value"] is not None]
    for r, q in zip(tested, fdr_adjust([r["p_value"] for r in tested])):
        r["q"] = f"{q:.3g}"
    for r in rows:
        r.setdefault("q", "–")
    # Comparisons with base first, then system pairs; headline metrics first within each pair.
    return sorted(rows, key=lambda r: (not r["vs_base"], r["a"], r["b"], r["order"]))


def judge_sections(exp: Experiment) -> list[dict]:
    out = []
    for name, j in exp.judges.items():
        rel = j.get("reliability") or {}
        targets = []
        for t, dims in (j.get("targets") or {}).items():
            targets.append(
                {
                    "target": t,
                    "cells": [score(dims.get(d), 1, "(1–5)") for d in ("correctness", "relevance", "helpfulness")],
                }
            )
        spearman_human = rel.get("spearman_human") or {}
        out.append(
            {
                "name": name,
                "backend": j.get("backend"),
                "reliable": bool(j.get("reliable")),
                "bar": rel.get("bar"),
                "sanity": (
                    f"{100 * rel['sanity_pass_rate']:.1f} % of {rel.get('sanity_n')} sanity cases"
                    if rel.get("sanity_pass_rate") is not None
                    else "–"
                ),
                "self_consistency": f"{100 * rel['self_consistency']:.1f} %"
                if rel.get("self_consistency") is not None
                else "–",
                "spearman_key_fact": _rho(rel.get("spearman_key_fact")),
                "spearman_human": {d: _rho(v) for d, v in spearman_human.items()},
                "targets": targets,
                "pairwise": [
                    {
                        **p,
                        "position_consistency": f"{100 * p['position_consistency']:.0f} %"
                        if p.get("position_consistency") is not None
                        else "–",
                    }
                    for p in j.get("pairwise") or []
                ],
            }
        )
    return out


def _rho(r: dict | None) -> str:
    if not r or r.get("rho") is None:
        return "–"
    p = f", p = {r['p_value']:.3g}" if r.get("p_value") is not None else ""
    return f"ρ = {r['rho']:+.2f}{p}, n = {r.get('n', '?')}"


def human_section(exp: Experiment) -> dict | None:
    h = exp.human
    if not h:
        return None
    dims = ("correctness", "relevance", "helpfulness")
    coverage = h.get("coverage") or {}
    return {
        "coverage": {k: v for k, v in coverage.items() if not isinstance(v, dict)},
        "coverage_tables": {
            k: v
            for k, v in coverage.items()
            if isinstance(v, dict) and v and all(isinstance(x, dict) for x in v.values())
        },
        "alpha": [(d, "–" if a is None else f"{a:.2f}") for d, a in (h.get("alpha") or {}).items()],
        "targets": [
            {"target": t, "cells": [score(v.get(d), 1, "(1–5)") for d in dims]}
            for t, v in (h.get("targets") or {}).items()
        ],
        "judge_spearman": [(d, _rho(v)) for d, v in (h.get("judge_spearman") or {}).items()],
        "pairwise": h.get("pairwise") or [],
    }


def _fact_marks(item: dict, answer: str) -> list[dict]:
    try:
        from harness.eval.metrics import key_fact_recall  # the evaluator's own matching, one fact at a time
    except ImportError:
        return []
    return [
        {"fact": f.get("fact"), "hit": key_fact_recall([f], answer or "") == 1.0} for f in item.get("key_facts") or []
    ]


def _answer(row: dict | None) -> dict | None:
    if not row:
        return None
    text = row.get("answer") or ""
    m = row.get("metrics") or {}
    return {
        "text": text[:ANSWER_CHARS] + (" […]" if len(text) > ANSWER_CHARS else ""),
        "kfr": f"{100 * m['key_fact_recall']:.0f} %" if m.get("key_fact_recall") is not None else "–",
        "rouge": f"{m['rougeL']:.3f}" if m.get("rougeL") is not None else "–",
        "facts": _fact_marks(row, text),
    }


def side_by_side(exp: Experiment, champion: str) -> dict | None:
    """A few held-out questions with the base, the champion (or best system) and the reference answer.

    Chosen, not sampled: the largest key-fact gains and the largest loss of the right-hand system over base,
    and one German item, so that the reader sees both what improved and what broke.
    """
    left = BASE_TARGET
    systems = [t for t in exp.eval_targets if is_system_target(t) and metric(exp, t, "qa", "key_fact_recall")]
    right = (
        champion
        if champion != BASE_TARGET
        else (max(systems, key=lambda t: metric(exp, t, "qa", "key_fact_recall")["mean"]) if systems else None)
    )
    gens_l = load_generations(exp.dir, left)
    gens_r = load_generations(exp.dir, right) if right else {}
    if not gens_l and not gens_r:
        return None
    if not gens_r:
        ids = sorted(gens_l)[:SIDE_BY_SIDE_ITEMS]
        picks = [(i, "first items") for i in ids]
    else:
        common = sorted(set(gens_l) & set(gens_r)) if gens_l else sorted(gens_r)

        def gain(i):
            r = (gens_r[i].get("metrics") or {}).get("key_fact_recall") or 0
            b = ((gens_l.get(i) or {}).get("metrics") or {}).get("key_fact_recall") or 0
            return r - b

        by_gain = sorted(common, key=lambda i: (-gain(i), i))

        def label(i, what):
            g = gain(i)
            change = "no key-fact change" if g == 0 else f"key-fact recall {g * 100:+.0f} pp"
            return f"{what}: {change} vs {left}"

        picks = [(i, label(i, "largest gain")) for i in by_gain[:2]]
        rest = [i for i in by_gain if i not in dict(picks)]
        if rest and gain(rest[-1]) < 0:
            picks.append((rest[-1], label(rest[-1], "largest loss")))
        elif rest:
            picks.append((rest[len(rest) // 2], label(rest[len(rest) // 2], "a middle item (no item got worse)")))
        german = [i for i in common if gens_r[i].get("lang") == "de" and i not in dict(picks)]
        if german:
            picks.append((german[len(german) // 2], label(german[len(german) // 2], "a German item")))
    items = []
    for i, why in picks[:SIDE_BY_SIDE_ITEMS]:
        ref = gens_r.get(i) or gens_l.get(i)
        items.append(
            {
                "id": i,
                "why": why,
                "lang": ref.get("lang"),
                "topic": ref.get("topic"),
                "difficulty": ref.get("difficulty"),
                "question": ref.get("question"),
                "reference": ref.get("reference"),
                "left": _answer(gens_l.get(i)),
                "right": _answer(gens_r.get(i)) if right else None,
            }
        )
    return {"left": left, "right": right, "items": items}


def skipped_rows(exp: Experiment) -> list[dict]:
    rows = [
        {"system": s, "stage": "training", "status": r.get("status"), "reason": r.get("reason") or "–"}
        for s, r in exp.records.items()
        if r.get("status") != "ok"
    ]
    for s, why in ((exp.eval or {}).get("skipped") or {}).items():
        if s in exp.records and exp.records[s].get("status") != "ok":
            continue  # already listed with its training reason
        rows.append({"system": s, "stage": "evaluation", "status": "not evaluated", "reason": why})
    for t, v in ((exp.eval or {}).get("targets") or {}).items():
        if v.get("status", "ok") != "ok":
            rows.append(
                {"system": t, "stage": "evaluation", "status": v.get("status"), "reason": v.get("reason") or "–"}
            )
    return rows


def gpu_rows(exp: Experiment) -> list[dict]:
    rows = []
    for s, r in exp.records.items():
        dev = r.get("device") or {}
        if dev.get("gpu"):
            rows.append(
                {
                    "system": s,
                    "status": r.get("status"),
                    "gpu": dev["gpu"],
                    "gpu_memory": f"{dev['gpu_memory_gib']} GiB" if dev.get("gpu_memory_gib") else "–",
                    "cuda": dev.get("cuda") or "–",
                    "vram_allocated": gib(r.get("peak_vram_allocated_mib") or r.get("peak_vram_mib")),
                    "vram_reserved": gib(r.get("peak_vram_reserved_mib")),
                    "tps": num(r.get("train_tokens_per_s"), 1) + " tokens/s" if r.get("train_tokens_per_s") else "–",
                }
            )
    return rows


def champion_view(exp: Experiment, champ: dict) -> dict:
    on_disk = None
    path = champion_path(exp.dir)
    if path.exists():
        saved = read_json(path)
        on_disk = {
            "path": str(path),
            "system": saved.get("system"),
            "created_at": saved.get("created_at"),
            "agrees": saved.get("system") == champ["system"],
        }
    labels = {"key_fact_recall": ("QA key-fact recall", 100, "%"), "mc_acc": ("MC accuracy", 100, "%")}
    headline = [
        {"label": lab, **score(champ["scores"].get(k), scale, unit)}
        for k, (lab, scale, unit) in labels.items()
        if champ["scores"].get(k)
    ]
    vs_base = [
        {"label": lab, **delta(champ["vs_base"][k], scale, unit)}
        for k, (lab, scale, unit) in labels.items()
        if champ["vs_base"].get(k)
    ]
    return {**champ, "headline": headline, "vs_base_rows": vs_base, "on_disk": on_disk}


# ---------- assembly ----------


def build_context(exp: Experiment) -> dict:
    champ = decide(exp)
    pareto_fig, fronts = plots.cost_quality(exp)
    figures = {
        "loss": plots.loss_curves(exp),
        "throughput": plots.throughput(exp),
        "memory": plots.memory(exp),
        "quality": plots.quality(exp),
        "topic": plots.heatmap(exp, "topic"),
        "lang": plots.heatmap(exp, "lang"),
        "pareto": pareto_fig,
        "forest": plots.forest(exp),
    }
    q_header, q_rows = quality_rows(exp, champ["system"])
    judge = reliable_judge(exp)
    ctx = {
        "experiment": exp.name,
        "experiment_dir": str(exp.dir),
        "created_at": now_iso(),
        "overview": overview(exp),
        "systems": system_rows(exp),
        "figures": figures,
        "quality_header": q_header,
        "quality_rows": q_rows,
        "mc_baselines": mc_baseline_rows(exp),
        "paired": paired_rows(exp),
        "fronts": fronts,
        "slice_tables": slice_tables(exp),
        "dev_rows": dev_rows(exp),
        "dev_split": exp.eval_dev,
        "lookup_share": lookup_share(exp, champ["system"]),
        "judges": judge_sections(exp),
        "reliable_judge": judge[0] if judge else None,
        "human": human_section(exp),
        "side_by_side": side_by_side(exp, champ["system"]),
        "skipped": skipped_rows(exp),
        "gpu": gpu_rows(exp),
        "notes": exp.notes,
        "champion": champion_view(exp, champ),
        "rule": RULE,
        "evaluated": exp.eval is not None,
        "show_device": len({r["device"] for r in system_rows(exp) if r["status"] == "ok"}) > 1,
    }
    ctx["sections"] = [
        (sid, title)
        for sid, title, present in [
            ("champion", "Champion", True),
            ("overview", "Overview", True),
            ("systems", "Systems", True),
            ("training", "Training: loss, speed, memory", any(figures[k] for k in ("loss", "throughput", "memory"))),
            ("quality", "Held-out quality", True),
            ("dev", "Dev set (model selection)", exp.eval_dev is not None),
            ("slices", "Coverage, topic and language breakdown", figures["topic"] or figures["lang"]),
            ("cost", "Quality vs cost", pareto_fig is not None),
            ("paired", "Paired comparisons", True),
            ("judge", "LLM judge reliability", True),
            ("human", "Human ratings and agreement", True),
            ("answers", "Side-by-side answers", ctx["side_by_side"] is not None),
            ("skipped", "Skipped systems", True),
            ("gpu", "GPU results", True),
            ("method", "How to read this report", True),
        ]
        if present
    ]
    return ctx


def _env(autoescape: bool) -> Environment:
    env = Environment(
        loader=FileSystemLoader(TEMPLATES),
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=select_autoescape(["j2"]) if autoescape else False,
    )
    return env


def summary_json(ctx: dict, exp: Experiment) -> dict:
    return {
        "experiment": exp.name,
        "created_at": ctx["created_at"],
        "experiment_dir": str(exp.dir),
        "champion": {k: v for k, v in ctx["champion"].items() if k not in ("headline", "vs_base_rows")},
        "systems": {r["system"]: r["raw"] for r in ctx["systems"]},
        "quality": {t: (exp.eval_target(t) or {}).get("metrics") for t in exp.eval_targets},
        "paired": (exp.eval or {}).get("paired", []),
        "pareto_front": ctx["fronts"],
        "judges": {
            n: {"reliable": j.get("reliable"), "reliability": j.get("reliability"), "targets": j.get("targets")}
            for n, j in exp.judges.items()
        },
        "human": exp.human,
        "skipped": ctx["skipped"],
        "gpu": ctx["gpu"],
        "notes": exp.notes,
        "overview": {k: v for k, v in ctx["overview"].items() if k != "settings"},
        "figures": [{"id": f["id"], "title": f["title"], "alt": f["alt"]} for f in ctx["figures"].values() if f],
    }


def build_report(experiment_dir: str | Path, out_root: str | Path = "reports/out") -> Path:
    """Write reports/out/<experiment>/ (index.html, summary.md, summary.json) in one rename; returns index.html."""
    exp = load_experiment(experiment_dir)
    ctx = build_context(exp)
    html = _env(True).get_template("report.html.j2").render(**ctx)
    markdown = _env(False).get_template("summary.md.j2").render(**ctx)
    final = report_dir(
        exp.dir.resolve().name, out_root
    )  # the folder name: a copied experiment never overwrites its source
    with atomic_dir(final) as tmp:
        (tmp / "index.html").write_text(html, encoding="utf-8")
        (tmp / "summary.md").write_text(markdown, encoding="utf-8")
        (tmp / "summary.json").write_text(
            json.dumps(summary_json(ctx, exp), indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8"
        )
    return final / "index.html"
