"""Read everything a report needs from one experiment folder (runs/<experiment>/), tolerating missing stages.

Run records and experiment.json come from training, eval/summary.json from evaluation, judge/<judge>/summary.json
from the LLM judge and the human-rating summary from harness.ratings. Each later stage may be absent: the report
says so instead of failing. Malformed files are errors that name the file and the position.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from harness.io import read_jsonl
from harness.layout import BASE_TARGET, eval_summary_path, generations_path, ratings_db_path


class ReportError(RuntimeError):
    """An experiment folder the report cannot be built from (names the file and the problem)."""


@dataclass
class Experiment:
    dir: Path
    name: str
    records: dict[str, dict]  # system -> run.json
    stages: dict | None  # experiment.json
    eval: dict | None  # eval/summary.json (the held-out)
    judges: dict[str, dict]  # judge name -> judge/<judge>/summary.json
    human: dict | None  # harness.ratings.summarize(); None when no ratings
    notes: list[str] = field(default_factory=list)  # what was missing or unreadable, shown in the report
    eval_dev: dict | None = None  # eval-dev/summary.json: where recipes and checkpoints were chosen

    @property
    def ok_systems(self) -> list[str]:
        return [s for s, r in self.records.items() if r.get("status") == "ok"]

    def eval_target(self, target: str) -> dict | None:
        t = (self.eval or {}).get("targets", {}).get(target)
        return t if t and t.get("status", "ok") == "ok" else None

    @property
    def eval_targets(self) -> list[str]:
        """Evaluated targets, base first, then systems in run-record order."""
        names = [t for t in (self.eval or {}).get("targets", {}) if self.eval_target(t)]
        order = [BASE_TARGET] + list(self.records)
        return sorted(names, key=lambda t: (order.index(t) if t in order else len(order), t))


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ReportError(f"{path}: invalid JSON at line {e.lineno}, column {e.colno}: {e.msg}") from e


def _check_eval_summary(path: Path, summary: dict) -> None:
    if not isinstance(summary.get("targets"), dict):
        raise ReportError(f"{path}: field 'targets' must be an object of target -> results")
    for target, t in summary["targets"].items():
        metrics = t.get("metrics")
        if t.get("status", "ok") == "ok" and not isinstance(metrics, dict):
            raise ReportError(f"{path}: targets.{target}.metrics must be an object")
        for task, by_metric in (metrics or {}).items():
            for metric, s in by_metric.items():
                if not isinstance(s, dict) or "mean" not in s:
                    raise ReportError(
                        f"{path}: targets.{target}.metrics.{task}.{metric} must be "
                        f"{{mean, stderr, ci_low, ci_high, n}}, got {s!r}"
                    )


def load_records(experiment_dir: Path) -> dict[str, dict]:
    records = {}
    for path in sorted(experiment_dir.glob("*/run.json")):
        rec = read_json(path)
        if "status" not in rec:
            raise ReportError(f"{path}: run record without field 'status'")
        records[rec.get("system") or path.parent.name] = rec
    return records


def load_judges(experiment_dir: Path) -> dict[str, dict]:
    return {p.parent.name: read_json(p) for p in sorted((experiment_dir / "judge").glob("*/summary.json"))}


def load_human(experiment_dir: Path, notes: list[str]) -> dict | None:
    """harness.ratings.summarize() when that module and a ratings database exist; None otherwise."""
    if not ratings_db_path(experiment_dir).exists():
        return None
    try:
        from harness.ratings import summarize
    except ImportError:
        notes.append("ratings.sqlite exists but harness.ratings is not installed: human ratings not shown")
        return None
    try:
        return summarize(experiment_dir)
    except Exception as e:  # a broken ratings db must not cost the whole report; the note shows the error
        notes.append(f"human ratings could not be read from {ratings_db_path(experiment_dir)}: {e}")
        return None


def load_experiment(experiment_dir: str | Path) -> Experiment:
    experiment_dir = Path(experiment_dir)
    if not experiment_dir.is_dir():
        raise ReportError(f"{experiment_dir}: no such experiment folder")
    records = load_records(experiment_dir)
    stages_path = experiment_dir / "experiment.json"
    stages = read_json(stages_path) if stages_path.exists() else None
    summary_path = eval_summary_path(experiment_dir)
    summary = read_json(summary_path) if summary_path.exists() else None
    if summary is not None:
        _check_eval_summary(summary_path, summary)
    dev_path = eval_summary_path(experiment_dir, "dev")
    dev = read_json(dev_path) if dev_path.exists() else None
    if dev is not None:
        _check_eval_summary(dev_path, dev)
    if not records and summary is None:
        raise ReportError(
            f"{experiment_dir}: neither run records (*/run.json) nor {summary_path}; train first (musicprod run)"
        )
    notes: list[str] = []
    if summary is None:
        notes.append(
            f"no evaluation results ({summary_path} missing): quality sections are empty; "
            f"run `musicprod eval {experiment_dir.name}`"
        )
    if summary is not None and summary.get("limit"):
        notes.append(
            f"evaluated on only the first {summary['limit']} items per task (eval.limit): a smoke test, "
            f"not a result; the confidence intervals are correspondingly wide"
        )
    name = (stages or {}).get("experiment") or (summary or {}).get("experiment") or experiment_dir.name
    return Experiment(
        dir=experiment_dir,
        name=name,
        records=records,
        stages=stages,
        eval=summary,
        judges=load_judges(experiment_dir),
        human=load_human(experiment_dir, notes),
        notes=notes,
        eval_dev=dev,
    )


def load_generations(experiment_dir: Path, target: str) -> dict[str, dict]:
    """QA generations of one target by item id ({} when the file is missing)."""
    path = generations_path(experiment_dir, target)
    return {r["id"]: r for r in read_jsonl(path, ("id",), ReportError)} if path.exists() else {}


def reliable_judge(exp: Experiment) -> tuple[str, dict] | None:
    """The judge whose summary says reliable (the highest sanity pass rate among several), else None."""
    reliable = [(name, j) for name, j in exp.judges.items() if j.get("reliable")]
    if not reliable:
        return None
    return max(reliable, key=lambda nj: (nj[1].get("reliability") or {}).get("sanity_pass_rate") or 0)
