"""The champion rule: which system the server should load, decided from held-out results with their CIs.

`decide(exp)` is pure (the report shows it); `choose_champion(experiment_dir)` also writes champion.json.
"""

from __future__ import annotations

import math
from pathlib import Path

from harness.eval.stats import verdict
from harness.io import now_iso, write_json_atomic
from harness.layout import BASE_TARGET, champion_path
from reports.load import Experiment, load_experiment, reliable_judge

PRIMARY = ("qa", "key_fact_recall")
SECONDARY = ("mc", "acc")

RULE = (
    "Candidates are the systems whose training finished (status ok) and that have held-out evaluation results. "
    "A candidate qualifies only if it beats the base model: on QA key-fact recall or on MC accuracy its paired "
    "difference from the base model is significant and positive (95 % bootstrap CI above 0 and sign-flip "
    "permutation p < 0.05), and on neither is it significantly negative. "
    "Among qualifying systems the one with the highest mean key-fact recall leads; a qualifying system whose "
    "paired difference from the leader on key-fact recall is not significant is tied with it. Ties are broken by the mean "
    "correctness score of an LLM judge that passed its reliability check (skipped when no judge is reliable), "
    "then by lower cost: shorter training wall time, then lower peak memory. If no system qualifies, the "
    "champion is the base model without an adapter. Where a paired comparison is missing from the evaluation "
    "summary, non-overlapping marginal 95 % CIs stand in for it (a stricter test)."
)

SCORE_KEYS = {
    ("qa", "key_fact_recall"): "key_fact_recall",
    ("qa", "rougeL"): "rougeL",
    ("qa", "bleu"): "bleu",
    ("qa", "chrf"): "chrf",
    ("qa", "semscore"): "semscore",
    ("mc", "acc"): "mc_acc",
    ("mc", "acc_norm"): "mc_acc_norm",
}


def metric(exp: Experiment, target: str, task: str, name: str) -> dict | None:
    t = exp.eval_target(target)
    s = ((t or {}).get("metrics") or {}).get(task, {}).get(name)
    return s if s and s.get("mean") is not None else None


def paired(exp: Experiment, a: str, b: str, task: str, name: str) -> dict | None:
    """Paired delta a - b from eval/summary.json, in either stored orientation; None when not stored."""
    for row in (exp.eval or {}).get("paired", []):
        if row.get("task") != task or row.get("metric") != name or row.get("ci_low") is None:
            continue
        if (row["a"], row["b"]) == (a, b):
            return row
        if (row["a"], row["b"]) == (b, a):
            return {**row, "a": a, "b": b, "delta": -row["delta"], "ci_low": -row["ci_high"], "ci_high": -row["ci_low"]}
    return None


def compare(exp: Experiment, a: str, b: str, task: str, name: str) -> int | None:
    """+1 if a is significantly better than b, -1 if worse, 0 if not distinguishable, None if unknown."""
    p = paired(exp, a, b, task, name)
    if p is not None:
        return verdict(p)
    sa, sb = metric(exp, a, task, name), metric(exp, b, task, name)
    if not sa or not sb or sa.get("ci_low") is None or sb.get("ci_low") is None:
        return None
    return 1 if sa["ci_low"] > sb["ci_high"] else -1 if sa["ci_high"] < sb["ci_low"] else 0


def peak_memory_mib(record: dict) -> float | None:
    return record.get("peak_vram_allocated_mib") or record.get("peak_vram_mib") or record.get("peak_rss_mib")


def _judge_mean(exp: Experiment, system: str) -> float | None:
    judge = reliable_judge(exp)
    s = ((judge[1].get("targets") or {}).get(system) or {}).get("correctness") if judge else None
    return s.get("mean") if s else None


def _qualifies(exp: Experiment, system: str) -> tuple[bool, str]:
    verdicts = {m: compare(exp, system, BASE_TARGET, *m) for m in (PRIMARY, SECONDARY)}
    known = {m: v for m, v in verdicts.items() if v is not None}
    if not known:
        return False, "no comparison with the base model is available"
    words = {1: "better than", 0: "not distinguishable from", -1: "worse than"}
    text = "; ".join(f"{m[0]} {m[1]}: {words[v]} base" for m, v in known.items())
    if any(v < 0 for v in known.values()):
        return False, text
    return any(v > 0 for v in known.values()), text


def decide(exp: Experiment) -> dict:
    """The champion and why, as the dict written to champion.json (without created_at)."""
    base_record = next((r for r in exp.records.values() if r.get("base_model")), {})
    base = base_record.get("base_model") or {}
    candidates, decisions = [], {}
    for system in exp.ok_systems:
        if metric(exp, system, *PRIMARY) is None:
            decisions[system] = "not a candidate: no held-out key-fact recall"
            continue
        ok, why = _qualifies(exp, system)
        decisions[system] = ("qualifies: " if ok else "does not beat base: ") + why
        if ok:
            candidates.append(system)
    for system, rec in exp.records.items():
        decisions.setdefault(
            system,
            f"not a candidate: training {rec.get('status')}" + (f" ({rec.get('reason')})" if rec.get("reason") else ""),
        )
    champion, tied = BASE_TARGET, []
    if candidates:
        leader = max(candidates, key=lambda s: metric(exp, s, *PRIMARY)["mean"])
        tied = [s for s in candidates if s == leader or compare(exp, s, leader, *PRIMARY) in (0, None)]

        def tie_key(s: str):
            judge = _judge_mean(exp, s)
            rec = exp.records.get(s, {})
            return (
                -(judge if judge is not None else -math.inf) if reliable_judge(exp) else 0,
                rec.get("train_wall_s") or math.inf,
                peak_memory_mib(rec) or math.inf,
                -metric(exp, s, *PRIMARY)["mean"],
            )

        champion = min(tied, key=tie_key)
        if len(tied) > 1:
            decisions[champion] += (
                f"; tied on key-fact recall with {', '.join(t for t in tied if t != champion)}, won the tie-break"
            )
    record = exp.records.get(champion, {})
    scores = {key: metric(exp, champion, task, name) for (task, name), key in SCORE_KEYS.items()}
    scores = {k: v for k, v in scores.items() if v}
    judge = reliable_judge(exp)
    if judge and (judge[1].get("targets") or {}).get(champion, {}).get("correctness"):
        scores["judge_correctness"] = judge[1]["targets"][champion]["correctness"]
    vs_base = {}
    if champion != BASE_TARGET:
        for (task, name), key in SCORE_KEYS.items():
            p = paired(exp, champion, BASE_TARGET, task, name)
            if p:
                vs_base[key] = {k: p.get(k) for k in ("delta", "ci_low", "ci_high", "p_value", "n")}
    return {
        "experiment": exp.name,
        "system": champion,
        "base_model": base.get("name"),
        "base_model_path": base.get("path"),
        "adapter_path": None if champion == BASE_TARGET else record.get("adapter_path"),
        "scores": scores,
        "vs_base": vs_base,
        "tied": tied if len(tied) > 1 else [],
        "judge_used": judge[0] if judge else None,
        # How the champion's answers were generated when they were measured: the server's defaults.
        "decoding": (exp.eval or {}).get("decoding"),
        "decisions": decisions,
        "evaluated": exp.eval is not None,
        "rule": RULE,
    }


def choose_champion(experiment_dir: str | Path) -> dict:
    """Apply the rule to runs/<experiment>/ and write runs/<experiment>/champion.json atomically."""
    champion = {**decide(load_experiment(experiment_dir)), "created_at": now_iso()}
    write_json_atomic(champion_path(experiment_dir), champion)
    return champion
