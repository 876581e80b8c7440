"""Merge writers' augmentation shards (JSONL) into data/music_production_augmented.json.

    python data/merge_augmented.py SHARD.jsonl [SHARD.jsonl ...]

Each shard line is {id, augmented_from, style, instruction, response}; the merge copies lang, topic, subtopic,
difficulty and source_type from the seed item, drops every augmentation that overlaps the held-out benchmark
(13-gram or MiniLM >= 0.9, the same test `musicprod data check` applies to all training text) and repeated
instructions, and writes the file atomically. Kept in the repo so the next batch of augmentations goes through the same door.
"""
from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from harness import set_offline_env  # noqa: E402
from harness.data import load_training_set  # noqa: E402
from harness.datacheck import as_items, contaminating_ids, load_benchmark  # noqa: E402
from harness.io import read_jsonl, write_json_atomic  # noqa: E402

SEED = REPO / "data" / "music_production_dataset.json"
OUT = REPO / "data" / "music_production_augmented.json"
COPIED = ("lang", "topic", "subtopic", "difficulty", "source_type")


def merge(shards: list[str]) -> list[dict]:
    seed = {r["id"]: r for r in load_training_set(SEED)}
    rows = []
    for shard in shards:
        for r in read_jsonl(shard, ("id", "augmented_from", "style", "instruction", "response")):
            source = seed[r["augmented_from"]]
            rows.append({"id": r["id"], **{k: source[k] for k in COPIED if k in source}, "style": r["style"],
                         "augmented_from": r["augmented_from"], "instruction": r["instruction"].strip(),
                         "response": r["response"].strip()})
    qa, mc = load_benchmark(REPO / "benchmarks" / "musicprod" / "data")
    dropped = contaminating_ids(rows, as_items(qa, mc), semantic=True)
    seen = {" ".join(r["instruction"].lower().split()) for r in seed.values()}
    kept, duplicates = [], 0
    for r in rows:  # an instruction asked twice (two seed items on one fact) is kept once
        key = " ".join(r["instruction"].lower().split())
        duplicates += key in seen
        if r["id"] not in dropped and key not in seen:
            kept.append(r)
        seen.add(key)
    print(f"{len(rows)} augmentations, {len(dropped)} dropped as overlapping the held-out, {duplicates} as exact "
          f"duplicate instructions, {len(kept)} kept")
    return sorted(kept, key=lambda r: r["id"])


if __name__ == "__main__":
    set_offline_env()
    write_json_atomic(OUT, merge(sys.argv[1:]))
    print(f"wrote {OUT}")
