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

from harness.io import atomic_dir, now_iso, read_jsonl, write_json_atomic, write_jsonl
from harness.judge.config import JudgeSettings, judge_name
from harness.judge.offline import import_deepeval
from harness.layout import (BASE_TARGET, GENERATIONS_FILE, JUDGE_SANITY_FILE, JUDGE_SCORES_FILE, SUMMARY_FILE, eval_dir,
                            generation_files, judge_dir)
from harness.eval.stats import mean_ci, spearman

DIMENSIONS = ("correctness", "relevance", "helpfulness")
REPO = Path(__file__).resolve().parents[2]
BENCHMARK_QA = REPO / "benchmarks" / "musicprod" / "data" / "qa.json"
BAR_TEXT = "prefers the reference over an off-topic answer in >= {:.0f} % of sanity cases"

# Explicit steps and anchored levels per dimension; every metric sees the question, the answer, the reference answer
# (Expected Output) and the key facts (Context).
RUBRICS = {
    "correctness": {
        "steps": [
            "Read the Input question, the Expected Output (an expert's reference answer) and the Context (the key facts a correct answer must contain).",
            "For each key fact in Context, decide whether the Actual Output states it or clearly implies it; wording, synonyms and language may differ, a bare keyword without the right meaning does not count.",
            "Look for claims in the Actual Output that contradict the Expected Output or are technically wrong about audio, music production or the named software.",
            "Pick the rubric level: missing key facts lower the level, a wrong claim lowers it more than an omission.",
        ],
        "levels": {
            1: "Wrong: contradicts the reference, contains none of the key facts, or does not answer.",
            2: "Mostly wrong: at most one key fact, together with errors or confusions.",
            3: "Partly correct: about half of the key facts and no serious error.",
            4: "Mostly correct: nearly all key facts, at most a minor inaccuracy.",
            5: "Fully correct: every key fact, consistent with the reference, no errors.",
        },
    },
    "relevance": {
        "steps": [
            "Read the Input question; the Expected Output and Context show what an on-topic answer covers.",
            "Decide whether the Actual Output addresses what was asked, rather than a neighbouring topic.",
            "Note digressions, padding and repeated sentences that do not serve the question.",
            "Pick the rubric level.",
        ],
        "levels": {
            1: "Off-topic: does not address the question at all.",
            2: "Touches the topic but mostly talks about something else or repeats itself.",
            3: "Addresses the question with substantial digressions or repetition.",
            4: "Addresses the question with minor digressions.",
            5: "Entirely focused on what was asked.",
        },
    },
    "helpfulness": {
        "steps": [
            "Read the Input question as a music producer who has to act on the answer; the Expected Output and Context show what a good answer gives them.",
            "Decide whether the Actual Output gives usable guidance: concrete settings, steps or explanations the asker can apply.",
            "Penalise vague, generic or misleading advice, and answers that would send the asker the wrong way.",
            "Pick the rubric level.",
        ],
        "levels": {
            1: "Useless or misleading: the asker could not act on it, or would act wrongly.",
            2: "Little help: vague or generic, no actionable guidance.",
            3: "Some help: a usable pointer, but incomplete or hard to follow.",
            4: "Helpful: clear, actionable guidance with small gaps.",
            5: "Very helpful: clear, complete and actionable, as good as the reference or better.",
        },
    },
}

PAIRWISE_PROMPT = """You are judging two answers to a music-production question. Use the reference answer and the key facts to decide which answer is more correct, more relevant to the question and more helpful. Length alone is no merit; the order in which the answers are shown must not matter.

Question:
{question}

Reference answer:
{reference}

Key facts:
{facts}

Answer A:
{a}

Answer B:
{b}

Return JSON with one key "verdict": "A" if answer A is better, "B" if answer B is better, "tie" if they are equally good or equally bad.

JSON:
"""


class JudgeError(ValueError):
    """Missing or malformed inputs of a judge run; the message names the file, line and field."""


# ---------------------------------------------------------------------------------------------------------------
# judge and metrics
# ---------------------------------------------------------------------------------------------------------------
def default_cache_dir(experiment_dir: str | Path) -> Path:
    return Path(experiment_dir) / "judge" / ".deepeval"


def make_judge(settings: JudgeSettings, cache_dir: str | Path | None):
    """The configured backend as a deepeval model; deepeval is imported offline with its folder in `cache_dir`."""
    import_deepeval(cache_dir)
    from harness.judge.backends import make_backend
    return make_backend(settings)


def rubric_metrics(judge) -> dict:
    """One deepeval G-Eval metric per dimension, with our steps and a 1..5 rubric (so no generated steps)."""
    from deepeval.metrics import GEval
    from deepeval.metrics.g_eval import Rubric
    from deepeval.test_case import LLMTestCaseParams as P

    class RubricGEval(GEval):
        # deepeval 2.9.3 starts evaluation_cost at None for non-native models and then adds the cost returned by
        # generate_raw_response to it (TypeError); raw responses were only expected from its own OpenAI models.
        def _evaluate(self, test_case, _additional_context=None):
            if self.evaluation_cost is None:
                self.evaluation_cost = 0.0
            return super()._evaluate(test_case, _additional_context=_additional_context)

    params = [P.INPUT, P.ACTUAL_OUTPUT, P.EXPECTED_OUTPUT, P.CONTEXT]
    return {dim: RubricGEval(name=dim, evaluation_params=params, evaluation_steps=spec["steps"],
                             rubric=[Rubric(score_range=(k, k), expected_outcome=v) for k, v in spec["levels"].items()],
                             model=judge, async_mode=False, top_logprobs=judge.settings.top_logprobs,
                             threshold=0.3, _include_g_eval_suffix=False)
            for dim, spec in RUBRICS.items()}


def fact_lines(key_facts) -> list[str]:
    out = []
    for kf in key_facts or []:
        out.append(kf.get("fact") if isinstance(kf, dict) else str(kf))
    return [f for f in out if f] or ["(none listed)"]


def score_answer(metrics: dict, judge, question: str, answer: str, reference: str, key_facts) -> dict:
    """{dim: 1..5 or None, reasons: {dim: str}, weighted: {dim: bool}, score_mass: {dim: float}, errors: {dim: str}}."""
    from deepeval.test_case import LLMTestCase
    case = LLMTestCase(input=question, actual_output=answer.strip() or "(no answer)", expected_output=reference,
                       context=fact_lines(key_facts))
    out = {"reasons": {}, "weighted": {}, "score_mass": {}, "errors": {}}
    for dim, metric in metrics.items():
        judge.last_call = {}
        try:
            metric.measure(case, _show_indicator=False)
            # G-Eval divides by 10 whatever the rubric range; back to the 1..5 levels.
            out[dim] = round(float(metric.score) * 10, 6)
            out["reasons"][dim] = metric.reason
        except Exception as e:  # a judge that emits unparsable output: recorded, counted, not fatal
            out[dim] = None
            out["errors"][dim] = f"{type(e).__name__}: {e}"
            continue
        diag = judge.last_call.get("diagnostics", {})
        out["weighted"][dim] = bool(judge.last_call.get("weighted", False))  # the backend returned logprobs
        mass = diag.get("score_mass", {}).get("score")
        if mass is not None:
            out["score_mass"][dim] = mass
    return out


def pairwise_verdict(judge, item: dict, answer_a: str, answer_b: str) -> str:
    """'A', 'B' or 'tie' for one presentation order (schema-constrained; no logprobs needed)."""
    from typing import Literal

    from pydantic import BaseModel

    class Verdict(BaseModel):
        verdict: Literal["A", "B", "tie"]

    prompt = PAIRWISE_PROMPT.format(question=item["question"], reference=item["reference"],
                                    facts="\n".join(f"- {f}" for f in fact_lines(item.get("key_facts"))),
                                    a=answer_a.strip() or "(no answer)", b=answer_b.strip() or "(no answer)")
    result = judge.generate(prompt, schema=Verdict)
    return result.verdict


# ---------------------------------------------------------------------------------------------------------------
# inputs
# ---------------------------------------------------------------------------------------------------------------
REQUIRED = ("id", "question", "reference", "answer")


def read_generations(path: Path) -> list[dict]:
    rows = read_jsonl(path, REQUIRED, JudgeError)
    if not rows:
        raise JudgeError(f"{path}: no generations")
    return rows


def experiment_generations(experiment_dir: Path) -> dict[str, list[dict]]:
    """{target: rows} for every eval/<target>/generations.jsonl, base first."""
    files = generation_files(experiment_dir)
    if not files:
        raise JudgeError(f"{eval_dir(experiment_dir)}/<target>/{GENERATIONS_FILE}: none found; run `musicprod eval` "
                         "first (the judge scores saved generations, it does not generate)")
    found = {target: read_generations(p) for target, p in files.items()}
    return dict(sorted(found.items(), key=lambda kv: (kv[0] != BASE_TARGET, kv[0])))


def common_items(generations: dict[str, list[dict]], max_items: int) -> list[str]:
    """Item ids every target answered, in the first target's order, cut to max_items (0 = all)."""
    first = next(iter(generations.values()))
    shared = set.intersection(*({r["id"] for r in rows} for rows in generations.values()))
    ids = [r["id"] for r in first if r["id"] in shared]
    return ids[:max_items] if max_items else ids


def sanity_cases(qa_items: list[dict], n: int) -> list[dict]:
    """n questions spread over the benchmark; each pairs its reference with an off-topic answer: the reference of
    the next item (same language where possible) from a different topic."""
    if n <= 0 or not qa_items:
        return []
    n = min(n, len(qa_items))
    picks = sorted({round(i * len(qa_items) / n) for i in range(n)})
    cases = []
    for idx in picks:
        item = qa_items[idx]
        rotated = qa_items[idx + 1:] + qa_items[:idx]
        other = next((o for o in rotated if o["topic"] != item["topic"] and o.get("lang") == item.get("lang")),
                     next((o for o in rotated if o["topic"] != item["topic"]), None))
        if other is None:
            continue
        cases.append({"id": item["id"], "question": item["question"], "reference": item["reference"],
                      "key_facts": item.get("key_facts", []), "off_topic_id": other["id"],
                      "off_topic_answer": other["reference"]})
    return cases


def load_sanity_questions(path: Path = BENCHMARK_QA) -> list[dict]:
    from harness.data.check import load_qa
    return load_qa(path)


# ---------------------------------------------------------------------------------------------------------------
# reliability and aggregation
# ---------------------------------------------------------------------------------------------------------------
def mean_score(scores: dict) -> float | None:
    values = [scores.get(d) for d in DIMENSIONS]
    return None if any(v is None for v in values) else sum(values) / len(values)


def sanity_pass_rate(results: list[dict]) -> float | None:
    """Share of sanity cases where the reference scored strictly higher (mean of the three dimensions); a case the
    judge could not score counts as a failure."""
    if not results:
        return None
    return sum(1 for r in results if r["prefers_reference"]) / len(results)


def is_reliable(pass_rate: float | None, bar: float) -> bool:
    return pass_rate is not None and pass_rate >= bar


def self_consistency(pairs: list[tuple[dict, dict]]) -> dict:
    """Share of repeated (item, dimension) judgements that land on the same 1..5 level, and the mean |difference|."""
    same, diffs = [], []
    for first, second in pairs:
        for d in DIMENSIONS:
            a, b = first.get(d), second.get(d)
            if a is None or b is None:
                continue
            same.append(round(a) == round(b))
            diffs.append(abs(a - b))
    if not same:
        return {"agreement": None, "mean_abs_diff": None, "n": 0}
    return {"agreement": sum(same) / len(same), "mean_abs_diff": sum(diffs) / len(diffs), "n": len(same)}


def combine_orders(first: str, second_swapped: str) -> tuple[str, bool]:
    """Verdicts from (a, b) and from (b, a) -> (final verdict for a: win/tie/loss, consistent?).

    An inconsistent pair (the verdict follows the position, not the answer) counts as a tie."""
    to_a = {"A": "win", "B": "loss", "tie": "tie"}
    swapped_to_a = {"A": "loss", "B": "win", "tie": "tie"}
    v1, v2 = to_a[first], swapped_to_a[second_swapped]
    return (v1, True) if v1 == v2 else ("tie", False)


def pairwise_summary(rows: list[dict]) -> list[dict]:
    out = {}
    for r in rows:
        t = out.setdefault((r["a"], r["b"]), {"a": r["a"], "b": r["b"], "wins": 0, "ties": 0, "losses": 0,
                                              "consistent": 0, "n": 0})
        t[{"win": "wins", "tie": "ties", "loss": "losses"}[r["verdict"]]] += 1
        t["consistent"] += r["consistent"]
        t["n"] += 1
    for t in out.values():
        t["position_consistency"] = t.pop("consistent") / t["n"] if t["n"] else None
    return list(out.values())


def human_spearman(experiment_dir: Path, name: str) -> tuple[dict | None, str | None]:
    """Judge vs human ratings (harness.ratings reads judge/<name>/scores.jsonl); None when nobody rated yet."""
    try:
        from harness import ratings
    except ImportError as e:  # ratings land with their own issue; the judge works without them
        return None, f"harness.ratings unavailable: {e}"
    try:
        summary = ratings.summarize(experiment_dir, judge=name)
    except Exception as e:  # a broken ratings db must not lose the judge run
        return None, f"ratings summary failed: {type(e).__name__}: {e}"
    if summary is None:
        return None, "no human ratings yet (musicprod rate)"
    return summary.get("judge_spearman"), None


# ---------------------------------------------------------------------------------------------------------------
# the run
# ---------------------------------------------------------------------------------------------------------------
def run_judge(experiment_dir: str | Path, settings: JudgeSettings, sanity_path: Path = BENCHMARK_QA,
              progress: bool = True) -> dict:
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
    repeat_keys = [(t, i) for t in generations for i in ids][:settings.repeats]

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
            score_rows.append({"target": target, "id": item_id, "lang": item.get("lang"), "topic": item.get("topic"),
                               **{d: s[d] for d in DIMENSIONS}, "reasons": s["reasons"], "weighted": s["weighted"],
                               "score_mass": s["score_mass"], "errors": s["errors"],
                               "key_fact_recall": (item.get("metrics") or {}).get("key_fact_recall")})

    sanity_rows = []
    for case in cases:
        ref, off = score(case, case["reference"]), score(case, case["off_topic_answer"])
        ref_mean, off_mean = mean_score(ref), mean_score(off)
        sanity_rows.append({"id": case["id"], "off_topic_id": case["off_topic_id"],
                            "reference": {d: ref[d] for d in DIMENSIONS}, "off_topic": {d: off[d] for d in DIMENSIONS},
                            "prefers_reference": ref_mean is not None and off_mean is not None and ref_mean > off_mean})

    first_scores = {(r["target"], r["id"]): r for r in score_rows}
    consistency_rows = []
    for target, item_id in repeat_keys:
        item = by_target[target][item_id]
        again = score(item, item["answer"])
        consistency_rows.append({"target": target, "id": item_id,
                                 "first": {d: first_scores[(target, item_id)][d] for d in DIMENSIONS},
                                 "second": {d: again[d] for d in DIMENSIONS}})

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
            pair_rows.append({"a": a, "b": b, "id": item_id, "a_first": v1, "b_first": v2,
                              "verdict": verdict, "consistent": consistent})
            bar.update(2)
    bar.close()

    # reliability
    pass_rate = sanity_pass_rate(sanity_rows)
    kfr = [(r["correctness"], r["key_fact_recall"]) for r in score_rows
           if r["correctness"] is not None and isinstance(r["key_fact_recall"], (int, float))]
    consistency = self_consistency([(r["first"], r["second"]) for r in consistency_rows])
    scored = [r[d] for r in score_rows for d in DIMENSIONS]
    weighted = [w for r in score_rows for w in r["weighted"].values()]
    masses = [m for r in score_rows for m in r["score_mass"].values()]
    reliable = is_reliable(pass_rate, settings.reliability_bar)
    summary = {
        "judge": name, "backend": settings.backend, "model": settings.model,
        "base_url": settings.base_url if settings.backend == "openai" else None,
        "created_at": now_iso(), "experiment": experiment_dir.name,
        "reliable": reliable, "use_for_champion": reliable,
        "reliability": {
            "sanity_pass_rate": pass_rate, "sanity_n": len(sanity_rows),
            "spearman_key_fact": spearman([x for x, _ in kfr], [y for _, y in kfr]),
            "self_consistency": consistency["agreement"], "self_consistency_detail": consistency,
            "spearman_human": None, "spearman_human_note": None,
            "bar": BAR_TEXT.format(100 * settings.reliability_bar),
            "verdict": ("reliable" if reliable else
                        "UNRELIABLE: excluded from champion selection" if pass_rate is not None else
                        "UNRELIABLE: no sanity set was run (sanity_items=0), so reliability is unknown"),
        },
        "targets": {t: {d: mean_ci([r[d] for r in score_rows if r["target"] == t and r[d] is not None])
                        for d in DIMENSIONS} for t in by_target},
        "pairwise": pairwise_summary([r for r in pair_rows if "verdict" in r]),
        "items": {"per_target": len(ids), "targets": list(by_target), "ids": ids},
        "diagnostics": {
            "failed_scores": sum(1 for v in scored if v is None), "scores": len(scored),
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
    lines = [f"judge {s['judge']} ({s['backend']}): {rel['verdict']}",
             f"  sanity: prefers the reference in {_fmt(rel['sanity_pass_rate'] and 100 * rel['sanity_pass_rate'], '.0f')} % "
             f"of {rel['sanity_n']} cases (bar: {rel['bar']})",
             f"  Spearman(correctness, key-fact recall): rho {_fmt(rel['spearman_key_fact']['rho'])} "
             f"p {_fmt(rel['spearman_key_fact']['p_value'], '.3f')} n {rel['spearman_key_fact']['n']}",
             f"  self-consistency: {_fmt(rel['self_consistency'])} "
             f"(n {rel['self_consistency_detail']['n']}, mean |diff| {_fmt(rel['self_consistency_detail']['mean_abs_diff'], '.3f')})"]
    human = rel.get("spearman_human")
    if human:
        lines.append("  Spearman with humans: " + ", ".join(f"{d} {_fmt((human.get(d) or {}).get('rho'))}"
                                                          f" (n {(human.get(d) or {}).get('n', 0)})" for d in DIMENSIONS))
    else:
        lines.append(f"  Spearman with humans: n/a ({rel.get('spearman_human_note')})")
    diag = s["diagnostics"]
    lines.append(f"  probability-weighted scores: {_fmt(diag['probability_weighted_share'] and 100 * diag['probability_weighted_share'], '.0f')} %, "
                 f"mean mass on score tokens {_fmt(diag['mean_score_token_mass'])}, failed scores {diag['failed_scores']}/{diag['scores']}")
    lines.append(f"{'target':14s}" + "".join(f"{d:>28s}" for d in DIMENSIONS))
    for target, dims in s["targets"].items():
        cells = [f"{_fmt(v['mean'])} [{_fmt(v['ci_low'])}, {_fmt(v['ci_high'])}] n={v['n']}" for v in dims.values()]
        lines.append(f"{target:14s}" + "".join(f"{c:>28s}" for c in cells))
    for p in s["pairwise"]:
        lines.append(f"  pairwise {p['a']} vs {p['b']}: {p['wins']} wins / {p['ties']} ties / {p['losses']} losses, "
                     f"position consistency {_fmt(p['position_consistency'])} (n {p['n']})")
    return "\n".join(lines)
