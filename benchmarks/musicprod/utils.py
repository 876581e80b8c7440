"""lm-eval glue for the musicprod tasks: load the held-out data relative to this file, score each item.

Data paths resolve against this file, not the cwd, so `lm_eval --include_path <repo>/benchmarks` works from
any directory. Your own held-out files (same schema) go in through `--metadata '{"qa_path": "...",
"mc_path": "..."}'` or the MUSICPROD_QA_PATH / MUSICPROD_MC_PATH environment variables.
"""

from __future__ import annotations

import os
from pathlib import Path

import datasets
import numpy as np

from harness.data.check import load_mc, load_qa
from harness.eval.metrics import qa_scores

DATA_DIR = Path(__file__).resolve().parent / "data"


def _path(explicit: str | None, env: str, default: str) -> Path:
    return Path(explicit or os.environ.get(env) or DATA_DIR / default)


def load_qa_dataset(qa_path: str | None = None, **_metadata) -> dict:
    rows = load_qa(_path(qa_path, "MUSICPROD_QA_PATH", "qa.json"))
    return {"test": datasets.Dataset.from_list(rows)}


def load_mc_dataset(mc_path: str | None = None, **_metadata) -> dict:
    rows = load_mc(_path(mc_path, "MUSICPROD_MC_PATH", "mc.json"))
    return {"test": datasets.Dataset.from_list(rows)}


def _breakdown(doc: dict, scores: dict[str, float], metric: str) -> dict[str, float]:
    # Items outside a slice omit its key; lm-eval then averages each slice over its own items only.
    return {f"{metric}_{doc['lang']}": scores[metric], f"{metric}_{doc['topic']}": scores[metric]}


def qa_process_results(doc: dict, results: list[str]) -> dict[str, float]:
    scores = qa_scores(results[0].strip(), doc)
    return {**scores, **_breakdown(doc, scores, "key_fact_recall")}


def mc_process_results(doc: dict, results: list[tuple[float, bool]]) -> dict[str, float]:
    # Same rule as lm-eval's built-in multiple_choice (acc_norm divides by the choice's length in characters);
    # written out only so the language and topic slices can be added.
    lls = np.array([ll for ll, _ in results])
    lengths = np.array([float(len(c)) for c in doc["choices"]])
    scores = {
        "acc": float(np.argmax(lls) == doc["answer"]),
        "acc_norm": float(np.argmax(lls / lengths) == doc["answer"]),
    }
    return {**scores, **_breakdown(doc, scores, "acc")}
