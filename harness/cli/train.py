"""`musicprod train SYSTEM`: one system in its own process (optionally distributed, resumable)."""

from __future__ import annotations

import json

from harness.config import load_config, split_config_args


def add_parser(sub) -> None:
    p = sub.add_parser("train", help="train one system in its own process")
    p.add_argument("system")
    p.add_argument("args", nargs="*", help="[CONFIG.yaml] [key=value ...]")
    p.add_argument("--launcher", choices=["python", "accelerate"], help="= distributed.launcher (default python)")
    p.add_argument("--num-processes", type=int, metavar="N", help="= distributed.num_processes: DDP/FSDP ranks")
    p.add_argument(
        "--accelerate-config",
        metavar="YAML",
        help="= distributed.accelerate_config (default auto; configs/accelerate/fsdp.yaml for FSDP)",
    )
    p.add_argument("--resume", action="store_true", help="= train.resume=true: continue from the newest checkpoint")
    p.set_defaults(func=run)


def run(ns) -> int:
    from harness.pipeline import check_and_prepare, train_system

    config_path, overrides = split_config_args(ns.args)
    overrides += distributed_overrides(ns)
    cfg = load_config(config_path, overrides)
    model = check_and_prepare(cfg)
    record = train_system(cfg, config_path, overrides, ns.system, model)
    print(
        json.dumps({k: record.get(k) for k in ("system", "status", "reason", "train_tokens_per_s", "validation_loss")})
    )
    return 0 if record["status"] in ("ok", "skipped") else 1


def distributed_overrides(ns) -> list[str]:
    """`--launcher/--num-processes/--accelerate-config` are the distributed.* keys (the same as in a YAML)."""
    flags = {"launcher": ns.launcher, "num_processes": ns.num_processes, "accelerate_config": ns.accelerate_config}
    return [f"distributed.{key}={value}" for key, value in flags.items() if value is not None] + (
        ["train.resume=true"] if getattr(ns, "resume", False) else []
    )
