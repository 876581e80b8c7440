"""`musicprod bench serve`: latency and throughput of the real server over HTTP, both backends on the same model.

For each backend (torch: base + adapter, the champion's dtype; llamacpp: the GGUF `musicprod export` wrote for the
same model) and each batching mode (on: up to --max-batch rows, continuous batching; static: the same without
joining a running batch, torch only; off: --max-batch 1) a fresh
`musicprod serve` subprocess is started and driven by closed-loop clients at each concurrency level: every
request asks for exactly --new-tokens tokens (ignore_eos), so tokens/s compare like for like.
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
TARGET_P50_S = 2.0  # issue 19: p50 <= 2 s for 64 new tokens at c=1
TARGET_SCALING = 4.0  # issue 19: torch throughput at c=8 >= 4x c=1


def parse(args: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="musicprod bench serve", description=__doc__)
    what = p.add_mutually_exclusive_group()
    what.add_argument("--experiment", default=None, help="serve runs/<EXPERIMENT>/champion.json")
    what.add_argument(
        "--adapter",
        default=None,
        help="serve this adapter (default: the default experiment's champion, else runs/default/hf-lora/adapter)",
    )
    what.add_argument("--base", action="store_true", help="serve the plain base model (llamacpp needs --gguf)")
    p.add_argument(
        "--backends",
        default="torch,llamacpp",
        help="torch, llamacpp or both; llamacpp is skipped (with the reason) when llama-cpp-python or "
        "the GGUF export is missing",
    )
    p.add_argument("--gguf", default=None, help="GGUF for the llamacpp backend (default: the model's export)")
    p.add_argument("--concurrency", default="1,4,8,16")
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--rounds", type=int, default=2, help="requests per client at each level (>= 4 requests in all)")
    p.add_argument(
        "--modes",
        default="on,off",
        help="batching modes to measure, comma-separated: on (continuous), static (torch: whole batches only), off",
    )
    p.add_argument("--max-batch", type=int, default=16)
    p.add_argument("--torch-threads", type=int, default=0, help="CPU threads of either backend (0 = its default)")
    p.add_argument("--runs-dir", default="runs")
    return p.parse_args(args)


def _target_args(ns) -> list[str]:
    from pathlib import Path

    if ns.adapter:
        return ["--adapter", ns.adapter]
    if ns.base:
        return ["--base"]
    if ns.experiment or (Path(ns.runs_dir) / "default" / "champion.json").exists():
        return ["--experiment", ns.experiment or "default"]
    return ["--adapter", f"{ns.runs_dir}/default/hf-lora/adapter"]


def _one(url: str, i: int, new_tokens: int, headers: dict) -> tuple[float, int, int]:
    body = {
        "messages": [{"role": "user", "content": QUESTIONS[i % len(QUESTIONS)]}],
        "max_new_tokens": new_tokens,
        "ignore_eos": True,
        "temperature": 0.7,
        "seed": i,
    }
    t0 = time.perf_counter()
    r = requests.post(f"{url}/generate", json=body, headers=headers, timeout=900)
    latency = time.perf_counter() - t0
    return latency, r.status_code, (r.json().get("usage", {}).get("completion_tokens", 0) if r.ok else 0)


def _percentile(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


def measure_level(url: str, concurrency: int, n_requests: int, new_tokens: int, headers: dict | None = None) -> dict:
    t0 = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        results = list(pool.map(lambda i: _one(url, i, new_tokens, headers or {}), range(n_requests)))
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


def _skip_reason(backend: str, ns) -> str | None:
    if backend != "llamacpp":
        return None
    from server.llamacpp import available

    if not available():
        return "llama-cpp-python is not installed (pip install -e '.[llamacpp]')"
    return None


def main(args: list[str]) -> int:
    ns = parse(args)
    levels = [int(c) for c in ns.concurrency.split(",")]
    modes = [m.strip() for m in ns.modes.split(",")]
    backends = [b.strip() for b in ns.backends.split(",")]
    threads = ["--torch-threads", str(ns.torch_threads)] if ns.torch_threads else []
    rows, infos, skipped = [], {}, {}
    for backend in backends:
        reason = _skip_reason(backend, ns)
        if reason:
            skipped[backend] = reason
            print(f"  {backend}: skipped: {reason}", flush=True)
            continue
        for mode in modes:
            if mode == "static" and backend != "torch":
                continue  # llama.cpp's engine runs whole batches anyway
            batch = 1 if mode == "off" else ns.max_batch
            server_args = [
                *_target_args(ns),
                "--runs-dir",
                ns.runs_dir,
                *threads,
                "--backend",
                backend,
                *(["--gguf", ns.gguf] if ns.gguf and backend == "llamacpp" else []),
                "--max-batch",
                str(batch),
                *(["--no-continuous-batching"] if mode == "static" else []),
                "--queue-size",
                "256",
                "--max-new-tokens-cap",
                str(max(ns.new_tokens, 256)),
                "--timeout-s",
                "900",
            ]
            log = f"/tmp/musicprod-bench-serve-{backend}-{mode}.log"
            try:
                srv = ServerProcess(server_args, log_path=log)
            except (RuntimeError, TimeoutError) as e:
                skipped[backend] = f"server did not start: {e}"
                print(f"  {backend}: skipped: {e} (log {log})", flush=True)
                break
            with srv:
                infos[backend] = srv.load_info
                headers = getattr(srv, "auth", {})
                measure_level(srv.url, 1, 1, 8, headers)  # warm-up
                for c in levels:
                    n = max(4, c * ns.rounds)
                    row = {**measure_level(srv.url, c, n, ns.new_tokens, headers), "mode": mode, "backend": backend}
                    rows.append(row)
                    print(
                        f"  {backend:8s} batching {mode:3s} c={c:<3d} n={n:<3d} p50 {row['p50_s']:.2f} s  "
                        f"p95 {row['p95_s']:.2f} s  {row['tokens_per_s']:.1f} tok/s  errors {row['errors']}",
                        flush=True,
                    )
    print_report(ns, rows, infos, skipped)
    return 0 if rows and not any(r["errors"] for r in rows) else 1


def _describe(backend: str, info: dict) -> str:
    if backend == "llamacpp":
        return (
            f"{info['model_id']} GGUF {info.get('gguf')} ({info.get('gguf_bytes', 0) / 2**20:.0f} MiB), "
            f"llama-cpp-python {info.get('llama_cpp_python')}, {info.get('n_threads')} threads"
        )
    return (
        f"{info['model_id']} ({info['source']}), dtype {info['dtype']}, LoRA {info['merge']}, "
        f"start-up speed check tok/s {info.get('speed_tokens_per_s')}"
    )


def print_report(ns, rows: list[dict], infos: dict, skipped: dict) -> None:
    print(f"\nbench serve: {ns.new_tokens} new tokens per request (ignore_eos), closed-loop clients over HTTP")
    for backend, info in infos.items():
        print(f"  {backend}: {_describe(backend, info)}")
    for backend, reason in skipped.items():
        print(f"  {backend}: not measured: {reason}")
    print(
        f"{'backend':9s} {'batching':9s} {'c':>3s} {'n':>4s} {'p50 s':>7s} {'p95 s':>7s} {'tok/s':>8s} {'x c=1':>6s} "
        f"{'errors':>6s}"
    )
    for backend in infos:
        for mode in dict.fromkeys(r["mode"] for r in rows if r["backend"] == backend):
            mine = [r for r in rows if r["backend"] == backend and r["mode"] == mode]
            base = next((r["tokens_per_s"] for r in mine if r["c"] == 1), None)
            for r in mine:
                ratio = f"{r['tokens_per_s'] / base:.2f}" if base else "-"
                print(
                    f"{backend:9s} {mode:9s} {r['c']:3d} {r['n']:4d} {r['p50_s']:7.2f} {r['p95_s']:7.2f} "
                    f"{r['tokens_per_s']:8.1f} {ratio:>6s} {r['errors']:6d}"
                )
    print("\ntargets (issue 19):")
    for backend in infos:
        on = [r for r in rows if r["backend"] == backend and r["mode"] == ns.modes.split(",")[0].strip()]
        c1 = next((r for r in on if r["c"] == 1), None)
        c8 = next((r for r in on if r["c"] == 8), None)
        if c1:
            verdict = "met" if c1["p50_s"] <= TARGET_P50_S else "NOT met"
            print(f"  {backend}: p50 at c=1 {c1['p50_s']:.2f} s (target <= {TARGET_P50_S:g} s: {verdict})")
        if c1 and c8:
            scale = c8["tokens_per_s"] / c1["tokens_per_s"]
            goal = (
                f" (target >= {TARGET_SCALING:g}x: {'met' if scale >= TARGET_SCALING else 'NOT met'})"
                if backend == "torch"
                else ""
            )
            print(f"  {backend}: throughput c=8 / c=1 = {scale:.2f}x{goal}")
