"""Shared set-up for the export and llama.cpp backend tests: a fake experiment around the tiny model with a real
LoRA adapter, a run record, an eval summary (aggregated by the real harness code) and a champion.json, plus the
pinned llama.cpp converter fetched once into the user's cache."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from harness.io import write_json_atomic
from tests.report_fixtures import cycle, write_eval
from tests.server_helpers import make_experiment

PROMPTS = [
    "What does a limiter do?",
    "How do I set the attack time on a bus compressor?",
    "Explain sidechain compression in Ableton Live.",
    "Wie stelle ich einen Limiter richtig ein?",
    "What is parallel compression?",
    "How loud should a master be for streaming?",
    "Was macht ein Hochpassfilter im Mix?",
    "How do I make a punchy kick drum?",
]
DATA_SHA = "cd" * 32
BASE_SHA = "ab" * 32


def make_export_experiment(root: Path, base_dir: Path, name: str = "fake", system: str = "hf-lora") -> Path:
    """runs/<name>/: <system>/adapter + run.json, eval/summary.json (base and system), champion.json with the
    evaluated decoding block."""
    exp = make_experiment(root, base_dir, name, system)
    adapter = exp / system / "adapter"
    record = {
        "system": system,
        "status": "ok",
        "adapter_path": str(adapter),
        "git_sha": "0123abcd" * 5,
        "base_model": {"name": "tiny-llama", "path": str(base_dir), "source_sha256": BASE_SHA},
        "data": {"path": "data/train.json", "sha256": DATA_SHA, "train_items": 24, "validation_items": 0},
        "effective_settings": {"learning_rate": 2e-4, "batch_size": 8, "max_steps": 60, "seed": 42},
        "steps": 60,
        "train_tokens": 1234,
        "final_train_loss": 3.21,
        "validation_loss": 3.4,
        "versions": {"torch": "2.13.0+cpu"},
        "device": {"cpu": "test CPU"},
    }
    write_json_atomic(exp / system / "run.json", record)
    summary = write_eval(
        exp,
        {
            "base": (cycle([0, 0, 1 / 3, 0]), cycle([0, 1, 0, 0])),
            system: (cycle([2 / 3, 1, 1 / 3, 2 / 3]), cycle([1, 1, 0, 1])),
        },
    )
    champion = json.loads((exp / "champion.json").read_text())
    champion.update(
        decoding={**summary["decoding"], "repetition_penalty": 1.3, "max_new_tokens": 200},
        base_model_path=str(base_dir),
    )
    write_json_atomic(exp / "champion.json", champion)
    return exp


@pytest.fixture(scope="session")
def gguf_converter():
    """llama.cpp's convert_hf_to_gguf.py from the pinned llama-cpp-python sdist (fetched once, then cached)."""
    from export.converter import ensure_converter
    from export.source import ExportError

    cache = Path(os.environ.get("MUSICPROD_TEST_CONVERTER_CACHE", "~/.cache/musicprod/llama.cpp")).expanduser()
    try:
        return ensure_converter(cache, log=lambda *a: None)
    except ExportError as e:
        if "could not download" in str(e):
            pytest.skip(f"llama.cpp converter not cached and the package index is unreachable: {e}")
        raise


def quiet(*_args) -> None:
    """log= for export calls in tests."""
