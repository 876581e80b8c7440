"""`musicprod serve`: resolve what to serve, start the WSGI server (waitress), load the model once."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from server.app import API_KEY_ENV, ServeSettings, create_app, sampling_from_decoding
from server.engine import Engine
from server.loading import ServeError, from_adapter, from_base, from_champion, load_model, make_roots
from server.security import allowed_hosts, is_loopback

log = logging.getLogger("musicprod.server")

# Threads beyond queue + batch: probes, /metrics and the instant 429s must never wait behind generation.
SPARE_THREADS = 8
# waitress stops accepting at its connection limit (default 100): that many idle or slow clients would lock
# everybody out, /health included. Idle connections are closed after CHANNEL_TIMEOUT_S.
CONNECTION_LIMIT = 1000
FD_RESERVE = 256  # open files besides connections: model files, logs, the loader's
CHANNEL_TIMEOUT_S = 30


def add_arguments(p: argparse.ArgumentParser) -> None:
    what = p.add_mutually_exclusive_group()
    what.add_argument("--experiment", default=None, help="serve runs/<EXPERIMENT>/champion.json (default: default)")
    what.add_argument(
        "--adapter", default=None, help="serve this PEFT adapter folder (inside --runs-dir or a --model-dir)"
    )
    what.add_argument("--base", action="store_true", help="serve the plain base model (--base-model), no adapter")
    p.add_argument("--base-model", default=None, help="base model for --adapter/--base (registry name or folder)")
    p.add_argument("--runs-dir", default="runs", help="experiments live here; adapters may be read from it")
    p.add_argument(
        "--model-dir",
        action="append",
        default=[],
        help="extra directory models/adapters may be read from (repeatable); the model cache always is",
    )
    p.add_argument("--cache-dir", default="~/.cache/musicprod/models", help="prepared base models")
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="bind address; any but a loopback one needs $MUSICPROD_API_KEY (or --insecure-no-key)",
    )
    p.add_argument("--port", type=int, default=8000, help="0 = any free port (printed at start-up)")
    p.add_argument(
        "--insecure-no-key",
        action="store_true",
        help="allow a non-loopback --host without $MUSICPROD_API_KEY (anyone who reaches the port may use it)",
    )
    p.add_argument(
        "--allowed-host",
        action="append",
        default=[],
        metavar="NAME",
        help="a Host header name to answer besides localhost and --host (repeatable); with a wildcard "
        "--host and none given, any name is answered",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help=f"waitress worker threads (default: queue size + max batch + {SPARE_THREADS})",
    )
    p.add_argument(
        "--dtype",
        default=None,
        choices=["bfloat16", "float32", "float16"],
        help="weights dtype (default: the champion's evaluated dtype, else bfloat16)",
    )
    p.add_argument(
        "--merge",
        default=None,
        choices=["auto", "yes", "no"],
        help="auto: time attached vs merged LoRA at start-up and keep the faster (default: as the champion "
        "was evaluated, else auto)",
    )
    p.add_argument("--max-batch", type=int, default=16, help="requests generated together (1 = no batching)")
    p.add_argument("--batch-window-ms", type=float, default=5.0, help="how long a batch waits for company")
    p.add_argument(
        "--continuous-batching",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="torch backend: requests that arrive while a batch decodes join it between steps (off: they wait "
        "for the whole batch to finish)",
    )
    p.add_argument("--queue-size", type=int, default=64, help="waiting requests; more -> 429")
    p.add_argument(
        "--max-batch-tokens",
        type=int,
        default=16384,
        help="KV positions per batch: rows x (longest prompt + largest max_new_tokens); a request that "
        "does not fit waits for the next batch",
    )
    p.add_argument("--max-new-tokens-cap", type=int, default=1024)
    p.add_argument("--timeout-s", type=float, default=120.0, help="per request, queue wait included; past it -> 504")
    p.add_argument("--max-body-bytes", type=int, default=1 << 20)
    p.add_argument(
        "--torch-threads",
        type=int,
        default=0,
        help="torch CPU threads (0 = torch's default, one per core); 1 is steadier on a busy machine",
    )
    p.add_argument(
        "--backend",
        default="torch",
        choices=["auto", "torch", "llamacpp"],
        help="torch: base + adapter in transformers (the evaluated weights); llamacpp: the GGUF that "
        "`musicprod export --format gguf` wrote (needs the llamacpp extra); auto: llamacpp when "
        "both are there, else torch",
    )
    p.add_argument("--gguf", default=None, help="GGUF file for the llamacpp backend (default: the target's export)")
    p.add_argument(
        "--llamacpp-extra-buffers",
        action="store_true",
        help="let llama.cpp use its extra CPU buffer types (AMX, repacked weights); off by default: with them "
        "q8_0 GGUFs crashed llama_decode on AMX CPUs in our VMs (docs/serving.md)",
    )
    p.add_argument("--log-level", default="INFO")


def resolve_target(ns):
    roots = make_roots(ns.runs_dir, ns.model_dir, ns.cache_dir)
    if ns.adapter:
        return from_adapter(ns.adapter, roots, ns.cache_dir, ns.base_model)
    if ns.base:
        return from_base(ns.base_model, roots, ns.cache_dir)
    return from_champion(ns.experiment or "default", roots, ns.cache_dir)


def served_as_measured(target, dtype: str | None, merge: str | None) -> tuple[str, str]:
    """Weights dtype and merge mode: the command line's, else those the champion was evaluated with."""
    decoding = (target.champion or {}).get("decoding") or {}
    evaluated_merge = decoding.get("merge_adapter")
    return (
        dtype or decoding.get("dtype") or "bfloat16",
        merge or ("auto" if evaluated_merge is None else "yes" if evaluated_merge else "no"),
    )


def check_bind(host: str, api_key: str | None, insecure_no_key: bool) -> str | None:
    """Why this bind is refused, or None."""
    if is_loopback(host) or api_key or insecure_no_key:
        return None
    return (
        f"--host {host} accepts connections from other machines, and ${API_KEY_ENV} is not set: set it (clients "
        f"send Authorization: Bearer <key>), or pass --insecure-no-key to serve without one"
    )


def worker_threads(ns) -> int:
    """Every request the engine can hold (queued + running) gets a thread, with spares, so the surplus meets a
    429 at once instead of waiting in waitress's unbounded queue, outside the timeout, ahead of /health."""
    needed = ns.queue_size + ns.max_batch + SPARE_THREADS
    if ns.threads is not None and ns.threads < needed:
        print(
            f"musicprod serve: warning: --threads {ns.threads} < queue size + max batch + {SPARE_THREADS} = "
            f"{needed}: requests past {ns.threads} wait unbounded and /health waits behind them",
            file=sys.stderr,
        )
    return ns.threads or needed


def _connection_limit() -> int:
    """CONNECTION_LIMIT, raising the open-file soft limit for it as far as the hard limit allows."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return CONNECTION_LIMIT
    wanted = CONNECTION_LIMIT + FD_RESERVE
    if soft < wanted:
        soft = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    return max(100, min(CONNECTION_LIMIT, soft - FD_RESERVE))


def _backend(ns, target):
    """(engine, load function) for --backend; llama.cpp is imported only when it is chosen."""
    from server import llamacpp

    backend, why = llamacpp.choose_backend(ns.backend, target, ns.gguf)
    engine_args = dict(
        max_queue=ns.queue_size,
        max_batch=ns.max_batch,
        batch_window_ms=ns.batch_window_ms,
        max_batch_tokens=ns.max_batch_tokens,
        continuous=ns.continuous_batching,
    )
    log.info("backend %s (%s)", backend, why)  # stdout's first line is the "listening on" line
    if backend == "llamacpp":
        gguf = llamacpp.resolve_gguf(target, ns.gguf, make_roots(ns.runs_dir, ns.model_dir, ns.cache_dir))
        return (
            llamacpp.LlamaCppEngine(**engine_args),
            lambda: llamacpp.load_gguf(
                target, gguf, ns.max_batch, n_threads=ns.torch_threads, extra_buffer_types=ns.llamacpp_extra_buffers
            ),
        )
    dtype, merge = served_as_measured(target, ns.dtype, ns.merge)
    return Engine(**engine_args), lambda: load_model(target, dtype, merge)


def serve(ns) -> int:
    from waitress.server import create_server

    logging.basicConfig(level=ns.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    refused = check_bind(ns.host, os.environ.get(API_KEY_ENV), ns.insecure_no_key)
    if refused:
        print(f"musicprod serve: error: {refused}", file=sys.stderr)
        return 2
    try:
        target = resolve_target(ns)
    except ServeError as e:
        print(f"musicprod serve: error: {e}", file=sys.stderr)
        return 2
    if ns.torch_threads > 0:
        import torch

        torch.set_num_threads(ns.torch_threads)
    try:
        engine, load = _backend(ns, target)
    except ServeError as e:
        print(f"musicprod serve: error: {e}", file=sys.stderr)
        return 2
    # The champion is served as it was measured: its evaluated decoding is every request's default.
    sampling, max_new = sampling_from_decoding((target.champion or {}).get("decoding"))
    settings = ServeSettings.from_env(
        max_new_tokens_cap=ns.max_new_tokens_cap,
        request_timeout_s=ns.timeout_s,
        max_body_bytes=ns.max_body_bytes,
        default_sampling=sampling,
        default_max_new_tokens=min(max_new or 256, ns.max_new_tokens_cap),
        allowed_hosts=allowed_hosts(ns.host, ns.allowed_host),
    )
    app = create_app(engine, settings)
    # Listen first so /health answers and /ready reports loading; the model loads once, in the background.
    srv = create_server(
        app,
        host=ns.host,
        port=ns.port,
        threads=worker_threads(ns),
        ident="musicprod",
        connection_limit=_connection_limit(),
        channel_timeout=CHANNEL_TIMEOUT_S,
        cleanup_interval=5,
        # waitress keeps reading a connection while its request runs, so it sees the client
        # hang up (environ["waitress.client_disconnected"]) and the generation can stop
        channel_request_lookahead=1,
        # waitress' own (plain-text) 413 only for grossly oversize bodies; Flask answers the rest
        max_request_body_size=max(4 * ns.max_body_bytes, 8 << 20),
    )
    print(
        f"musicprod serve: {target.model_id} ({target.source}) listening on "
        f"http://{ns.host}:{srv.effective_port}  auth={'bearer' if settings.api_key else 'off'}  "
        f"default decoding {settings.default_sampling}, max {settings.default_max_new_tokens} tokens",
        flush=True,
    )
    engine.load_in_background(load)
    try:
        srv.run()
    except KeyboardInterrupt:
        pass
    finally:
        engine.stop()
    return 0
