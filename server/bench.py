"""`musicprod bench serve`: latency and throughput of the real server over HTTP (prints figures).

For each batching mode (on: up to --max-batch rows per batch; off: --max-batch 1) a fresh `musicprod serve`
subprocess is started and driven by closed-loop clients at each concurrency level: every request asks for
exactly --new-tokens tokens (ignore_eos), so tokens/s compare like for like. llama.cpp (llama-cpp-python, the
same GGUF the base model was prepared from, no adapter) gives a reference figure when it is installed.
"""

from __future__ import annotations

import argparse
import statistics
import time
from concurrent.futures import ThreadPoolExecutor

import requests

from server.process import ServerProcess

QUESTIONS = [
    "How do I set the attack time on a bus compressor?",
    "What does a high-pass filter do in a mix?",
    "Explain sidechain compression in Ableton Live.",
    "How loud should a master be for streaming?",
    "Wie stelle ich einen Limiter richtig ein?",
    "What is the difference between EQ cuts and boosts?",
    "How do I make a punchy kick drum?",
    "What is parallel compression?",
]


def parse(args: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="musicprod bench serve", description=__doc__)
    what = p.add_mutually_exclusive_group()
    what.add_argument("--experiment", default=None, help="serve runs/<EXPERIMENT>/champion.json")
    what.add_argument(
        "--adapter",
        default=None,
        help="serve this adapter (default: the default experiment's champion, else runs/default/hf-lora/adapter)",
    )
    what.add_argument("--base", action="store_true", help="serve the plain base model")
    p.add_argument("--concurrency", default="1,4,8,16")
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--rounds", type=int, default=2, help="requests per client at each level (>= 4 requests in all)")
    p.add_argument("--modes", default="on,off", help="batching modes to measure: on, off or both")
    p.add_argument("--max-batch", type=int, default=16)
    p.add_argument("--torch-threads", type=int, default=0)
    p.add_argument("--no-llamacpp", action="store_true")
    return p.parse_args(args)


def _target_args(ns) -> list[str]:
    from pathlib import Path

    if ns.adapter:
        return ["--adapter", ns.adapter]
    if ns.base:
        return ["--base"]
    if ns.experiment or Path("runs/default/champion.json").exists():
        return ["--experiment", ns.experiment or "default"]
    return ["--adapter", "runs/default/hf-lora/adapter"]


def _one(url: str, i: int, new_tokens: int) -> tuple[float, int, int]:
    body = {
        "messages": [{"role": "user", "content": QUESTIONS[i % len(QUESTIONS)]}],
        "max_new_tokens": new_tokens,
        "ignore_eos": True,
        "temperature": 0.7,
        "seed": i,
    }
    t0 = time.perf_counter()
    r = requests.post(f"{url}/generate", json=body, timeout=600)
    return time.perf_counter() - t0, r.status_code, r.json().get("usage", {}).get("completion_tokens", 0)


def _percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


def measure_level(url: str, concurrency: int, n_requests: int, new_tokens: int) -> dict:
    t0 = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        results = list(pool.map(lambda i: _one(url, i, new_tokens), range(n_requests)))
    wall = time.perf_counter() - t0
    latencies = [r[0] for r in results]
    return {
        "c": concurrency,
        "n": n_requests,
        "p50_s": _percentile(latencies, 50),
        "p95_s": _percentile(latencies, 95),
        "tokens_per_s": sum(r[2] for r in results) / wall,
        "errors": sum(r[1] != 200 for r in results),
    }


def bench_llamacpp(new_tokens: int, threads: int, n: int = 4) -> dict | None:
    try:
        from llama_cpp import Llama

        from harness.registry import get_base_model
    except ImportError:
        return None
    gguf = get_base_model("smollm2-135m-instruct").gguf_path()
    llm = Llama(model_path=gguf, n_ctx=512, n_threads=threads or None, verbose=False)
    no_eos = {llm.token_eos(): -1e9, llm.tokenize(b"<|im_end|>", add_bos=False, special=True)[0]: -1e9}
    latencies, tokens = [], 0
    for i in range(n + 1):
        prompt = f"<|im_start|>user\n{QUESTIONS[i % len(QUESTIONS)]}<|im_end|>\n<|im_start|>assistant\n"
        t0 = time.perf_counter()
        out = llm.create_completion(prompt, max_tokens=new_tokens, temperature=0.7, seed=i, logit_bias=no_eos)
        if i:  # the first call warms up
            latencies.append(time.perf_counter() - t0)
            tokens += out["usage"]["completion_tokens"]
    return {"p50_s": statistics.median(latencies), "tokens_per_s": tokens / sum(latencies), "n": n}


def main(args: list[str]) -> int:
    ns = parse(args)
    levels = [int(c) for c in ns.concurrency.split(",")]
    modes = [m.strip() for m in ns.modes.split(",")]
    threads = ["--torch-threads", str(ns.torch_threads)] if ns.torch_threads else []
    llama = None if ns.no_llamacpp else bench_llamacpp(ns.new_tokens, ns.torch_threads)
    rows, load_info = [], None
    for mode in modes:
        batch = ns.max_batch if mode == "on" else 1
        server_args = [
            *_target_args(ns),
            *threads,
            "--max-batch",
            str(batch),
            "--queue-size",
            "256",
            "--max-new-tokens-cap",
            str(max(ns.new_tokens, 256)),
            "--timeout-s",
            "600",
        ]
        with ServerProcess(server_args, log_path=f"/tmp/musicprod-bench-serve-{mode}.log") as srv:
            load_info = srv.load_info
            measure_level(srv.url, 1, 1, 8)  # warm-up
            for c in levels:
                n = max(4, c * ns.rounds)
                row = measure_level(srv.url, c, n, ns.new_tokens)
                row["mode"] = mode
                rows.append(row)
                print(
                    f"  batching {mode:3s} c={c:<3d} n={n:<3d} p50 {row['p50_s']:.2f} s  p95 {row['p95_s']:.2f} s  "
                    f"{row['tokens_per_s']:.1f} tok/s  errors {row['errors']}",
                    flush=True,
                )
    print(
        f"\nbench serve: {load_info['model_id']} ({load_info['source']}), dtype {load_info['dtype']}, "
        f"LoRA {load_info['merge']}, start-up speed check tok/s {load_info.get('speed_tokens_per_s')}, "
        f"{ns.new_tokens} new tokens per request (ignore_eos), closed-loop clients over HTTP"
    )
    print(f"{'batching':9s} {'c':>3s} {'n':>4s} {'p50 s':>7s} {'p95 s':>7s} {'tok/s':>8s} {'x c=1':>6s} {'errors':>6s}")
    for mode in modes:
        base = next((r["tokens_per_s"] for r in rows if r["mode"] == mode and r["c"] == 1), None)
        for r in (r for r in rows if r["mode"] == mode):
            ratio = f"{r['tokens_per_s'] / base:.2f}" if base else "-"
            print(
                f"{mode:9s} {r['c']:3d} {r['n']:4d} {r['p50_s']:7.2f} {r['p95_s']:7.2f} {r['tokens_per_s']:8.1f} "
                f"{ratio:>6s} {r['errors']:6d}"
            )
    if llama:
        ours = next((r for r in rows if r["c"] == 1), None)
        ratio = f"{ours['tokens_per_s'] / llama['tokens_per_s']:.2f}" if ours else "-"
        print(
            f"llama.cpp (llama-cpp-python, same GGUF, no adapter, in-process, c=1): p50 {llama['p50_s']:.2f} s, "
            f"{llama['tokens_per_s']:.1f} tok/s; this server at c=1 / llama.cpp = {ratio}"
        )
    else:
        print("llama.cpp: not measured (llama-cpp-python not installed or --no-llamacpp)")
    return 0 if not any(r["errors"] for r in rows) else 1
