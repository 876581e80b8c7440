"""LLM-judge suite: deepeval G-Eval rubric scores (correctness, relevance, helpfulness, 1-5), pairwise comparisons in
both orders, and the judge's measured reliability. `musicprod judge [experiment]` judges the saved generations
(runs/<exp>/eval/<target>/generations.jsonl) without regenerating them and writes runs/<exp>/judge/<judge>/:

    summary.json       per-target means with 95 % CIs, pairwise, reliability, `reliable`
    scores.jsonl       one line per (target, item): scores, reasons, whether the score was probability-weighted
    sanity.jsonl       reference vs off-topic answer per sanity question, and whether the judge preferred the reference
    consistency.jsonl  repeated items: first and second score
    pairwise.jsonl     both orders' verdicts per (pair, item)

Reliability is measured, never assumed: a judge that prefers the reference answer over an off-topic one in fewer
than `reliability_bar` (90 %) of the sanity cases is written with "reliable": false and "use_for_champion": false.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

from harness.eval.stats import mean_ci, spearman
from harness.io import atomic_dir, now_iso, write_json_atomic, write_jsonl
from harness.judge.config import JudgeSettings, judge_name
from harness.judge.inputs import (
    BENCHMARK_QA,
    JudgeError,
    common_items,
    experiment_generations,
    load_sanity_questions,
    sanity_cases,
)
from harness.judge.reliability import (
    BAR_TEXT,
    combine_orders,
    human_spearman,
    is_reliable,
    mean_score,
    pairwise_summary,
    sanity_pass_rate,
    self_consistency,
)
from harness.judge.rubrics import default_cache_dir, make_judge, pairwise_verdict, rubric_metrics, score_answer
from harness.layout import BASE_TARGET, JUDGE_SANITY_FILE, JUDGE_SCORES_FILE, SUMMARY_FILE, eval_dir, judge_dir
from harness.rubric import DIMENSIONS


def run_judge(
    experiment_dir: str | Path, settings: JudgeSettings, sanity_path: Path = BENCHMARK_QA, progress: bool = True
) -> dict:
    from tqdm import tqdm

    experiment_dir = Path(experiment_dir)
    started = time.time()
    generations = experiment_generations(experiment_dir)
    ids = common_items(generations, settings.max_items)
    if not ids:
        raise JudgeError(f"{eval_dir(experiment_dir)}: the targets share no item ids")
    by_target = {t: {r["id"]: r for r in rows} for t, rows in generations.items()}
    cases = sanity_cases(load_sanity_questions(sanity_path), settings.sanity_items)
    systems = [t for t in generations if t != BASE_TARGET]
    pairs = [(s, BASE_TARGET) for s in systems] if BASE_TARGET in generations and settings.pairwise else []
    repeat_keys = [(t, i) for t in generations for i in ids][: settings.repeats]

    name = judge_name(settings)
    cache_dir = Path(settings.cache_dir) if settings.cache_dir else default_cache_dir(experiment_dir)
    judge = make_judge(settings, cache_dir)
    metrics = rubric_metrics(judge)
    calls = 3 * (len(generations) * len(ids) + 2 * len(cases) + len(repeat_keys)) + 2 * len(pairs) * len(ids)
    bar = tqdm(total=calls, desc=f"judge {name}", unit="call", disable=not progress)

    def score(item: dict, answer: str) -> dict:
        result = score_answer(metrics, judge, item["question"], answer, item["reference"], item.get("key_facts"))
        bar.update(len(DIMENSIONS))
        return result

    score_rows = []
    for target, items in by_target.items():
        for item_id in ids:
            item = items[item_id]
            s = score(item, item["answer"])
            score_rows.append(
                {
                    "target": target,
                    "id": item_id,
                    "lang": item.get("lang"),
                    "topic": item.get("topic"),
                    **{d: s[d] for d in DIMENSIONS},
                    "reasons": s["reasons"],
                    "weighted": s["weighted"],
                    "score_mass": s["score_mass"],
                    "errors": s["errors"],
                    "key_fact_recall": (item.get("metrics") or {}).get("key_fact_recall"),
                }
            )

    sanity_rows = []
    for case in cases:
        ref, off = score(case, case["reference"]), score(case, case["off_topic_answer"])
        ref_mean, off_mean = mean_score(ref), mean_score(off)
        sanity_rows.append(
            {
                "id": case["id"],
                "off_topic_id": case["off_topic_id"],
                "reference": {d: ref[d] for d in DIMENSIONS},
                "off_topic": {d: off[d] for d in DIMENSIONS},
                "prefers_reference": ref_mean is not None and off_mean is not None and ref_mean > off_mean,
            }
        )

    first_scores = {(r["target"], r["id"]): r for r in score_rows}
    consistency_rows = []
    for target, item_id in repeat_keys:
        item = by_target[target][item_id]
        again = score(item, item["answer"])
        consistency_rows.append(
            {
                "target": target,
                "id": item_id,
                "first": {d: first_scores[(target, item_id)][d] for d in DIMENSIONS},
                "second": {d: again[d] for d in DIMENSIONS},
            }
        )

    pair_rows = []
    for a, b in pairs:
        for item_id in ids:
            item, ans_a, ans_b = by_target[a][item_id], by_target[a][item_id]["answer"], by_target[b][item_id]["answer"]
            try:
                v1, v2 = pairwise_verdict(judge, item, ans_a, ans_b), pairwise_verdict(judge, item, ans_b, ans_a)
            except Exception as e:
                pair_rows.append({"a": a, "b": b, "id": item_id, "error": f"{type(e).__name__}: {e}"})
                bar.update(2)
                continue
            verdict, consistent = combine_orders(v1, v2)
            pair_rows.append(
                {
                    "a": a,
                    "b": b,
                    "id": item_id,
                    "a_first": v1,
                    "b_first": v2,
                    "verdict": verdict,
                    "consistent": consistent,
                }
            )
            bar.update(2)
    bar.close()

    # reliability
    pass_rate = sanity_pass_rate(sanity_rows)
    kfr = [
        (r["correctness"], r["key_fact_recall"])
        for r in score_rows
        if r["correctness"] is not None and isinstance(r["key_fact_recall"], (int, float))
    ]
    consistency = self_consistency([(r["first"], r["second"]) for r in consistency_rows])
    scored = [r[d] for r in score_rows for d in DIMENSIONS]
    weighted = [w for r in score_rows for w in r["weighted"].values()]
    masses = [m for r in score_rows for m in r["score_mass"].values()]
    reliable = is_reliable(pass_rate, settings.reliability_bar)
    summary = {
        "judge": name,
        "backend": settings.backend,
        "model": settings.model,
        "base_url": settings.base_url if settings.backend == "openai" else None,
        "created_at": now_iso(),
        "experiment": experiment_dir.name,
        "reliable": reliable,
        "use_for_champion": reliable,
        "reliability": {
            "sanity_pass_rate": pass_rate,
            "sanity_n": len(sanity_rows),
            "spearman_key_fact": spearman([x for x, _ in kfr], [y for _, y in kfr]),
            "self_consistency": consistency["agreement"],
            "self_consistency_detail": consistency,
            "spearman_human": None,
            "spearman_human_note": None,
            "bar": BAR_TEXT.format(100 * settings.reliability_bar),
            "verdict": (
                "reliable"
                if reliable
                else "UNRELIABLE: excluded from champion selection"
                if pass_rate is not None
                else "UNRELIABLE: no sanity set was run (sanity_items=0), so reliability is unknown"
            ),
        },
        "targets": {
            t: {d: mean_ci([r[d] for r in score_rows if r["target"] == t and r[d] is not None]) for d in DIMENSIONS}
            for t in by_target
        },
        "pairwise": pairwise_summary([r for r in pair_rows if "verdict" in r]),
        "items": {"per_target": len(ids), "targets": list(by_target), "ids": ids},
        "diagnostics": {
            "failed_scores": sum(1 for v in scored if v is None),
            "scores": len(scored),
            "probability_weighted_share": sum(weighted) / len(weighted) if weighted else None,
            "mean_score_token_mass": sum(masses) / len(masses) if masses else None,
            "pairwise_errors": sum(1 for r in pair_rows if "error" in r),
        },
        "settings": {k: getattr(settings, k) for k in settings.__dataclass_fields__},
        "deepeval_cache_dir": str(cache_dir),
    }
    final = judge_dir(experiment_dir, name)
    with atomic_dir(final) as tmp:
        write_jsonl(tmp / JUDGE_SCORES_FILE, score_rows)
        write_jsonl(tmp / JUDGE_SANITY_FILE, sanity_rows)
        write_jsonl(tmp / "consistency.jsonl", consistency_rows)
        write_jsonl(tmp / "pairwise.jsonl", pair_rows)
        write_json_atomic(tmp / SUMMARY_FILE, summary)
    # Human agreement needs scores.jsonl in place (harness.ratings reads it from judge/<name>/).
    human, note = human_spearman(experiment_dir, name)
    summary["reliability"]["spearman_human"], summary["reliability"]["spearman_human_note"] = human, note
    summary["wall_s"] = round(time.time() - started, 1)
    write_json_atomic(final / SUMMARY_FILE, summary)
    return summary


def _fmt(v, spec: str = ".2f") -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)


def format_summary(s: dict) -> str:
    rel = s["reliability"]
    lines = [
        f"judge {s['judge']} ({s['backend']}): {rel['verdict']}",
        f"  sanity: prefers the reference in {_fmt(rel['sanity_pass_rate'] and 100 * rel['sanity_pass_rate'], '.0f')} % "
        f"of {rel['sanity_n']} cases (bar: {rel['bar']})",
        f"  Spearman(correctness, key-fact recall): rho {_fmt(rel['spearman_key_fact']['rho'])} "
        f"p {_fmt(rel['spearman_key_fact']['p_value'], '.3f')} n {rel['spearman_key_fact']['n']}",
        f"  self-consistency: {_fmt(rel['self_consistency'])} "
        f"(n {rel['self_consistency_detail']['n']}, mean |diff| {_fmt(rel['self_consistency_detail']['mean_abs_diff'], '.3f')})",
    ]
    human = rel.get("spearman_human")
    if human:
        lines.append(
            "  Spearman with humans: "
            + ", ".join(
                f"{d} {_fmt((human.get(d) or {}).get('rho'))} (n {(human.get(d) or {}).get('n', 0)})"
                for d in DIMENSIONS
            )
        )
    else:
        lines.append(f"  Spearman with humans: n/a ({rel.get('spearman_human_note')})")
    diag = s["diagnostics"]
    lines.append(
        f"  probability-weighted scores: {_fmt(diag['probability_weighted_share'] and 100 * diag['probability_weighted_share'], '.0f')} %, "
        f"mean mass on score tokens {_fmt(diag['mean_score_token_mass'])}, failed scores {diag['failed_scores']}/{diag['scores']}"
    )
    lines.append(f"{'target':14s}" + "".join(f"{d:>28s}" for d in DIMENSIONS))
    for target, dims in s["targets"].items():
        cells = [f"{_fmt(v['mean'])} [{_fmt(v['ci_low'])}, {_fmt(v['ci_high'])}] n={v['n']}" for v in dims.values()]
        lines.append(f"{target:14s}" + "".join(f"{c:>28s}" for c in cells))
    for p in s["pairwise"]:
        lines.append(
            f"  pairwise {p['a']} vs {p['b']}: {p['wins']} wins / {p['ties']} ties / {p['losses']} losses, "
            f"position consistency {_fmt(p['position_consistency'])} (n {p['n']})"
        )
    return "\n".join(lines)
