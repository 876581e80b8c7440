"""Run records: one run.json per system and experiment, with versions, device and measured figures."""

from __future__ import annotations

import importlib.metadata
import platform
import resource
import subprocess
import sys
from pathlib import Path

from harness.io import now_iso, write_json_atomic
from harness.layout import record_path

TRACKED_PACKAGES = (
    "torch",
    "transformers",
    "trl",
    "peft",
    "accelerate",
    "bitsandbytes",
    "datasets",
    "unsloth",
    "unsloth_zoo",
    "lm_eval",
    "deepeval",
)


def package_versions() -> dict:
    versions = {"python": platform.python_version()}
    for name in TRACKED_PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def git_sha(cwd: str | Path = ".") -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10)
        if out.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.TimeoutExpired):
        return None


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_info() -> dict:
    import os

    info = {"cpu": cpu_model(), "cpu_count": os.cpu_count(), "platform": platform.platform()}
    try:
        import torch

        info["torch_threads"] = torch.get_num_threads()
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
            info["gpu_count"] = torch.cuda.device_count()
            info["cuda"] = torch.version.cuda
            info["gpu_memory_gib"] = round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
    except ImportError:
        pass
    return info


def rss_mib() -> float:
    """Resident set size now (Linux /proc; falls back to the peak elsewhere)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * resource.getpagesize() / 2**20
    except (OSError, ValueError, IndexError):
        return peak_rss_mib()


def peak_rss_mib() -> float:
    # ru_maxrss is in KiB on Linux: the high-water mark of this (per-system) process.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def write_record(experiment_dir: str | Path, system: str, record: dict) -> Path:
    record.setdefault("system", system)
    record.setdefault("written_at", now_iso())
    return write_json_atomic(record_path(experiment_dir, system), record)


def base_record(system: str, status: str, cfg_dict: dict) -> dict:
    return {
        "system": system,
        "status": status,
        "config": cfg_dict,
        "versions": package_versions(),
        "git_sha": git_sha(),
        "device": device_info(),
        "started_at": now_iso(),
        "argv": sys.argv,
    }
