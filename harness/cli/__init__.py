"""`musicprod` command line: one module per command, each with `add_parser(sub)` and `run(ns)` (the layout of
lm-eval's `lm_eval/_cli/`). The CLI sits on top of the stack: it alone in harness/ (with pipeline.py) may reach
downstream into trainers, reports, export and server, and only inside a command's `run`."""

from __future__ import annotations

import argparse
import sys

from harness import set_offline_env
from harness.cli import bench, config, data, eval, export, judge, model, rate, report, run, serve, train
from harness.config import ConfigError
from harness.data.load import DatasetError
from harness.models import ModelError

# In the order `musicprod --help` lists them: the main job first, then the stages in the order data flows.
COMMANDS = [run, train, model, config, data, eval, judge, bench, serve, export, rate, report]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="musicprod", description="Fine-tune, evaluate and serve music-production LMs.")
    sub = p.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    set_offline_env()
    parser = build_parser()
    ns, extra = parser.parse_known_args(argv)
    # argparse ends a positional list at the first option, so `eval exp --only base k=v` would leave `k=v` over
    # (parse_intermixed_args does not support subparsers): put such key=value words back where they belong.
    trailing = (
        "overrides" if hasattr(ns, "overrides") else "args" if isinstance(getattr(ns, "args", None), list) else None
    )
    if extra and trailing and all("=" in a and not a.startswith("-") for a in extra):
        getattr(ns, trailing).extend(extra)
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return ns.func(ns)
    except (ConfigError, DatasetError, ModelError) as e:
        print(f"musicprod: error: {e}", file=sys.stderr)
        return 2
