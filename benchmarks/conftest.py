"""`pytest benchmarks`: quality gates over the latest evaluated experiment (see test_quality_gates.py)."""

import json
import os
import shutil
from pathlib import Path

import pytest

from harness import set_offline_env
from harness.layout import champion_path as champion_file
from harness.layout import eval_summary_path

REPO = Path(__file__).resolve().parent.parent
set_offline_env()
SMALL_EVAL_LIMIT = 40  # items per task when an experiment has adapters but no evaluation yet


def _experiments() -> list[Path]:
    runs = REPO / "runs"
    return (
        sorted((p for p in runs.glob("*") if any(p.glob("*/run.json"))), key=lambda p: p.stat().st_mtime)
        if runs.is_dir()
        else []
    )


def _chosen_experiment() -> Path | None:
    wanted = os.environ.get("MUSICPROD_EXPERIMENT")
    if wanted:
        path = Path(wanted) if Path(wanted).is_dir() else REPO / "runs" / wanted
        if not path.is_dir():
            raise pytest.UsageError(f"MUSICPROD_EXPERIMENT={wanted!r}: no such experiment folder")
        return path
    evaluated = [p for p in _experiments() if eval_summary_path(p).exists()]
    return (evaluated or _experiments() or [None])[-1]


@pytest.fixture(scope="session")
def gate_data(tmp_path_factory) -> dict:
    """{experiment, summary, champion, note}: the latest evaluated experiment, or a small fresh evaluation."""
    from harness.config import experiment_config
    from harness.eval.run import run_eval

    experiment = _chosen_experiment()
    if experiment is None:
        return {
            "experiment": None,
            "summary": None,
            "champion": None,
            "note": "no experiment under runs/ (run `musicprod run` first)",
        }
    summary_path = eval_summary_path(experiment)
    note = f"experiment {experiment.name}"
    if summary_path.exists():
        summary = json.loads(summary_path.read_text())
    else:
        # Evaluate a copy of the run records so a small (limited) evaluation never lands in the real experiment.
        copy = tmp_path_factory.mktemp("gates") / experiment.name
        for record in experiment.glob("*/run.json"):
            (copy / record.parent.name).mkdir(parents=True)
            shutil.copy(record, copy / record.parent.name / "run.json")
        settings = experiment_config(experiment, [f"eval.limit={SMALL_EVAL_LIMIT}"]).eval
        summary = run_eval(copy, settings)
        note += f" (no evaluation found: small evaluation of {SMALL_EVAL_LIMIT} items per task)"
    if summary.get("limit"):
        note += f"; evaluated on the first {summary['limit']} items per task only"
    champion = json.loads(champion_file(experiment).read_text()) if champion_file(experiment).exists() else None
    return {"experiment": experiment, "summary": summary, "champion": champion, "note": note}
