"""`musicprod config show | keys`: the effective config, or every key with its help."""

from __future__ import annotations

import json

from harness.config import describe, load_config, split_config_args, to_dict


def add_parser(sub) -> None:
    p = sub.add_parser("config", help="show | keys: the effective config, or every key with its help")
    p.add_argument("action", choices=["show", "keys"])
    p.add_argument("args", nargs="*")
    p.set_defaults(func=run)


def run(ns) -> int:
    if ns.action == "keys":
        for key, default, help_text in describe():
            print(f"{key:32s} {default:28s} {help_text}")
        return 0
    config_path, overrides = split_config_args(ns.args)
    print(json.dumps(to_dict(load_config(config_path, overrides)), indent=2))
    return 0
