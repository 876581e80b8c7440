"""A fixture experiment for the rating tests: eval/<target>/generations.jsonl for a few targets (CONTRACTS.md)."""

from __future__ import annotations

import json
from pathlib import Path

TARGETS = ("base", "hf-lora", "hf-qlora")


def question(i: int) -> dict:
    return {
        "id": f"qa-{i:03d}",
        "lang": "de" if i % 3 == 0 else "en",
        "topic": "mixing",
        "difficulty": "beginner",
        "question": (
            f"Mein Kompressor nimmt {i + 2} dB vom Gesang weg. Wie viel Make-up-Gain brauche ich? (#{i})"
            if i % 3 == 0
            else f"My compressor takes {i + 2} dB off the vocal. How much makeup gain should I add? (#{i})"
        ),
        "reference": f"About {i + 2} dB, so that the level matches with the compressor bypassed and engaged; "
        "match by ear with the bypass switch, not by the meters alone.",
        "key_facts": [{"fact": "match level", "any_of": ["match"]}],
    }


STYLES = (
    "Add roughly {db} dB of makeup gain so the compressed signal is as loud as the dry one; compare by "
    "bypassing the compressor and adjust until the level does not jump.",
    "Use the makeup gain knob. {db} dB is a good start.",
    "Turn the output up until it sounds louder, maybe {db} dB or more, louder usually sounds better.",
)


def answer_text(target: str, i: int, version: int = 1) -> str:
    # Deliberately free of target names: the blind tests search responses for them.
    text = STYLES[TARGETS.index(target) % len(STYLES)].format(db=i + 2)
    return text if version == 1 else f"{text} (regenerated, v{version})"


def write_generations(experiment_dir: Path, target: str, n: int, version: int = 1) -> Path:
    path = experiment_dir / "eval" / target / "generations.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            row = {
                **question(i),
                "answer": answer_text(target, i, version),
                "metrics": {"rougeL": 0.1, "bleu": 1.0, "chrf": 10.0, "key_fact_recall": 0.0, "semscore": 0.5},
            }
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path


def make_experiment(root: Path, n: int = 6, targets=TARGETS) -> Path:
    experiment_dir = root / "exp"
    for target in targets:
        write_generations(experiment_dir, target, n)
    return experiment_dir
