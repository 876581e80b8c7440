"""Per-item QA metrics, each computed by the library that defines it.

ROUGE-L (rouge_score), sentence BLEU and chrF (sacrebleu), key-fact recall (the benchmark's own regexes)
and SemScore (cosine of all-MiniLM-L6-v2 embeddings). All are per item so that every aggregate can get a
bootstrap CI and every system pair a paired test over the same items.
"""

from __future__ import annotations

import re
from functools import lru_cache

QA_METRICS = ("rougeL", "bleu", "chrf", "key_fact_recall", "semscore")
# Units, for reports: BLEU and chrF keep sacrebleu's 0-100 scale, the rest are 0-1.
METRIC_SCALE = {
    "rougeL": 1.0,
    "bleu": 100.0,
    "chrf": 100.0,
    "key_fact_recall": 1.0,
    "semscore": 1.0,
    "acc": 1.0,
    "acc_norm": 1.0,
}


class UnicodeWordTokenizer:
    """rouge_score's default tokenizer keeps only [a-z0-9], which shreds German words ("Für" -> "f r")."""

    def tokenize(self, text: str) -> list[str]:
        return re.findall(r"\w+", text.lower())


@lru_cache(maxsize=2)
def _rouge_scorer(lang: str):
    from rouge_score import rouge_scorer

    if lang == "en":  # the standard setting: default tokenizer + Porter stemmer (English-only rules)
        return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    return rouge_scorer.RougeScorer(["rougeL"], tokenizer=UnicodeWordTokenizer())


def rouge_l(prediction: str, reference: str, lang: str = "en") -> float:
    return _rouge_scorer("en" if lang == "en" else "other").score(reference, prediction)["rougeL"].fmeasure


def bleu(prediction: str, reference: str) -> float:
    import sacrebleu

    return sacrebleu.sentence_bleu(prediction, [reference]).score


def chrf(prediction: str, reference: str) -> float:
    import sacrebleu

    return sacrebleu.sentence_chrf(prediction, [reference]).score


def key_fact_recall(key_facts: list[dict], text: str) -> float:
    """Share of the item's key facts that the text states: a fact counts if any of its regexes matches."""
    hits = sum(any(re.search(p, text, re.IGNORECASE) for p in fact["any_of"]) for fact in key_facts)
    return hits / len(key_facts)


def semscore(prediction: str, reference: str) -> float:
    """SemScore (Aynetdinov & Akbik 2024): cosine similarity of sentence embeddings, here MiniLM-L6-v2."""
    if not prediction.strip():
        return 0.0
    from harness.data.embeddings import encode

    a, b = encode([prediction, reference])
    return float(a @ b)


def qa_scores(prediction: str, item: dict) -> dict[str, float]:
    reference, lang = item["reference"], item.get("lang", "en")
    return {
        "rougeL": rouge_l(prediction, reference, lang),
        "bleu": bleu(prediction, reference),
        "chrf": chrf(prediction, reference),
        "key_fact_recall": key_fact_recall(item["key_facts"], prediction),
        "semscore": semscore(prediction, reference),
    }
