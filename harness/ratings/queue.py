"""The rating queue from an evaluation: every target's generations.jsonl becomes answers to rate."""

from __future__ import annotations

from pathlib import Path

from harness.io import read_jsonl
from harness.layout import generation_files
from harness.ratings.store import RatingError, RatingStore


def read_generations(path: Path, target: str) -> list[dict]:
    """eval/<target>/generations.jsonl -> queue rows; errors name file, line and field."""
    return [
        {
            "target": target,
            "item_id": rec["id"],
            "question": rec["question"],
            "answer": rec["answer"],
            "reference": rec.get("reference"),
            "lang": rec.get("lang"),
            "topic": rec.get("topic"),
            "difficulty": rec.get("difficulty"),
        }
        for rec in read_jsonl(path, ("id", "question", "answer"), RatingError)
    ]


def sync_queue(experiment_dir: str | Path, store: RatingStore | None = None) -> dict:
    """Queue every target's eval generations; returns {target: answers in file} (new ones are added)."""
    store = store or RatingStore.for_experiment(experiment_dir)
    counts = {}
    for target, path in generation_files(experiment_dir).items():
        rows = read_generations(path, target)
        store.add_answers(rows, source="eval")
        counts[target] = len(rows)
    return counts
