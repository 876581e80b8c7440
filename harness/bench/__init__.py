"""`musicprod bench ...`: benchmarks that print measured figures (no pass/fail thresholds): train, eval, recipe and
gpu here; serve lives with the server (server/bench.py) and is reached from the command line."""

from __future__ import annotations


def main(what: str, args: list[str]) -> int:
    if what == "train":
        from harness.bench.train import bench_train

        return bench_train(args)
    if what == "eval":
        from harness.bench.eval import bench_eval

        return bench_eval(args)
    if what == "recipe":
        from harness.bench.recipe import bench_recipe

        return bench_recipe(args)
    if what == "gpu":
        from harness.bench.gpu import main as bench_gpu

        return bench_gpu(args)
    raise SystemExit(f"unknown benchmark {what!r}")
