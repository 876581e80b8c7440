"""Find what to serve (champion.json, an adapter folder or the plain base model) and load it once.

Security: the server never opens a model or adapter folder outside the configured roots (the runs dir and
the model dirs); every path from champion.json, adapter_config.json or the command line is resolved (symlinks
and '..' included) and checked against those roots before anything is read from it, and so is every file inside
the folder: a weights file may itself be a symlink out of it.
"""

from __future__ import annotations

import json
import logging
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from harness.layout import champion_path

log = logging.getLogger("musicprod.server")

DEFAULT_BASE_MODEL = "smollm2-135m-instruct"
_EXPERIMENT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class ServeError(ValueError):
    """What to serve cannot be resolved or is not allowed; the message names the file and field."""


@dataclass
class ServeTarget:
    model_id: str  # the name clients see in /v1/models
    base_model: str  # registry name, HF id or folder
    base_model_path: str  # local HF folder
    adapter_path: str | None
    source: str  # where this came from (champion.json path, --adapter, --base)
    champion: dict | None = None


@dataclass
class Roots:
    """Folders the server may read models and adapters from."""

    runs_dir: Path
    model_dirs: list[Path] = field(default_factory=list)

    def all(self) -> list[Path]:
        return [self.runs_dir, *self.model_dirs]

    def allows(self, resolved: Path) -> bool:
        return any(resolved == root or resolved.is_relative_to(root) for root in self.all())

    def _outside(self, shown: str, resolved: Path, what: str, origin: str) -> ServeError:
        allowed = ", ".join(str(r) for r in self.all())
        return ServeError(
            f"{origin}: {what} {shown!r} resolves to {resolved}, outside the allowed directories "
            f"({allowed}); add its parent with --model-dir if it is trusted"
        )

    def check(self, path: str | Path, what: str, origin: str) -> Path:
        resolved = Path(path).expanduser().resolve()
        if not self.allows(resolved):
            raise self._outside(str(path), resolved, what, origin)
        if not resolved.is_dir():
            raise ServeError(f"{origin}: {what} {str(path)!r} is not a directory")
        for entry in resolved.rglob("*"):
            if entry.is_symlink() and not self.allows(entry.resolve()):
                raise self._outside(str(entry), entry.resolve(), f"file in {what}", origin)
        return resolved


def make_roots(runs_dir: str | Path, model_dirs: list[str] | None, cache_dir: str) -> Roots:
    from harness.models import cache_root

    dirs = [Path(d).expanduser().resolve() for d in (model_dirs or [])]
    dirs.append(cache_root(cache_dir).resolve())
    return Roots(Path(runs_dir).expanduser().resolve(), dirs)


def _prepared_base(name: str, cache_dir: str) -> str:
    from harness.models import prepare

    return prepare(name, cache_dir).path


def resolve_base(
    base_model: str | None, base_model_path: str | None, roots: Roots, cache_dir: str, origin: str
) -> tuple[str, str]:
    """(name, local folder) of the base model: the recorded folder when it exists, else prepared by name."""
    if base_model_path and Path(base_model_path).expanduser().is_dir():
        try:
            return base_model or base_model_path, str(roots.check(base_model_path, "base_model_path", origin))
        except ServeError:
            from harness.registry import get_base_model

            if get_base_model(Path(base_model_path).name) is None:
                raise  # not a prepared registry model: refuse rather than read an unconfigured folder
            return resolve_base(Path(base_model_path).name, None, roots, cache_dir, origin)
    name = base_model or DEFAULT_BASE_MODEL
    if Path(name).expanduser().is_dir():
        return name, str(roots.check(name, "base_model", origin))
    from harness.registry import get_base_model

    if get_base_model(name) is None and get_base_model(Path(name).name) is not None:
        name = Path(name).name  # a prepared folder recorded on another machine (e.g. outside a container)
    if get_base_model(name) is None:
        raise ServeError(
            f"{origin}: base model {name!r} is neither a prepared folder nor a registry model "
            "(the server is offline and loads no hub ids)"
        )
    return name, str(roots.check(_prepared_base(name, cache_dir), "prepared base model", origin))


def from_champion(experiment: str, roots: Roots, cache_dir: str) -> ServeTarget:
    if not _EXPERIMENT_NAME.match(experiment):
        raise ServeError(f"--experiment {experiment!r}: an experiment name (letters, digits, . _ -), not a path")
    exp_dir = roots.runs_dir / experiment
    path = champion_path(exp_dir)
    if not path.is_file():
        raise ServeError(f"{path}: no champion.json (run the report stage first, or pass --adapter DIR / --base)")
    try:
        champ = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ServeError(f"{path}: not valid JSON (line {e.lineno}: {e.msg})") from e
    for key in ("system", "base_model"):
        if not isinstance(champ.get(key), str) or not champ[key]:
            raise ServeError(f"{path}: field {key!r} missing or not a non-empty string")
    name, base_path = resolve_base(champ["base_model"], champ.get("base_model_path"), roots, cache_dir, str(path))
    adapter = champ.get("adapter_path")
    if champ["system"] == "base" or adapter is None:
        adapter_dir = None
    else:
        if not isinstance(adapter, str):
            raise ServeError(f"{path}: field 'adapter_path' must be a string or null")
        # Relative adapter paths are relative to the repo root (the runs dir's parent), as in run.json.
        candidate = Path(adapter) if Path(adapter).is_absolute() else roots.runs_dir.parent / adapter
        adapter_dir = str(roots.check(candidate, "adapter_path", str(path)))
    return ServeTarget(
        f"{champ.get('experiment', experiment)}/{champ['system']}", name, base_path, adapter_dir, str(path), champ
    )


def from_adapter(adapter: str, roots: Roots, cache_dir: str, base_model: str | None = None) -> ServeTarget:
    adapter_dir = roots.check(adapter, "--adapter", "command line")
    config_file = adapter_dir / "adapter_config.json"
    if not config_file.is_file():
        raise ServeError(f"{adapter_dir}: no adapter_config.json (not a PEFT adapter folder)")
    recorded = json.loads(config_file.read_text()).get("base_model_name_or_path")
    name, base_path = resolve_base(
        base_model or recorded, None if base_model else recorded, roots, cache_dir, str(config_file)
    )
    system = adapter_dir.parent.name if adapter_dir.name == "adapter" else adapter_dir.name
    experiment = adapter_dir.parent.parent.name if adapter_dir.name == "adapter" else "adapter"
    return ServeTarget(f"{experiment}/{system}", name, base_path, str(adapter_dir), f"--adapter {adapter}")


def from_base(base_model: str | None, roots: Roots, cache_dir: str) -> ServeTarget:
    name, base_path = resolve_base(base_model, None, roots, cache_dir, "--base")
    return ServeTarget(f"base/{Path(name).name}", name, base_path, None, "--base")


@dataclass
class LoadedModel:
    model: object
    tokenizer: object
    load_info: dict


def _tokens_per_s(model, tokenizer, n_tokens: int = 16, repeats: int = 2) -> float:
    """Greedy generation speed for one short prompt: the better of `repeats` runs (the machine is shared)."""
    import torch

    ids = tokenizer("Explain sidechain compression in one paragraph.", return_tensors="pt")
    best = 0.0
    for _ in range(repeats):
        t0 = time.perf_counter()
        with torch.inference_mode():
            out = model.generate(
                **ids,
                max_new_tokens=n_tokens,
                min_new_tokens=n_tokens,
                do_sample=False,
                pad_token_id=tokenizer.pad_token_id,
            )
        n = out.shape[1] - ids["input_ids"].shape[1]
        best = max(best, n / (time.perf_counter() - t0))
    return round(best, 1)


def load_model(target: ServeTarget, dtype: str = "bfloat16", merge: str = "auto") -> LoadedModel:
    """Load base (+ adapter). merge: 'auto' measures attached vs merged generation speed and keeps the faster,
    'yes' merges (merge_and_unload), 'no' keeps the LoRA layers attached."""
    from harness.models import load_for_inference

    t0 = time.perf_counter()
    model, tokenizer = load_for_inference(target.base_model_path, target.adapter_path, dtype, merge == "yes")
    info: dict = {
        "model_id": target.model_id,
        "base_model": target.base_model,
        "base_model_path": target.base_model_path,
        "adapter_path": target.adapter_path,
        "source": target.source,
        "dtype": dtype,
        "merge": None,
    }
    if target.adapter_path and merge == "auto":
        attached = _tokens_per_s(model, tokenizer)
        model.merge_adapter()  # weights merged in place, LoRA layers still there (reversible)
        merged = _tokens_per_s(model, tokenizer)
        info["speed_tokens_per_s"] = {"attached": attached, "merged": merged}
        if merged >= attached:
            model = model.merge_and_unload()  # already-merged layers are not merged twice
            info["merge"] = "merged"
        else:
            model.unmerge_adapter()  # (bf16: at most one rounding step on the adapted weights)
            info["merge"] = "attached"
    elif target.adapter_path:
        info["merge"] = "merged" if merge == "yes" else "attached"
    model.eval()
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if not tokenizer.chat_template:
        raise ServeError(f"{target.base_model_path}: tokenizer has no chat template (needed for messages)")
    info["load_s"] = round(time.perf_counter() - t0, 2)
    info["context_length"] = int(getattr(model.config, "max_position_embeddings", 2048))
    log.info("loaded %s", json.dumps(info))
    return LoadedModel(model, tokenizer, info)
