"""`musicprod export [EXPERIMENT]`: merged folder, GGUF and Ollama Modelfile of a system."""

from __future__ import annotations

import sys

from harness.layout import resolve_experiment


def add_parser(sub) -> None:
    p = sub.add_parser("export", help="ship a system (default: the champion): merged folder, GGUF, Ollama Modelfile")
    p.add_argument("experiment", nargs="?", default="default", help="name under runs/ or a path (default: default)")
    p.add_argument("--system", default=None, help="a trained system or 'base' (default: the champion)")
    p.add_argument(
        "--format",
        action="append",
        default=None,
        metavar="merged|gguf|ollama",
        help="repeatable or comma-separated (default: all three; ollama includes the gguf)",
    )
    p.add_argument("--out", default=None, help="default runs/<experiment>/export/<system>/")
    p.add_argument(
        "--converter",
        default=None,
        help="llama.cpp's convert_hf_to_gguf.py (offline; default: fetched "
        "once from the pinned llama-cpp-python sdist)",
    )
    p.add_argument(
        "--dtype",
        default="auto",
        choices=["auto", "float32", "bfloat16", "float16"],
        help="merged weights (auto: the base checkpoint's dtype)",
    )
    p.set_defaults(func=run)


def run(ns) -> int:
    from export import ExportError, run_export

    experiment_dir = resolve_experiment(ns.experiment)
    try:
        manifest = run_export(experiment_dir, ns.system, ns.format, ns.out, ns.converter, ns.dtype)
    except ExportError as e:
        print(f"musicprod export: error: {e}", file=sys.stderr)
        return 2
    for name, entry in manifest["files"].items():
        if name.endswith((".gguf", ".safetensors", "Modelfile", "README.md")):
            print(f"  {name:48s} {entry['bytes'] / 2**20:9.1f} MiB  sha256 {entry['sha256'][:16]}")
    return 0
