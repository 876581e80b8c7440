"""The main job: prepare the base model, train each system in its own process, then the later stages."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

from harness import OFFLINE_ENV
from harness.config import ExperimentConfig, to_dict
from harness.data.load import experiment_rows
from harness.io import now_iso, write_json_atomic
from harness.layout import record_path
from harness.models import prepare
from harness.records import base_record, write_record
from harness.registry import get_system
from trainers.launch import allocator_env, worker_command

REPO_ROOT = Path(__file__).resolve().parent.parent


def train_system(cfg: ExperimentConfig, config_path: str | None, overrides: list[str], system: str, model) -> dict:
    """Run one system in a fresh Python process; return its run record."""
    spec = {
        "system": system,
        "config_path": config_path,
        "overrides": overrides,
        "config": to_dict(cfg),
        "model": {"name": model.name, "path": model.path, "source_sha256": model.source_sha256},
    }
    cfg.experiment_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", suffix=".json", dir=cfg.experiment_dir, delete=False) as f:
        json.dump(spec, f)
    env = {
        **os.environ,
        **OFFLINE_ENV,
        **allocator_env(cfg.train.allocator, os.environ),
        "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    started = time.perf_counter()
    try:
        # python -m trainers.worker, or accelerate launch ... -m trainers.worker (DDP/FSDP; only rank 0 writes)
        proc = subprocess.run(worker_command(cfg, get_system(system), f.name), env=env)
    finally:
        Path(f.name).unlink(missing_ok=True)
    path = record_path(cfg.experiment_dir, system)
    record = json.loads(path.read_text()) if path.exists() else None
    if record is None or record.get("status") == "running" or (proc.returncode != 0 and record.get("status") == "ok"):
        # The process died before it could write its own record (killed, out of memory, segfault).
        record = base_record(system, "failed", to_dict(cfg))
        record.update(
            reason=f"training process exited with code {proc.returncode} without a record",
            wall_s=round(time.perf_counter() - started, 2),
            finished_at=now_iso(),
        )
        write_record(cfg.experiment_dir, system, record)
    return record


def check_and_prepare(cfg: ExperimentConfig):
    """Fail fast on bad training data (before anything is written), then the prepared base model."""
    experiment_rows(cfg.data, cfg.train.seed)
    return prepare(cfg.model.name, cfg.model.cache_dir)


def run_experiment(cfg: ExperimentConfig, config_path: str | None, overrides: list[str]) -> dict:
    t0 = time.perf_counter()
    stages: dict[str, float] = {}
    model = check_and_prepare(cfg)
    stages["prepare_s"] = round(time.perf_counter() - t0, 2)
    records = {}
    for system in cfg.systems:
        t = time.perf_counter()
        print(f"\n=== training {system} ({cfg.systems.index(system) + 1}/{len(cfg.systems)}) ===", flush=True)
        records[system] = train_system(cfg, config_path, overrides, system, model)
        stages[f"train_{system}_s"] = round(time.perf_counter() - t, 2)
    summary = {
        "experiment": cfg.name,
        "stages": stages,
        "model": model.path,
        "systems": {
            s: {
                k: r.get(k)
                for k in (
                    "status",
                    "reason",
                    "train_tokens_per_s",
                    "validation_loss",
                    "final_train_loss",
                    "adapter_path",
                )
            }
            for s, r in records.items()
        },
    }
    path = cfg.experiment_dir / "experiment.json"
    write_json_atomic(path, summary)  # written after every stage: earlier results survive a later failure
    from harness.eval.run import run_eval
    from reports import build_report, choose_champion

    t = time.perf_counter()
    print("\n=== evaluating on the held-out benchmark ===", flush=True)
    run_eval(cfg.experiment_dir, cfg.eval)
    stages["eval_s"] = round(time.perf_counter() - t, 2)
    stages["total_s"] = round(time.perf_counter() - t0, 2)
    write_json_atomic(path, summary)
    t = time.perf_counter()
    summary["champion"] = choose_champion(cfg.experiment_dir)["system"]
    summary["report"] = str(build_report(cfg.experiment_dir))
    stages["report_s"] = round(time.perf_counter() - t, 2)
    stages["total_s"] = round(time.perf_counter() - t0, 2)
    write_json_atomic(path, summary)
    return summary
