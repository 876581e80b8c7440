"""`musicprod serve`: the champion over HTTP (the server package parses its own options)."""

from __future__ import annotations


def add_parser(sub) -> None:
    p = sub.add_parser("serve", help="serve the champion over HTTP (/generate, OpenAI /v1/chat/completions)")
    from server.main import add_arguments as add_serve_arguments

    add_serve_arguments(p)
    p.set_defaults(func=run)


def run(ns) -> int:
    from server.main import serve

    return serve(ns)
