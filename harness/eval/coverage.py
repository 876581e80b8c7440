"""Key-fact coverage: which evaluation facts the training data states, so recall can be read against it.

A QA item's key fact is *stated in training* when one of its own regexes matches some training response, and
*in the nearest item* when it matches the response of the training item whose instruction is nearest to the
question (MiniLM cosine). Recall on stated facts is what fine-tuning can teach; recall on the others measures
what the base model brings (or guesses). Computed once per (training text, question file) and cached.
"""

from __future__ import annotations

import hashlib
import json
import re

from harness.io import cache_dir, write_json_atomic

SEPARATOR = "\n\x00\n"  # joins training responses; a match containing it spans two items and does not count


def _key(train: list[dict], qa: list[dict]) -> str:
    h = hashlib.sha256()
    for r in train:
        h.update(json.dumps([r["id"], r["instruction"], r["response"]], ensure_ascii=False).encode())
    for r in qa:
        h.update(json.dumps([r["id"], r["question"], r["key_facts"]], ensure_ascii=False).encode())
    return h.hexdigest()[:24]


def _stated(pattern: str, joined: str) -> bool:
    return any(SEPARATOR not in m.group(0) for m in re.finditer(pattern, joined, re.IGNORECASE))


def nearest_training_items(train: list[dict], questions: list[str]) -> list[int]:
    """Index of the training item whose instruction is nearest (MiniLM cosine) to each question."""
    from harness.data.embeddings import encode

    sims = encode(questions) @ encode([r["instruction"] for r in train]).T
    return [int(i) for i in sims.argmax(axis=1)]


def compute_coverage(train: list[dict], qa: list[dict]) -> dict[str, dict]:
    joined = SEPARATOR.join(r["response"] for r in train)
    nearest = nearest_training_items(train, [r["question"] for r in qa])
    out = {}
    for item, j in zip(qa, nearest):
        facts = [
            {
                "stated": any(_stated(p, joined) for p in f["any_of"]),
                "in_nearest": any(re.search(p, train[j]["response"], re.IGNORECASE) for p in f["any_of"]),
            }
            for f in item["key_facts"]
        ]
        out[item["id"]] = {"nearest_train_id": train[j]["id"], "facts": facts}
    return out


def fact_coverage(train: list[dict], qa: list[dict]) -> dict[str, dict]:
    """{qa id: {nearest_train_id, facts: [{stated, in_nearest}] in key_facts order}}, cached on disk."""
    path = cache_dir("coverage") / f"{_key(train, qa)}.json"
    if path.exists():
        return json.loads(path.read_text())
    coverage = compute_coverage(train, qa)
    write_json_atomic(path, coverage)
    return coverage


def coverage_stats(coverage: dict[str, dict]) -> dict[str, float]:
    """Shares of all key facts stated in training / in the nearest item, and the per-item mean of those shares."""
    facts = [f for c in coverage.values() for f in c["facts"]]
    per_item = lambda k: (
        sum(sum(f[k] for f in c["facts"]) / len(c["facts"]) for c in coverage.values()) / max(1, len(coverage))
    )
    return {
        "facts": len(facts),
        "stated_share": sum(f["stated"] for f in facts) / max(1, len(facts)),
        "in_nearest_share": sum(f["in_nearest"] for f in facts) / max(1, len(facts)),
        "stated_per_item": per_item("stated"),
        "in_nearest_per_item": per_item("in_nearest"),
    }


def fact_hits(key_facts: list[dict], text: str) -> list[bool]:
    return [any(re.search(p, text, re.IGNORECASE) for p in f["any_of"]) for f in key_facts]


def recall_over(row: dict, coverage: dict, which: str, stated: bool) -> float | None:
    """Key-fact recall of one answer over only the facts whose coverage flag `which` equals `stated`
    (None when the item has no such fact)."""
    flags = (coverage.get(row["id"]) or {}).get("facts")
    if not flags:
        return None
    hits = [h for h, f in zip(fact_hits(row["key_facts"], row["answer"]), flags) if f[which] == stated]
    return sum(hits) / len(hits) if hits else None


COVERAGE_SLICES = {
    "stated in training": ("stated", True),
    "not stated in training": ("stated", False),
    "in the nearest training item": ("in_nearest", True),
}
