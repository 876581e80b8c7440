"""`musicprod rate [EXPERIMENT]`: human ratings (blind UI with per-rater links, CSV in/out, statistics)."""

from __future__ import annotations

import json
import sys

from harness.layout import resolve_experiment


def add_parser(sub) -> None:
    p = sub.add_parser("rate", help="human ratings: serve the blind rating UI, or --stats/--export/--import")
    p.add_argument("experiment", nargs="?", default="default", help="name under runs/ or a path (default: default)")
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="bind address (default: localhost only; 0.0.0.0 for raters on other machines, plain HTTP)",
    )
    p.add_argument("--port", type=int, default=8765)
    p.add_argument(
        "--raters",
        metavar="NAME,NAME",
        help="issue a personal link (random token) to each new rater; printed at start-up, only its hash is stored",
    )
    p.add_argument(
        "--reissue", action="store_true", help="with --raters: replace their links (the old ones stop working)"
    )
    p.add_argument(
        "--allowed-host",
        action="append",
        default=[],
        metavar="NAME",
        help="a Host name raters reach the UI by, besides localhost and --host (repeatable)",
    )
    p.add_argument("--stats", action="store_true", help="print means with 95%% CIs, alpha, coverage; then exit")
    p.add_argument("--json", action="store_true", help="with --stats: the summarize() dict as JSON")
    p.add_argument("--export", metavar="CSV", help="write all ratings to CSV (with --pairwise: the A/B judgements)")
    p.add_argument("--pairwise", action="store_true")
    p.add_argument("--import", dest="import_csv", metavar="CSV", help="import ratings from a CSV (spreadsheet)")
    p.add_argument("--template", metavar="CSV", help="write a blind sheet for --rater to fill in a spreadsheet")
    p.add_argument("--rater", help="with --template: the rater's name")
    p.set_defaults(func=run)


def run(ns) -> int:
    from harness import ratings

    experiment_dir = resolve_experiment(ns.experiment)
    store = ratings.RatingStore.for_experiment(experiment_dir)
    raters = [name for name in (ns.raters or "").split(",") if name.strip()]
    try:
        ratings.sync_queue(experiment_dir, store)
        tokens = {name: store.issue_token(name, ns.reissue) for name in raters}
        if ns.import_csv:
            print(json.dumps(ratings.import_csv(store, ns.import_csv)))
        if ns.export:
            n = ratings.export_csv(store, ns.export, kind="pairwise" if ns.pairwise else "single")
            print(f"wrote {n} rows to {ns.export}")
        if ns.template:
            n = ratings.export_template(store, ns.template, ns.rater or "")
            print(f"wrote a blind sheet of {n} answers for {ns.rater} to {ns.template}")
        if ns.stats:
            summary = ratings.summarize(experiment_dir)
            print(json.dumps(summary, indent=2, ensure_ascii=False) if ns.json else ratings.format_summary(summary))
    except ratings.RatingError as e:
        print(f"musicprod rate: error: {e}", file=sys.stderr)
        return 2
    if ns.import_csv or ns.export or ns.template or ns.stats:
        return 0
    if not store.raters():
        print(
            "musicprod rate: error: no raters yet; name them with --raters NAME,NAME (each gets a personal link)",
            file=sys.stderr,
        )
        return 2
    from server.rating import serve

    return serve(experiment_dir, ns.host, ns.port, tokens=tokens, extra_hosts=ns.allowed_host)
