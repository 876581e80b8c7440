"""Entry point of one system's training process: `python -m trainers.worker SPEC.json`.

Under `accelerate launch` every rank runs this module; they train together and only rank 0 writes the run
record (with figures gathered from all ranks) and the adapter.

Each system trains in a fresh process: Unsloth patches transformers on import, and sharing a process
would corrupt the comparison. The worker always leaves a run record: ok, skipped (with the reason) or failed.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from pathlib import Path

from harness import set_offline_env
from harness.config import load_config
from harness.io import now_iso
from harness.records import base_record, device_info, write_record
from harness.registry import get_system
from trainers.launch import distributed_skip_reason


def rank() -> int:
    return int(os.environ.get("RANK", "0"))  # set by torchrun (accelerate launch) for every rank


def skip_reason(system, num_processes: int = 1) -> str | None:
    distributed = distributed_skip_reason(system, num_processes)
    if distributed:
        return distributed
    if not system.needs_cuda:
        return None
    import importlib.util

    if importlib.util.find_spec("unsloth") is None:
        return "unsloth is not installed (pip install -e '.[gpu]' on a CUDA machine)"
    import torch

    if not torch.cuda.is_available():
        return "Unsloth needs a CUDA GPU; this machine has none (torch.cuda.is_available() is False)"
    return None


def main(spec_path: str) -> int:
    set_offline_env()
    spec = json.loads(Path(spec_path).read_text())
    cfg = load_config(spec["config_path"], spec["overrides"])
    system = get_system(spec["system"])
    out_dir = cfg.experiment_dir / system.name
    record = base_record(system.name, "running", spec["config"])
    record.update({"base_model": spec["model"], "adapter_path": None})
    reason = skip_reason(system, cfg.distributed.num_processes)
    if reason:
        record.update(status="skipped", reason=reason, finished_at=now_iso())
        write_record(cfg.experiment_dir, system.name, record)
        print(f"[{system.name}] skipped: {reason}", flush=True)
        return 0
    import torch

    if cfg.train.num_threads:
        torch.set_num_threads(cfg.train.num_threads)
    start = time.perf_counter()
    try:
        import importlib

        figures = importlib.import_module(system.trainer).train(cfg, system, spec["model"]["path"], out_dir)
        record.update(figures, status="ok", adapter_path=str(out_dir / "adapter"))
        code = 0
    except Exception as e:  # the record says what broke; the parent reports it
        record.update(status="failed", reason=f"{type(e).__name__}: {e}", traceback=traceback.format_exc()[-4000:])
        code = 1
    record.update(wall_s=round(time.perf_counter() - start, 2), finished_at=now_iso())
    record["device"] = device_info()  # again after training: now with torch's thread count and GPU
    if code and rank() != 0:  # a failing non-zero rank says why; torchrun then stops the other ranks
        print(
            f"[{system.name} rank {rank()}] failed: {record['reason']}\n{record['traceback']}",
            file=sys.stderr,
            flush=True,
        )
    if rank() == 0:
        write_record(cfg.experiment_dir, system.name, record)
        print(f"[{system.name}] {record['status']}" + (f": {record.get('reason')}" if code else ""), flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
