"""`musicprod bench train | eval | recipe | serve | gpu`: benchmarks that print figures."""

from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    p = sub.add_parser("bench", help="benchmarks that print figures: train | eval | serve | gpu")
    p.add_argument("what", choices=["train", "eval", "recipe", "serve", "gpu"])
    p.add_argument(
        "args",
        nargs=argparse.REMAINDER,
        help="train: [CONFIG.yaml] [key=value ...]; eval: [EXPERIMENT] [SYSTEM] [key=value ...]; "
        "serve, gpu: see `musicprod bench serve --help`, `musicprod bench gpu --help`",
    )
    p.set_defaults(func=run)


BENCH_USAGE = {
    "train": "musicprod bench train [CONFIG.yaml] [key=value ...]: hf-lora and hf-qlora, 12 steps, tokens/s and memory",
    "eval": "musicprod bench eval [EXPERIMENT] [SYSTEM] [eval.key=value ...]: full held-out, merged vs attached adapter",
    "recipe": "musicprod bench recipe [CONFIG.yaml] name=NAME systems=[SYSTEM] [key=value ...] [--checkpoints K]: train "
    "with K checkpoints, evaluate each on the dev set, append rows to benchmarks/results/recipe/sweep.jsonl",
}


def run(ns) -> int:
    from harness import bench

    if ns.what in BENCH_USAGE and any(a in ("-h", "--help") for a in ns.args):
        print(BENCH_USAGE[ns.what])  # serve and gpu parse their own options (and --help)
        return 0
    if ns.what == "serve":  # the server is downstream of the harness: only the command line reaches it
        from server.bench import main as bench_serve

        return bench_serve(ns.args)
    return bench.main(ns.what, ns.args)
