"""`musicprod data check`: validate the training set, augmentations, dev set and held-out benchmark."""

from __future__ import annotations


def add_parser(sub) -> None:
    p = sub.add_parser("data", help="check: validate training set and held-out benchmark")
    p.add_argument("action", choices=["check"])
    p.add_argument("--train", default="data/music_production_dataset.json")
    p.add_argument("--benchmark-dir", default="benchmarks/musicprod/data")
    p.add_argument(
        "--augmented",
        default="data/music_production_augmented.json",
        help="paraphrase augmentations of the training set ('' = none)",
    )
    p.add_argument("--dev-dir", default="benchmarks/musicprod/data/dev", help="dev set (qa.json, mc.json; '' = none)")
    p.add_argument("--no-semantic", action="store_true", help="skip the MiniLM near-duplicate checks")
    p.set_defaults(func=run)


def run(ns) -> int:
    from harness.data.check import run_check

    return run_check(
        ns.train,
        ns.benchmark_dir,
        semantic=not ns.no_semantic,
        augmented_path=ns.augmented or None,
        dev_dir=ns.dev_dir or None,
    )
