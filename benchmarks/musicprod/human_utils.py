"""lm-eval glue for `musicprod_human`: queue each generation for blind human rating, report the human scores.

lm-eval metrics are computed at the end of a run, but people rate afterwards; so the task is run twice: the first
run queues the answers (and reports "not yet rated (0 of n)"), raters score them in `musicprod rate`, and a second
run (greedy decoding: the same answers) reports the human means. Each metric aggregates over the run's answers:
a number once at least `min_rated` of them (a fraction, default 1.0 = all) have a rating, else the string
"not yet rated (k of n)". `human_rated` always reports "k of n".

Data resolve against this file (benchmarks/musicprod/data/qa.json), not the cwd; the experiment directory defaults
to <repo>/runs/default and the target name to "lm-eval".
"""

from __future__ import annotations

import os
from pathlib import Path

import datasets

from harness.data.check import load_qa
from harness.layout import ratings_db_path
from harness.ratings import DIMENSIONS, RatingStore, answer_uid, human_scores

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
DEFAULT_TARGET = "lm-eval"


def load_human_dataset(
    qa_path: str | None = None,
    experiment_dir: str | None = None,
    target: str | None = None,
    min_rated: float | None = None,
    **_metadata,
) -> dict:
    """The QA items, each tagged with where its answer is queued (process_results only sees the doc)."""
    rows = load_qa(Path(qa_path or os.environ.get("MUSICPROD_QA_PATH") or HERE / "data" / "qa.json"))
    experiment = Path(experiment_dir or os.environ.get("MUSICPROD_RATING_EXPERIMENT") or REPO / "runs" / "default")
    target = target or os.environ.get("MUSICPROD_RATING_TARGET") or DEFAULT_TARGET
    min_rated = 1.0 if min_rated is None else float(min_rated)
    if not 0.0 < min_rated <= 1.0:
        raise ValueError(f"musicprod_human: metadata 'min_rated' must be in (0, 1], got {min_rated}")
    db = str(ratings_db_path(experiment.resolve()))
    for row in rows:
        row.update(rating_db=db, rating_target=target, rating_min=min_rated)
    return {"test": datasets.Dataset.from_list(rows)}


def process_results(doc: dict, results: list[str]) -> dict:
    """Queue the answer (one committed transaction) and hand its opaque uid to the aggregations."""
    answer = results[0].strip()
    store = RatingStore(doc["rating_db"])
    store.add_answers(
        [
            {
                "target": doc["rating_target"],
                "item_id": doc["id"],
                "question": doc["question"],
                "reference": doc["reference"],
                "answer": answer,
                "lang": doc["lang"],
                "topic": doc["topic"],
                "difficulty": doc.get("difficulty"),
            }
        ],
        source="lm-eval",
    )
    handle = (doc["rating_db"], answer_uid(doc["rating_target"], doc["id"], answer), doc["rating_min"])
    return {f"human_{d}": handle for d in DIMENSIONS} | {"human_rated": handle}


def _lookup(items: list) -> dict:
    """Human scores of the run's answers; all items of one run share the database and threshold."""
    db, _, min_rated = items[0]
    scores = human_scores(db, [uid for _, uid, _ in items])
    scores["min_rated"] = min_rated
    return scores


def _aggregate(items: list, dimension: str):
    s = _lookup(items)
    if s["rated"] == 0 or s["rated"] < s["min_rated"] * s["n"]:
        return f"not yet rated ({s['rated']} of {s['n']})"
    return float(s[dimension])


def aggregate_correctness(items: list):
    return _aggregate(items, "correctness")


def aggregate_relevance(items: list):
    return _aggregate(items, "relevance")


def aggregate_helpfulness(items: list):
    return _aggregate(items, "helpfulness")


def aggregate_rated(items: list) -> str:
    s = _lookup(items)
    return f"{s['rated']} of {s['n']}"
