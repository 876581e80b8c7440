"""What to export: one system of an experiment (default: its champion), with everything the model card needs.

Reads only what earlier stages wrote (runs/<experiment>/champion.json, <system>/run.json, eval/summary.json);
every missing piece is an ExportError that names the file or the input that was asked for.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from harness.layout import BASE_TARGET, champion_path, eval_summary_path, record_path

REPO_ROOT = Path(__file__).resolve().parent.parent


class ExportError(ValueError):
    """The export cannot run: the message names the bad input (experiment, system, file, field)."""


@dataclass
class ExportSource:
    experiment: str  # the experiment's name (champion.json's, else its folder's)
    experiment_dir: Path
    system: str  # a trained system, or "base" (the champion when no adapter beat the base model)
    base_model: str  # registry name (or folder) of the base model
    base_model_path: str  # local HF folder
    base_source_sha256: str | None  # sha256 of the file the base model was prepared from (the GGUF)
    adapter_path: str | None  # PEFT adapter folder (or hf-full weights folder); None for the base model
    is_champion: bool
    champion: dict | None = None
    record: dict | None = None  # <system>/run.json
    summary: dict | None = None  # eval/summary.json (held-out)
    decoding: dict = field(default_factory=dict)  # how the answers were generated when they were measured

    @property
    def name(self) -> str:
        """File-name stem of the exported model: <experiment>-<system>."""
        return f"{self.experiment}-{self.system}"


def _read_json(path: Path, what: str) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ExportError(f"{path}: {what} is not valid JSON (line {e.lineno}: {e.msg})") from None
    if not isinstance(data, dict):
        raise ExportError(f"{path}: {what} must be a JSON object")
    return data


def _candidates(path: str | None, experiment_dir: Path) -> list[Path]:
    """Records store paths relative to the repo root (runs/<experiment>/...): try the experiment's own repo root
    (the runs dir's parent), this one and the working directory."""
    if not path:
        return []
    p = Path(path).expanduser()
    if p.is_absolute():
        return [p]
    return [experiment_dir.resolve().parent.parent / p, REPO_ROOT / p, p]


def _base_path(base: dict, origin: Path) -> tuple[str, str, str | None]:
    """(name, local folder, source sha256): the recorded folder, else the registry model prepared here (whose
    source file must be the one the run records name: another file would be another model)."""
    from harness.models import prepare
    from harness.registry import get_base_model

    name, path, recorded_sha = base.get("name"), base.get("path"), base.get("source_sha256")
    if path and Path(path).expanduser().is_dir():
        return name or path, str(Path(path).expanduser()), recorded_sha
    registry_name = name if name and get_base_model(name) else (Path(path).name if path else None)
    if registry_name and get_base_model(registry_name):
        local = prepare(registry_name)
        if recorded_sha and local.source_sha256 != recorded_sha:
            raise ExportError(
                f"{origin}: base model {registry_name!r} prepared here has source sha256 "
                f"{local.source_sha256}, the records say {recorded_sha}: not the model it was trained on"
            )
        return registry_name, local.path, local.source_sha256
    raise ExportError(
        f"{origin}: base model folder {path!r} is missing and {name!r} is not a registry model "
        "(run `musicprod model prepare` for it)"
    )


def known_systems(experiment_dir: Path) -> list[str]:
    return sorted(p.parent.name for p in experiment_dir.glob("*/run.json"))


def resolve_source(experiment_dir: str | Path, system: str | None = None) -> ExportSource:
    """The system to export (default: the champion of runs/<experiment>/champion.json)."""
    experiment_dir = Path(experiment_dir)
    if not experiment_dir.is_dir():
        raise ExportError(f"experiment {str(experiment_dir)!r}: no such folder")
    champ_file = champion_path(experiment_dir)
    champion = _read_json(champ_file, "champion.json") if champ_file.is_file() else None
    if system is None:
        if champion is None:
            raise ExportError(
                f"{champ_file}: no champion.json (run `musicprod report {experiment_dir.name}` first, "
                f"or pick a system with --system: {', '.join(known_systems(experiment_dir)) or 'none trained'})"
            )
        system = champion.get("system")
        if not isinstance(system, str) or not system:
            raise ExportError(f"{champ_file}: field 'system' missing or not a non-empty string")
    is_champion = bool(champion) and champion.get("system") == system
    summary_file = eval_summary_path(experiment_dir)
    summary = _read_json(summary_file, "eval summary") if summary_file.is_file() else None
    experiment = (champion or {}).get("experiment") or (summary or {}).get("experiment") or experiment_dir.name
    decoding = dict((champion or {}).get("decoding") or (summary or {}).get("decoding") or {})

    if system == BASE_TARGET:  # the base model itself (the champion when no adapter beat it)
        records = [_read_json(p, "run record") for p in sorted(experiment_dir.glob("*/run.json"))]
        base = next((r["base_model"] for r in records if isinstance(r.get("base_model"), dict)), None)
        if base is None and champion:
            base = {"name": champion.get("base_model"), "path": champion.get("base_model_path")}
        if base is None:
            raise ExportError(f"{experiment_dir}: no run record or champion.json names the base model")
        name, path, sha = _base_path(base, champ_file if champion else experiment_dir)
        return ExportSource(
            experiment, experiment_dir, system, name, path, sha, None, is_champion, champion, None, summary, decoding
        )

    rec_file = record_path(experiment_dir, system)
    if not rec_file.is_file():
        raise ExportError(
            f"system {system!r}: no run record at {rec_file} (trained systems of "
            f"{experiment_dir.name}: {', '.join(known_systems(experiment_dir)) or 'none'}; or 'base')"
        )
    record = _read_json(rec_file, "run record")
    if record.get("status") != "ok":
        raise ExportError(
            f"{rec_file}: system {system!r} did not train (status {record.get('status')!r}"
            + (f": {record.get('reason')}" if record.get("reason") else "")
            + "); nothing to export"
        )
    recorded = [(champion or {}).get("adapter_path")] if is_champion else []
    recorded.append(record.get("adapter_path"))
    candidates = [c for r in recorded for c in _candidates(r, experiment_dir)]
    if not candidates:
        raise ExportError(f"{rec_file}: field 'adapter_path' is empty")
    adapter = next(
        (c for c in candidates if (c / "adapter_config.json").is_file() or (c / "config.json").is_file()), None
    )
    if adapter is None:
        raise ExportError(
            f"{rec_file}: adapter {str(candidates[0])!r} is missing or holds neither "
            "adapter_config.json nor config.json"
        )
    if not isinstance(record.get("base_model"), dict):
        raise ExportError(f"{rec_file}: field 'base_model' missing")
    name, path, sha = _base_path(record["base_model"], rec_file)
    return ExportSource(
        experiment,
        experiment_dir,
        system,
        name,
        path,
        sha,
        str(adapter),
        is_champion,
        champion,
        record,
        summary,
        decoding,
    )
