"""A fixture experiment for the rating tests: eval/<target>/generations.jsonl for a few targets (CONTRACTS.md)."""
from __future__ import annotations

import json
from pathlib import Path

TARGETS = ("base", "hf-lora", "hf-qlora")


def question(i: int) -> dict:
    return {"id": f"qa-{i:03d}", "lang": "de" if i % 3 == 0 else "en", "topic": "mixing", "difficulty": "beginner",
            "question": f"Question {i}: how much makeup gain after {i + 2} dB of gain reduction?",
            "reference": f"Reference {i}: add back about {i + 2} dB so the level matches before and after.",
            "key_facts": [{"fact": "match level", "any_of": ["match"]}]}


def answer_text(target: str, i: int, version: int = 1) -> str:
    # Deliberately free of target names: the blind tests search responses for them.
    return f"Answer v{version} number {i} from system {'XYZ'[TARGETS.index(target) % 3]}: use {i + version} dB."


def write_generations(experiment_dir: Path, target: str, n: int, version: int = 1) -> Path:
    path = experiment_dir / "eval" / target / "generations.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            row = {**question(i), "answer": answer_text(target, i, version),
                   "metrics": {"rougeL": 0.1, "bleu": 1.0, "chrf": 10.0, "key_fact_recall": 0.0, "semscore": 0.5}}
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path


def make_experiment(root: Path, n: int = 6, targets=TARGETS) -> Path:
    experiment_dir = root / "exp"
    for target in targets:
        write_generations(experiment_dir, target, n)
    return experiment_dir
