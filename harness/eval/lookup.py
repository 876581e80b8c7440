"""The lookup reference: answer every question with the training response whose instruction is nearest to it.

Not a model and never a champion: it shows what the training data holds for these questions (the ceiling a
model that only memorised its training answers could reach by retrieval) so a fine-tuned model's recall can be
read as a share of it. MC: the option most similar (MiniLM cosine) to that retrieved response.
"""

from __future__ import annotations

import numpy as np

from harness.eval.coverage import nearest_training_items


def lookup_answers(train: list[dict], qa: list[dict]) -> list[str]:
    return [train[j]["response"] for j in nearest_training_items(train, [r["question"] for r in qa])] if qa else []


def lookup_choices(train: list[dict], mc: list[dict]) -> list[int]:
    """Per MC item, the index of the option nearest to the retrieved training response."""
    from harness.data.embeddings import encode

    if not mc:
        return []
    answers = encode(lookup_answers(train, mc))
    options = encode([c for item in mc for c in item["choices"]]).reshape(len(mc), 4, -1)
    return [int(np.argmax(opts @ vec)) for opts, vec in zip(options, answers)]
