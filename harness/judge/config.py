"""Typed settings of the LLM-judge suite (`musicprod judge`, lm-eval task `musicprod_judge`).

Loaded like the experiment config (harness.config): a YAML file and/or key=value overrides, unknown keys and
wrong types are errors naming the key and the source. The lm-eval task also reads MUSICPROD_JUDGE_CONFIG (a YAML
path) and MUSICPROD_JUDGE_<FIELD> environment variables (e.g. MUSICPROD_JUDGE_BACKEND=openai).
"""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass
from pathlib import Path

from harness.config import ConfigError, _build, _field, _merge, parse_overrides, read_yaml_mapping

BACKENDS = ("hf", "openai")
ENV_PREFIX = "MUSICPROD_JUDGE_"


@dataclass
class JudgeSettings:
    backend: str = _field(
        "hf",
        "Judge backend: hf (a local HF model, scored from its token distribution) or openai "
        "(any OpenAI-compatible /v1/chat/completions endpoint: Ollama, vLLM, llama.cpp, musicprod serve).",
    )
    model: str = _field(
        "smollm2-135m-instruct",
        "hf: registry name, local HF folder or HF id. openai: the model name the endpoint serves.",
    )
    model_cache_dir: str = _field(
        "~/.cache/musicprod/models", "hf: where prepared registry models live (as model.cache_dir)."
    )
    base_url: str = _field("http://127.0.0.1:11434/v1", "openai: base URL of the endpoint, up to and including /v1.")
    api_key_env: str = _field(
        "OPENAI_API_KEY",
        "openai: name of the environment variable holding the API key (unset = no key; local servers ignore it).",
    )
    name: str = _field("", "Folder name under runs/<exp>/judge/ ('' = derived from the model).")
    max_items: int = _field(
        40, "Judge only the first N QA items of each target (0 = all). Each item costs 3 judge calls per target."
    )
    sanity_items: int = _field(
        40,
        "Sanity set size: reference answer vs an off-topic answer for the same question (0 = skip; then the judge cannot be marked reliable).",
    )
    repeats: int = _field(10, "Items judged a second time to measure self-consistency (0 = skip).")
    pairwise: bool = _field(True, "Also compare every system with the base model, answers shown in both orders.")
    cache_dir: str = _field("", "deepeval's working folder (.deepeval/) ('' = runs/<exp>/judge/.deepeval).")
    top_logprobs: int = _field(
        5, "Alternatives per token requested for the probability-weighted score (1-5 scale: 5 covers every level)."
    )
    logprobs: bool = _field(
        True,
        "Ask for token logprobs (G-Eval's probability-weighted score). openai: set false for servers without logprobs; the integer score is used then.",
    )
    json_schema: bool = _field(
        True,
        "Constrain the judge's output to the score JSON schema (hf: constrained decoding; openai: response_format json_schema).",
    )
    reason_tokens: int = _field(
        32, "Longest generated reason in tokens (the score comes first and does not depend on it)."
    )
    dtype: str = _field("float32", "hf: weights dtype, float32 or bfloat16.")
    timeout_s: float = _field(120.0, "openai: seconds per request.")
    reliability_bar: float = _field(
        0.9, "Share of sanity cases where the judge must prefer the reference; below it the judge is marked unreliable."
    )


def validate_judge(s: JudgeSettings) -> JudgeSettings:
    if s.backend not in BACKENDS:
        raise ConfigError(f"backend: must be one of {', '.join(BACKENDS)}, got {s.backend!r}")
    if not s.model.strip():
        raise ConfigError("model: must not be empty")
    if s.dtype not in ("float32", "bfloat16"):
        raise ConfigError(f"dtype: must be float32 or bfloat16, got {s.dtype!r}")
    for key in ("max_items", "sanity_items", "repeats", "reason_tokens"):
        if getattr(s, key) < 0:
            raise ConfigError(f"{key}: must be >= 0, got {getattr(s, key)}")
    if not 1 <= s.top_logprobs <= 20:
        raise ConfigError(f"top_logprobs: must be in 1..20 (the OpenAI limit), got {s.top_logprobs}")
    if not 0 < s.reliability_bar <= 1:
        raise ConfigError(f"reliability_bar: must be in (0, 1], got {s.reliability_bar}")
    if s.backend == "openai" and not re.match(r"^https?://", s.base_url):
        raise ConfigError(f"base_url: expected http(s)://host:port/v1, got {s.base_url!r}")
    return s


def _read_yaml(path: str | Path) -> dict:
    values = read_yaml_mapping(path, "judge config")
    return values.get("judge", values) if isinstance(values.get("judge"), dict) else values


def load_judge_settings(
    path: str | Path | None = None, overrides: list[str] | None = None, values: dict | None = None
) -> JudgeSettings:
    """YAML file (optional; a top-level `judge:` section is accepted too), then a dict, then key=value overrides."""
    source = str(path) if path else "judge settings"
    merged = _read_yaml(path) if path else {}
    try:
        merged = _merge(_merge(merged, values or {}), parse_overrides(overrides or []))
        return validate_judge(_build(JudgeSettings, merged, ""))
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}") from None


def settings_from_env(values: dict | None = None, environ=None) -> JudgeSettings:
    """For the lm-eval task: MUSICPROD_JUDGE_CONFIG (YAML) < MUSICPROD_JUDGE_<FIELD> < `values` (task metadata)."""
    environ = os.environ if environ is None else environ
    names = {f.name for f in dataclasses.fields(JudgeSettings)}
    from_env = {
        k[len(ENV_PREFIX) :].lower(): v
        for k, v in environ.items()
        if k.startswith(ENV_PREFIX) and k[len(ENV_PREFIX) :].lower() in names
    }
    return load_judge_settings(environ.get(ENV_PREFIX + "CONFIG") or None, values=_merge(from_env, values or {}))


def judge_name(s: JudgeSettings) -> str:
    """A folder-safe name for judge/<name>/: the given one, else the model's registry name / folder / id."""
    raw = s.name or (Path(s.model).name if Path(s.model).is_dir() else s.model)
    return re.sub(r"[^A-Za-z0-9._-]+", "--", raw).strip("-.") or "judge"


def describe_judge() -> list[tuple[str, str, str]]:
    default = JudgeSettings()
    return [
        (f.name, repr(getattr(default, f.name)), f.metadata.get("help", "")) for f in dataclasses.fields(JudgeSettings)
    ]
