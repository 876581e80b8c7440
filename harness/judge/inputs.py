"""What a judge run reads: the experiment's saved generations and the sanity questions."""

from __future__ import annotations

from pathlib import Path

from harness.io import read_jsonl
from harness.layout import BASE_TARGET, GENERATIONS_FILE, eval_dir, generation_files

REPO = Path(__file__).resolve().parents[2]
BENCHMARK_QA = REPO / "benchmarks" / "musicprod" / "data" / "qa.json"


class JudgeError(ValueError):
    """Missing or malformed inputs of a judge run; the message names the file, line and field."""


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
        raise JudgeError(
            f"{eval_dir(experiment_dir)}/<target>/{GENERATIONS_FILE}: none found; run `musicprod eval` "
            "first (the judge scores saved generations, it does not generate)"
        )
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
        rotated = qa_items[idx + 1 :] + qa_items[:idx]
        other = next(
            (o for o in rotated if o["topic"] != item["topic"] and o.get("lang") == item.get("lang")),
            next((o for o in rotated if o["topic"] != item["topic"]), None),
        )
        if other is None:
            continue
        cases.append(
            {
                "id": item["id"],
                "question": item["question"],
                "reference": item["reference"],
                "key_facts": item.get("key_facts", []),
                "off_topic_id": other["id"],
                "off_topic_answer": other["reference"],
            }
        )
    return cases


def load_sanity_questions(path: Path = BENCHMARK_QA) -> list[dict]:
    from harness.data.check import load_qa

    return load_qa(path)
