"""Where every stage writes inside an experiment directory (runs/<experiment>/): the one place that knows.

runs/<experiment>/
  experiment.json                 stage wall times, per-system status (harness.pipeline)
  <system>/run.json               run record of one trained system (harness.records)
  <system>/adapter/               its LoRA adapter (PEFT format)
  <system>/trainer/checkpoint-<N>/ resumable checkpoint (adapter or weights, optimizer, RNG) at step N
  eval/summary.json               aggregated quality on the held-out: metrics with 95 % bootstrap CIs,
                                  breakdowns by language, topic and key-fact coverage, paired deltas with
                                  p-values (harness.eval.run)
  eval-dev/...                    the same for the dev set (`musicprod eval --split dev`)
  eval/<target>/results.json      lm-eval results for one target: "base", a system, "<system>@<step>" (a
                                  checkpoint) or "lookup" (the nearest training answer, a reference)
  eval/<target>/samples_<task>.jsonl   lm-eval per-sample logs
  eval/<target>/generations.jsonl one QA item per line: id, lang, topic, difficulty, question, reference,
                                  key_facts, answer, metrics{rougeL, bleu, chrf, key_fact_recall, semscore}
  eval/<target>/mc.jsonl          one MC item per line: id, lang, topic, acc, acc_norm, and the length-only
                                  baselines pick_longest, pick_shortest, chance
  judge/<judge>/...               LLM-judge scores and reliability (harness.judge.run)
  ratings.sqlite                  human ratings (harness.ratings)
  champion.json                   the chosen system, read by the server (reports)
"""

from __future__ import annotations

from pathlib import Path

from harness.config import ConfigError

BASE_TARGET = "base"  # evaluation target name of the un-adapted base model
LOOKUP_TARGET = "lookup"  # the nearest-training-answer reference: not a model, never a champion
REFERENCE_TARGETS = (BASE_TARGET, LOOKUP_TARGET)
SPLITS = {"heldout": "eval", "dev": "eval-dev"}  # question set -> folder inside the experiment
GENERATIONS_FILE = "generations.jsonl"
MC_ITEMS_FILE = "mc.jsonl"
RESULTS_FILE = "results.json"
SUMMARY_FILE = "summary.json"
RUN_RECORD_FILE = "run.json"
EXPERIMENT_FILE = "experiment.json"
JUDGE_SCORES_FILE, JUDGE_SANITY_FILE = "scores.jsonl", "sanity.jsonl"


def eval_dir(experiment_dir: str | Path, split: str = "heldout") -> Path:
    return Path(experiment_dir) / SPLITS[split]


def eval_summary_path(experiment_dir: str | Path, split: str = "heldout") -> Path:
    return eval_dir(experiment_dir, split) / SUMMARY_FILE


def generation_files(experiment_dir: str | Path, split: str = "heldout") -> dict[str, Path]:
    """{target: its generations.jsonl}, skipping hidden folders (an evaluation in progress writes into
    `.<target>.tmp-*`, and a crash can leave `.<target>.old-*` behind: neither is a target)."""
    root = eval_dir(experiment_dir, split)
    return {p.parent.name: p for p in sorted(root.glob(f"*/{GENERATIONS_FILE}")) if not p.parent.name.startswith(".")}


def run_record_paths(experiment_dir: str | Path) -> list[Path]:
    return sorted(Path(experiment_dir).glob(f"*/{RUN_RECORD_FILE}"))


def record_path(experiment_dir: str | Path, system: str) -> Path:
    return Path(experiment_dir) / system / RUN_RECORD_FILE


def experiment_file(experiment_dir: str | Path) -> Path:
    return Path(experiment_dir) / EXPERIMENT_FILE


def target_dir(experiment_dir: str | Path, target: str, split: str = "heldout") -> Path:
    return eval_dir(experiment_dir, split) / target


def generations_path(experiment_dir: str | Path, target: str, split: str = "heldout") -> Path:
    return target_dir(experiment_dir, target, split) / GENERATIONS_FILE


def mc_items_path(experiment_dir: str | Path, target: str, split: str = "heldout") -> Path:
    return target_dir(experiment_dir, target, split) / MC_ITEMS_FILE


def trainer_dir(experiment_dir: str | Path, system: str) -> Path:
    return Path(experiment_dir) / system / "trainer"


def checkpoint_dir(experiment_dir: str | Path, system: str, step: int) -> Path:
    return trainer_dir(experiment_dir, system) / f"checkpoint-{step}"


def split_target(target: str) -> tuple[str, int | None]:
    """ "hf-lora@120" -> ("hf-lora", 120); "hf-lora" -> ("hf-lora", None)."""
    system, _, step = target.partition("@")
    if step and not step.isdigit():
        raise ConfigError(f"target {target!r}: expected SYSTEM@STEP with an integer step")
    return system, int(step) if step else None


def is_system_target(target: str) -> bool:
    """A trained system's final adapter (not the base, the lookup reference or a checkpoint)."""
    return target not in REFERENCE_TARGETS and "@" not in target


def adapter_dir(experiment_dir: str | Path, system: str) -> Path:
    return Path(experiment_dir) / system / "adapter"


def judge_dir(experiment_dir: str | Path, judge: str) -> Path:
    return Path(experiment_dir) / "judge" / judge


def ratings_db_path(experiment_dir: str | Path) -> Path:
    return Path(experiment_dir) / "ratings.sqlite"


def champion_path(experiment_dir: str | Path) -> Path:
    return Path(experiment_dir) / "champion.json"


def report_dir(experiment_name: str, root: str | Path = "reports/out") -> Path:
    return Path(root) / experiment_name


def resolve_experiment(name_or_path: str, runs_dir: str = "runs") -> Path:
    """An experiment is a folder: a path, or a name under runs/."""
    path = Path(name_or_path)
    if not path.is_dir() and (Path(runs_dir) / name_or_path).is_dir():
        path = Path(runs_dir) / name_or_path
    if not path.is_dir():
        known = sorted(p.name for p in Path(runs_dir).glob("*") if p.is_dir()) if Path(runs_dir).is_dir() else []
        raise ConfigError(
            f"experiment {name_or_path!r}: no such folder (known under {runs_dir}/: {', '.join(known) or 'none'})"
        )
    return path
