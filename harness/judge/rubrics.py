"""The judge's rubrics and how one answer is scored: deepeval G-Eval metrics with explicit steps and anchored
levels per dimension (they see the question, the answer, the reference and the key facts), and the pairwise prompt."""

from __future__ import annotations

from pathlib import Path

from harness.judge.config import JudgeSettings
from harness.judge.offline import import_deepeval

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
    return {
        dim: RubricGEval(
            name=dim,
            evaluation_params=params,
            evaluation_steps=spec["steps"],
            rubric=[Rubric(score_range=(k, k), expected_outcome=v) for k, v in spec["levels"].items()],
            model=judge,
            async_mode=False,
            top_logprobs=judge.settings.top_logprobs,
            threshold=0.3,
            _include_g_eval_suffix=False,
        )
        for dim, spec in RUBRICS.items()
    }


def fact_lines(key_facts) -> list[str]:
    out = []
    for kf in key_facts or []:
        out.append(kf.get("fact") if isinstance(kf, dict) else str(kf))
    return [f for f in out if f] or ["(none listed)"]


def score_answer(metrics: dict, judge, question: str, answer: str, reference: str, key_facts) -> dict:
    """{dim: 1..5 or None, reasons: {dim: str}, weighted: {dim: bool}, score_mass: {dim: float}, errors: {dim: str}}."""
    from deepeval.test_case import LLMTestCase

    case = LLMTestCase(
        input=question,
        actual_output=answer.strip() or "(no answer)",
        expected_output=reference,
        context=fact_lines(key_facts),
    )
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

    prompt = PAIRWISE_PROMPT.format(
        question=item["question"],
        reference=item["reference"],
        facts="\n".join(f"- {f}" for f in fact_lines(item.get("key_facts"))),
        a=answer_a.strip() or "(no answer)",
        b=answer_b.strip() or "(no answer)",
    )
    result = judge.generate(prompt, schema=Verdict)
    return result.verdict
