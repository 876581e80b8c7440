"""Merge writers' files into the landed data: augmentation shards, and the dev set.

    python data/merge.py augmented SHARD.jsonl [SHARD.jsonl ...]   -> data/music_production_augmented.json
    python data/merge.py dev QA.json MC.json                      -> benchmarks/musicprod/data/dev/{qa,mc}.json

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
from harness.data.check import as_items, contaminating_ids, load_benchmark  # noqa: E402
from harness.data.load import load_training_set  # noqa: E402
from harness.io import read_jsonl, write_json_atomic  # noqa: E402

SEED = REPO / "data" / "music_production_dataset.json"
OUT = REPO / "data" / "music_production_augmented.json"
HELDOUT = REPO / "benchmarks" / "musicprod" / "data"
DEV = HELDOUT / "dev"
COPIED = ("lang", "topic", "subtopic", "difficulty", "source_type")


def merge(shards: list[str]) -> list[dict]:
    seed = {r["id"]: r for r in load_training_set(SEED)}
    rows = []
    for shard in shards:
        for r in read_jsonl(shard, ("id", "augmented_from", "style", "instruction", "response")):
            source = seed[r["augmented_from"]]
            rows.append(
                {
                    "id": r["id"],
                    **{k: source[k] for k in COPIED if k in source},
                    "style": r["style"],
                    "augmented_from": r["augmented_from"],
                    "instruction": r["instruction"].strip(),
                    "response": r["response"].strip(),
                }
            )
    qa, mc = load_benchmark(HELDOUT)
    dropped = contaminating_ids(rows, as_items(qa, mc), semantic=True)
    seen = {" ".join(r["instruction"].lower().split()) for r in seed.values()}
    kept, duplicates = [], 0
    for r in rows:  # an instruction asked twice (two seed items on one fact) is kept once
        key = " ".join(r["instruction"].lower().split())
        duplicates += key in seen
        if r["id"] not in dropped and key not in seen:
            kept.append(r)
        seen.add(key)
    print(
        f"{len(rows)} augmentations, {len(dropped)} dropped as overlapping the held-out, {duplicates} as exact "
        f"duplicate instructions, {len(kept)} kept"
    )
    return sorted(kept, key=lambda r: r["id"])


def merge_dev(qa_path: str, mc_path: str) -> None:
    """Dev items that overlap the held-out (a choice made on dev would see it) or the training text (seed and
    augmentations: dev would flatter a recipe that memorised one phrasing) are dropped, by the data check's test."""
    from harness.data.check import heldout_text, load_mc, load_qa
    from harness.data.load import load_augmented_set

    qa, mc = load_qa(Path(qa_path)), load_mc(Path(mc_path))
    held_qa, held_mc = load_benchmark(HELDOUT)
    held_as_train = [
        {"id": r["id"], "instruction": r["question"], "response": heldout_text(r)}
        for _, r in as_items(held_qa, held_mc)
    ]
    train = load_training_set(SEED) + load_augmented_set(OUT)
    dev_items = as_items(qa, mc)
    from harness.data.check import overlaps

    dropped = {r["id"] for _, r, _, _ in overlaps(held_as_train, dev_items, semantic=True)}
    dropped |= {r["id"] for _, r, _, _ in overlaps(train, dev_items, semantic=True)}
    keep = lambda rows: [r for r in rows if r["id"] not in dropped]
    write_json_atomic(DEV / "qa.json", keep(qa))
    write_json_atomic(DEV / "mc.json", keep(mc))
    print(
        f"dev: {len(qa)} QA + {len(mc)} MC written, {len(dropped)} dropped as overlapping the held-out or training "
        f"({sorted(dropped)}); kept {len(keep(qa))} QA + {len(keep(mc))} MC"
    )


if __name__ == "__main__":
    set_offline_env()
    command, paths = sys.argv[1], sys.argv[2:]
    if command == "augmented":
        write_json_atomic(OUT, merge(paths))
        print(f"wrote {OUT}")
    elif command == "dev":
        merge_dev(*paths)
    else:
        raise SystemExit(__doc__)
