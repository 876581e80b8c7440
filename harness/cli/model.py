"""`musicprod model list | prepare NAME`: the registry's base models."""

from __future__ import annotations

from harness.config import load_config


def add_parser(sub) -> None:
    p = sub.add_parser("model", help="base models: list | prepare NAME")
    p.add_argument("action", choices=["list", "prepare"])
    p.add_argument("name", nargs="?", default="smollm2-135m-instruct")
    p.add_argument("--cache-dir", default=None, help="default ~/.cache/musicprod/models (or $MUSICPROD_MODEL_CACHE)")
    p.set_defaults(func=run)


def run(ns) -> int:
    from harness.registry import BASE_MODELS

    if ns.action == "list":
        for m in BASE_MODELS:
            print(f"{m.name:24s} {m.description}")
        return 0
    from harness.models import prepare

    cache = ns.cache_dir or load_config().model.cache_dir
    resolved = prepare(ns.name, cache)
    print(resolved.path)
    return 0
