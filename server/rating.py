"""Blind human-rating web UI: a Flask blueprint over harness.ratings, and a standalone app for `musicprod rate`.

The browser only ever sees random blind ids (answers) and ids derived from them (pairs); target names never leave
the server. A rating is answered with 200 only after its transaction committed, and the page says "saved" only on
that 200.

Every route, the page and its static files included, needs a rater's token (`musicprod rate --raters ...` prints
each rater's link, /rate/?token=...; the page sends it as `Authorization: Bearer`). The rater is whoever the token
belongs to, never a name the client sends. The admin view (/rate/admin: agreement, coverage, per-target means)
answers only loopback clients that bring the admin token printed at start-up.

    app.register_blueprint(create_rating_blueprint("runs/default"), url_prefix="/rate")   # in another app
    create_rating_app("runs/default")                                                     # standalone
"""

from __future__ import annotations

import ipaddress
import logging
import secrets
import socket
import sys
from pathlib import Path

from flask import Blueprint, Flask, Response, g, jsonify, redirect, render_template, request, url_for
from werkzeug.exceptions import HTTPException

from harness.ratings import (
    DIMENSIONS,
    PAIR_CHOICES,
    RUBRIC,
    SCORES,
    RatingError,
    RatingStore,
    format_summary,
    generation_files,
    pair_key,
    summarize,
    sync_queue,
)
from server.security import WILDCARD_HOSTS, allowed_hosts, bearer_token, host_allowed, is_loopback, same_secret

log = logging.getLogger("musicprod.rating")

MAX_BODY_BYTES = 64 << 10  # a rating with a 4000-character comment, every character \u-escaped, is ~25 KB
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",  # no clickjacking of the save buttons
    # The page's own script and style only; the config <script> is JSON data, which CSP does not run.
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "Referrer-Policy": "no-referrer",  # the token is in the page's URL
    "Cache-Control": "no-store",
}
NO_TOKEN = "This rating page is personal: open the link you were given (it ends in ?token=...)."

UI_TEXT = {
    "en": {
        "title": "musicprod: rate answers",
        "lang_name": "English",
        "language": "Language",
        "intro": "You will see questions about music production, each with one answer from an unnamed system. "
        "Rate every answer on three 1-5 scales; the reference answer is there to check facts against.",
        "rating_as": "You are rating as {name}. Your ratings are saved as you go; the link takes you back.",
        "mode_label": "Mode",
        "mode_single": "Rate single answers (1-5)",
        "mode_pairwise": "Compare two answers (A / B / tie)",
        "start": "Start",
        "change_mode": "Change mode",
        "progress": "{done} of {total} rated",
        "question": "Question",
        "answer": "Answer",
        "answer_a": "Answer A",
        "answer_b": "Answer B",
        "show_reference": "Show reference answer",
        "hide_reference": "Hide reference answer",
        "reference": "Reference answer",
        "comment": "Comment (optional)",
        "back": "Back",
        "skip": "Skip",
        "save_next": "Save and next",
        "a_better": "A is better",
        "b_better": "B is better",
        "tie": "Tie",
        "saved": "Previous rating saved.",
        "saving": "Saving…",
        "already_rated": "You rated this before; saving replaces it.",
        "incomplete": "Score all three dimensions first (or skip with s).",
        "error": "Not saved: {error}. Your input is still here; try again.",
        "done_title": "All done. Thank you!",
        "done_text": "Every item in this mode has your rating. Use Back to revise one.",
        "empty": "Nothing to rate yet: no answers are queued for this experiment.",
        "shortcuts": "Keys: 1-5 score the highlighted scale, n or Enter save and next, s skip, p or ← back, "
        "r reference.",
        "shortcuts_pair": "Keys: a = A better, b = B better, t = tie, s skip, p or ← back, r reference.",
        "item_lang": {"en": "English question", "de": "German question"},
    },
    "de": {
        "title": "musicprod: Antworten bewerten",
        "lang_name": "Deutsch",
        "language": "Sprache",
        "intro": "Sie sehen Fragen zur Musikproduktion, jeweils mit einer Antwort eines ungenannten Systems. "
        "Bewerten Sie jede Antwort auf drei Skalen von 1 bis 5; die Referenzantwort dient zum Prüfen "
        "der Fakten.",
        "rating_as": "Sie bewerten als {name}. Jede Bewertung wird sofort gespeichert; der Link führt Sie zurück.",
        "mode_label": "Modus",
        "mode_single": "Einzelne Antworten bewerten (1-5)",
        "mode_pairwise": "Zwei Antworten vergleichen (A / B / gleich)",
        "start": "Los geht's",
        "change_mode": "Modus wechseln",
        "progress": "{done} von {total} bewertet",
        "question": "Frage",
        "answer": "Antwort",
        "answer_a": "Antwort A",
        "answer_b": "Antwort B",
        "show_reference": "Referenzantwort zeigen",
        "hide_reference": "Referenzantwort verbergen",
        "reference": "Referenzantwort",
        "comment": "Kommentar (optional)",
        "back": "Zurück",
        "skip": "Überspringen",
        "save_next": "Speichern und weiter",
        "a_better": "A ist besser",
        "b_better": "B ist besser",
        "tie": "Gleich gut",
        "saved": "Vorherige Bewertung gespeichert.",
        "saving": "Speichere…",
        "already_rated": "Schon bewertet; Speichern ersetzt die alte Bewertung.",
        "incomplete": "Bitte zuerst alle drei Skalen bewerten (oder mit s überspringen).",
        "error": "Nicht gespeichert: {error}. Ihre Eingaben sind noch da; bitte erneut versuchen.",
        "done_title": "Alles erledigt. Vielen Dank!",
        "done_text": "Jedes Element in diesem Modus hat Ihre Bewertung. Mit Zurück können Sie eine ändern.",
        "empty": "Noch nichts zu bewerten: für dieses Experiment sind keine Antworten eingereiht.",
        "shortcuts": "Tasten: 1-5 bewerten die markierte Skala, n oder Enter speichern und weiter, s überspringen, "
        "p oder ← zurück, r Referenz.",
        "shortcuts_pair": "Tasten: a = A besser, b = B besser, t = gleich gut, s überspringen, p oder ← zurück, "
        "r Referenz.",
        "item_lang": {"en": "Englische Frage", "de": "Deutsche Frage"},
    },
}


def _rubric_for_client() -> list[dict]:
    return [
        {
            "key": d,
            "name": RUBRIC[d]["name"],
            "question": RUBRIC[d]["question"],
            "levels": [{"score": s, "text": RUBRIC[d][s]} for s in SCORES],
        }
        for d in DIMENSIONS
    ]


def _error(message: str, status: int = 400):
    return jsonify({"error": message}), status


def _deny(status: int, message: str):
    """JSON for the API, plain text for a person who opened the page without their link."""
    if "/api/" in request.path:
        return _error(message, status)
    return Response(message, status=status, mimetype="text/plain")


def _loopback_client() -> bool:
    try:
        return ipaddress.ip_address(request.remote_addr or "").is_loopback
    except ValueError:
        return False


class _NotFound(Exception):
    """An answer or pair id the store does not know (-> 404)."""


class _Queue:
    """The experiment's store, re-synced from eval/*/generations.jsonl whenever one of those files changes."""

    def __init__(self, experiment_dir: str | Path):
        self.experiment_dir = Path(experiment_dir)
        self.store = RatingStore.for_experiment(self.experiment_dir)
        self._stamp = None
        self.refresh()

    def refresh(self) -> None:
        """Sync when a file changed. A file that cannot be read now (being replaced, or broken) is logged and the
        queue served as it was: one bad file must not take the rating UI down; the next call tries again."""
        try:
            files = generation_files(self.experiment_dir)
            stamp = tuple((t, p.stat().st_mtime_ns, p.stat().st_size) for t, p in files.items())
            if stamp != self._stamp:
                counts = sync_queue(self.experiment_dir, self.store)
                log.info("rating queue synced from %s: %s", self.experiment_dir, counts)
                self._stamp = stamp
        except (OSError, RatingError) as e:
            log.warning("rating queue not synced, serving the queue as it was: %s", e)


def _protect(bp: Blueprint, store: RatingStore, allowed: tuple[str, ...] | None, admin_token: str | None) -> None:
    """Host check, rater token (or admin token and a loopback client) on every route, security headers on every
    answer, and JSON errors that name no file."""

    @bp.before_request
    def _guard():
        request.max_content_length = MAX_BODY_BYTES
        if not host_allowed(request.host, allowed):
            return _deny(
                400,
                f"Host {request.host!r} is not a name this server answers to; start it with "
                "--allowed-host NAME to add one",
            )
        token = bearer_token(request.headers.get("Authorization")) or request.args.get("token", "")
        if request.endpoint == f"{bp.name}.admin":
            if not (admin_token and _loopback_client() and same_secret(token, admin_token)):
                return _deny(403, "the admin view answers only on this machine, with the admin link")
            return None
        g.rater = store.rater_for_token(token)
        if g.rater is None:
            return _deny(401, NO_TOKEN)
        g.token = token
        return None

    @bp.after_request
    def _headers(resp):
        for key, value in SECURITY_HEADERS.items():
            resp.headers.setdefault(key, value)
        return resp

    @bp.errorhandler(RatingError)
    def _bad_input(e):
        return _error(str(e))

    @bp.errorhandler(HTTPException)
    def _http_error(e: HTTPException):
        return _error(
            e.description if e.code != 413 else f"request body larger than {MAX_BODY_BYTES} bytes", e.code or 500
        )

    @bp.errorhandler(Exception)
    def _unexpected(e: Exception):
        log.exception("rating request failed: %s %s", request.method, request.path)
        return _error("internal error: not saved (the server log has the details)", 500)

    @bp.errorhandler(_NotFound)
    def _not_found(e):
        return _error(str(e), 404)


def create_rating_blueprint(
    experiment_dir: str | Path,
    name: str = "rating",
    allowed: tuple[str, ...] | None = None,
    admin_token: str | None = None,
) -> Blueprint:
    """`allowed`: Host header names to answer (None = any); `admin_token`: enables /admin (loopback only)."""
    queue = _Queue(experiment_dir)
    store = queue.store
    bp = Blueprint(
        name, __name__, template_folder="templates", static_folder="static/rating", static_url_path="/static"
    )
    _protect(bp, store, allowed, admin_token)

    def _answer(blind_id: str) -> dict:
        answer = store.answer_by_blind_id(blind_id)
        if answer is None:
            raise _NotFound(f"unknown item {blind_id!r}")
        return answer

    def _pair(pid: str) -> tuple[str, str]:
        if pid not in store.pairs():
            raise _NotFound(f"unknown pair {pid!r}")
        return store.pair_sides(g.rater, pid)

    def _json_body() -> dict:
        body = request.get_json(silent=True)
        if not isinstance(body, dict):
            raise RatingError("expected a JSON object (Content-Type: application/json)")
        return body

    @bp.get("/")
    def index():
        lang = request.accept_languages.best_match(list(UI_TEXT)) or "en"
        config = {
            "text": UI_TEXT,
            "rubric": _rubric_for_client(),
            "lang": lang,
            "rater": g.rater,
            "api": url_for(f"{name}.index").rstrip("/") + "/api",
            "experiment": queue.experiment_dir.name,
        }
        return render_template(
            "rating/index.html",
            config=config,
            text=UI_TEXT[lang],
            lang=lang,
            static=lambda f: url_for(f"{name}.static", filename=f, token=g.token),
        )

    @bp.get("/api/queue")
    def api_queue():
        queue.refresh()
        mode = request.args.get("mode", "single")
        if mode == "pairwise":
            order = store.pair_queue(g.rater)
            pairs = store.pairs()
            judged = {p["pair_key"] for p in store.pairwise(g.rater)}
            done = [pid for pid in order if pair_key(*pairs[pid]) in judged]
        elif mode == "single":
            order = store.single_queue(g.rater)
            rated = {r["blind_id"] for r in store.ratings(g.rater)}
            done = [blind_id for blind_id in order if blind_id in rated]
        else:
            raise RatingError(f"field 'mode' must be 'single' or 'pairwise', got {mode!r}")
        return jsonify({"mode": mode, "order": order, "done": done, "total": len(order)})

    @bp.get("/api/item/<uid>")
    def api_item(uid):
        answer = _answer(uid)
        mine = next((r for r in store.ratings(g.rater) if r["uid"] == answer["uid"]), None)
        return jsonify(
            {
                "uid": uid,
                "lang": answer["lang"],
                "question": answer["question"],
                "reference": answer["reference"],
                "answer": answer["answer"],
                "rating": {k: mine[k] for k in (*DIMENSIONS, "comment")} if mine else None,
            }
        )

    @bp.post("/api/rate")
    def api_rate():
        body = _json_body()
        answer = _answer(str(body.get("uid")))
        row_id = store.save_rating(g.rater, answer["uid"], body, body.get("comment", ""))
        return jsonify({"saved": True, "id": row_id})

    @bp.get("/api/pair/<pid>")
    def api_pair(pid):
        uid_a, uid_b = _pair(pid)
        a, b = store.answer(uid_a), store.answer(uid_b)
        mine = next((p for p in store.pairwise(g.rater) if p["pair_key"] == pair_key(uid_a, uid_b)), None)
        choice = None
        if mine:  # report the earlier choice in this rater's current side assignment
            choice = (
                mine["choice"]
                if mine["uid_a"] == uid_a or mine["choice"] == "tie"
                else {"a": "b", "b": "a"}[mine["choice"]]
            )
        return jsonify(
            {
                "pair": pid,
                "lang": a["lang"],
                "question": a["question"],
                "reference": a["reference"],
                "answer_a": a["answer"],
                "answer_b": b["answer"],
                "judgement": {"choice": choice, "comment": mine["comment"]} if mine else None,
            }
        )

    @bp.post("/api/compare")
    def api_compare():
        body = _json_body()
        uid_a, uid_b = _pair(str(body.get("pair")))
        if body.get("choice") not in PAIR_CHOICES:
            raise RatingError(f"field 'choice' must be one of {PAIR_CHOICES}, got {body.get('choice')!r}")
        row_id = store.save_pairwise(g.rater, uid_a, uid_b, body["choice"], body.get("comment", ""))
        return jsonify({"saved": True, "id": row_id})

    @bp.get("/admin")
    def admin():
        """Agreement and coverage for whoever runs the study; it names the systems, so raters never get it."""
        progress = "\n".join(
            f"  {rater}: {len(store.ratings(rater))} ratings, {len(store.pairwise(rater))} pairwise"
            for rater in store.raters()
        )
        text = f"{format_summary(summarize(queue.experiment_dir))}\n\nraters:\n{progress or '  none yet'}\n"
        return Response(text, mimetype="text/plain")

    return bp


def create_rating_app(
    experiment_dir: str | Path, allowed: tuple[str, ...] | None = None, admin_token: str | None = None
) -> Flask:
    """The blueprint under /rate, with / redirecting there: what `musicprod rate` serves."""
    app = Flask(__name__, static_folder=None)
    app.json.ensure_ascii = False
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    app.register_blueprint(
        create_rating_blueprint(experiment_dir, allowed=allowed, admin_token=admin_token), url_prefix="/rate"
    )

    @app.get("/")
    def root():  # keeps ?token=, so the bare host:port with a token opens the page too
        return redirect(url_for("rating.index", **request.args))

    @app.errorhandler(HTTPException)
    def _http_error(e: HTTPException):  # routing errors outside the blueprint: JSON, not Flask's HTML pages
        resp = jsonify({"error": e.description})
        resp.status_code = e.code or 500
        resp.headers.update(SECURITY_HEADERS)
        return resp

    return app


def _link_host(host: str) -> str:
    return socket.getfqdn() if host in WILDCARD_HOSTS else f"[{host}]" if ":" in host else host


def _announce(experiment_dir, host: str, port: int, tokens: dict[str, str | None], admin_token: str) -> None:
    base = f"http://{_link_host(host)}:{port}/rate/"
    print(f"rating UI for {experiment_dir}: {base}  (Ctrl+C to stop)", flush=True)
    for rater, token in tokens.items():
        print(
            f"  {rater}: {base}?token={token}" if token else f"  {rater}: has a link already (--reissue replaces it)",
            flush=True,
        )
    if is_loopback(host) or host in WILDCARD_HOSTS:
        print(f"  admin view (this machine only): http://127.0.0.1:{port}/rate/admin?token={admin_token}", flush=True)
    else:  # nothing listens on loopback, and the admin view answers nothing else
        print("  admin view: needs --host 127.0.0.1 or 0.0.0.0 (or use `musicprod rate --stats`)", flush=True)
    if not is_loopback(host):
        print(
            f"warning: listening on {host}: links and ratings cross the network unencrypted (plain HTTP); use a "
            "trusted network, an SSH tunnel or a TLS reverse proxy",
            file=sys.stderr,
            flush=True,
        )


def serve(
    experiment_dir: str | Path,
    host: str = "127.0.0.1",
    port: int = 8765,
    threads: int = 8,
    tokens: dict[str, str | None] | None = None,
    extra_hosts: list[str] | tuple[str, ...] = (),
) -> int:
    """Serve the rating app with waitress, printing the link of each rater in `tokens` ({name: new token, or None
    when the rater kept an earlier link}) and the admin link."""
    from waitress.server import create_server

    admin_token = secrets.token_urlsafe(24)  # per run, never stored
    app = create_rating_app(experiment_dir, allowed_hosts(host, list(extra_hosts)), admin_token)
    srv = create_server(app, host=host, port=port, threads=threads)
    _announce(experiment_dir, host, srv.effective_port, tokens or {}, admin_token)
    try:
        srv.run()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="Serve the blind rating UI for one experiment directory.")
    parser.add_argument("experiment_dir")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--raters", default="", help="comma-separated names: issue a link for each new one")
    ns = parser.parse_args()
    logging.basicConfig(level=logging.INFO)
    store = RatingStore.for_experiment(ns.experiment_dir)
    names = [name for name in ns.raters.split(",") if name.strip()]
    serve(ns.experiment_dir, ns.host, ns.port, tokens={name: store.issue_token(name) for name in names})
