"""lm-eval glue for `musicprod_judge`: the held-out QA answered by generation, each answer scored by the LLM judge
(deepeval G-Eval, 1-5 per dimension), plus the judge's sanity pass rate so an unreliable judge shows in the results.

Judge settings (harness.judge.config.JudgeSettings), lowest to highest precedence: the defaults (local
smollm2-135m-instruct), MUSICPROD_JUDGE_CONFIG (a YAML file), MUSICPROD_JUDGE_<FIELD> variables, and task metadata:
    --metadata '{"judge": {"backend": "openai", "base_url": "http://127.0.0.1:11434/v1", "model": "qwen2.5:7b-instruct"},
                 "experiment_dir": "runs/default"}'
deepeval's folder goes to <experiment_dir>/judge/.deepeval (experiment_dir defaults to <repo>/runs/default).
`judge_sanity_pass_rate` runs the sanity set once per run (`sanity_items` questions: the reference vs an off-topic
answer); below the bar (90 %) a warning says the judge scores are unreliable.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
from pathlib import Path

import datasets

from harness.data.check import load_qa
from harness.judge.config import settings_from_env

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
log = logging.getLogger("musicprod_judge")


def load_judge_dataset(
    qa_path: str | None = None, judge: dict | None = None, experiment_dir: str | None = None, **_metadata
) -> dict:
    """The QA items, each tagged with the judge settings (process_results only sees the doc); bad settings fail here."""
    rows = load_qa(Path(qa_path or os.environ.get("MUSICPROD_QA_PATH") or HERE / "data" / "qa.json"))
    settings = settings_from_env(values=judge or {})
    experiment = Path(experiment_dir or os.environ.get("MUSICPROD_JUDGE_EXPERIMENT") or REPO / "runs" / "default")
    cache_dir = settings.cache_dir or str(experiment.resolve() / "judge" / ".deepeval")
    encoded = json.dumps({**settings.__dict__, "cache_dir": cache_dir}, sort_keys=True)
    for row in rows:
        row["judge_settings"] = encoded
    return {"test": datasets.Dataset.from_list(rows)}


@functools.lru_cache(maxsize=2)
def _judge(encoded: str):
    """One judge (model loaded once) and its metrics per distinct settings in this process."""
    from harness.judge.config import load_judge_settings
    from harness.judge.rubrics import make_judge, rubric_metrics

    settings = load_judge_settings(values=json.loads(encoded))
    judge = make_judge(settings, settings.cache_dir)
    return judge, rubric_metrics(judge)


def process_results(doc: dict, results: list[str]) -> dict:
    from harness.judge.rubrics import score_answer
    from harness.rubric import DIMENSIONS

    judge, metrics = _judge(doc["judge_settings"])
    scores = score_answer(metrics, judge, doc["question"], results[0].strip(), doc["reference"], doc.get("key_facts"))
    return {f"judge_{d}": scores[d] for d in DIMENSIONS} | {"judge_sanity_pass_rate": doc["judge_settings"]}


def mean_scored(items: list) -> float:
    """Mean over the answers the judge could score (an unparsable judge output is None)."""
    values = [v for v in items if v is not None]
    return sum(values) / len(values) if values else math.nan


@functools.lru_cache(maxsize=2)
def _sanity(encoded: str) -> float:
    from harness.judge.inputs import load_sanity_questions, sanity_cases
    from harness.judge.reliability import mean_score, sanity_pass_rate
    from harness.judge.rubrics import score_answer

    judge, metrics = _judge(encoded)
    rows = []
    for case in sanity_cases(load_sanity_questions(), judge.settings.sanity_items):
        ref = score_answer(metrics, judge, case["question"], case["reference"], case["reference"], case["key_facts"])
        off = score_answer(
            metrics, judge, case["question"], case["off_topic_answer"], case["reference"], case["key_facts"]
        )
        r, o = mean_score(ref), mean_score(off)
        rows.append({"prefers_reference": r is not None and o is not None and r > o})
    rate = sanity_pass_rate(rows)
    if rate is None:
        log.warning("musicprod_judge: sanity_items=0, the judge's reliability is unknown")
        return math.nan
    if rate < judge.settings.reliability_bar:
        log.warning(
            "musicprod_judge: judge %s prefers the reference in only %.0f %% of %d sanity cases (bar %.0f %%): "
            "its scores are UNRELIABLE",
            judge.get_model_name(),
            100 * rate,
            len(rows),
            100 * judge.settings.reliability_bar,
        )
    return rate


def aggregate_sanity(items: list) -> float:
    return _sanity(items[0])
