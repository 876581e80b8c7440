"""Blind human-rating web UI: a Flask blueprint over harness.ratings, and a standalone app for `musicprod rate`.

The browser only ever sees opaque answer ids (and opaque pair ids); target names never leave the server. A rating
is answered with 200 only after its transaction committed, and the page says "saved" only on that 200.

    app.register_blueprint(create_rating_blueprint("runs/default"), url_prefix="/rate")   # in another app
    create_rating_app("runs/default")                                                     # standalone
"""
from __future__ import annotations

import logging
from pathlib import Path

from flask import Blueprint, Flask, jsonify, redirect, render_template, request, url_for

from harness.ratings import (DIMENSIONS, PAIR_CHOICES, RUBRIC, SCORES, RatingError, RatingStore, check_rater,
                             generation_files, sync_queue)

log = logging.getLogger("musicprod.rating")

UI_TEXT = {
    "en": {
        "title": "musicprod: rate answers", "lang_name": "English", "language": "Language",
        "intro": "You will see questions about music production, each with one answer from an unnamed system. "
                 "Rate every answer on three 1-5 scales; the reference answer is there to check facts against.",
        "name_label": "Your name (the same each time, so you can continue)", "mode_label": "Mode",
        "mode_single": "Rate single answers (1-5)", "mode_pairwise": "Compare two answers (A / B / tie)",
        "start": "Start", "change_rater": "Change rater", "progress": "{done} of {total} rated",
        "question": "Question", "answer": "Answer", "answer_a": "Answer A", "answer_b": "Answer B",
        "show_reference": "Show reference answer", "hide_reference": "Hide reference answer",
        "reference": "Reference answer", "comment": "Comment (optional)",
        "back": "Back", "skip": "Skip", "save_next": "Save and next",
        "a_better": "A is better", "b_better": "B is better", "tie": "Tie",
        "saved": "Previous rating saved.", "saving": "Saving…", "already_rated": "You rated this before; saving replaces it.",
        "incomplete": "Score all three dimensions first (or skip with s).",
        "error": "Not saved: {error}. Your input is still here; try again.",
        "done_title": "All done. Thank you!", "done_text": "Every item in this mode has your rating. "
                                                          "Use Back to revise one.",
        "empty": "Nothing to rate yet: no answers are queued for this experiment.",
        "shortcuts": "Keys: 1-5 score the highlighted scale, n or Enter save and next, s skip, p or ← back, "
                     "r reference.",
        "shortcuts_pair": "Keys: a = A better, b = B better, t = tie, s skip, p or ← back, r reference.",
        "item_lang": {"en": "English question", "de": "German question"},
        "name_required": "Please enter your name.",
    },
    "de": {
        "title": "musicprod: Antworten bewerten", "lang_name": "Deutsch", "language": "Sprache",
        "intro": "Sie sehen Fragen zur Musikproduktion, jeweils mit einer Antwort eines ungenannten Systems. "
                 "Bewerten Sie jede Antwort auf drei Skalen von 1 bis 5; die Referenzantwort dient zum Prüfen "
                 "der Fakten.",
        "name_label": "Ihr Name (jedes Mal gleich, damit Sie weitermachen können)", "mode_label": "Modus",
        "mode_single": "Einzelne Antworten bewerten (1-5)", "mode_pairwise": "Zwei Antworten vergleichen (A / B / gleich)",
        "start": "Los geht's", "change_rater": "Person wechseln", "progress": "{done} von {total} bewertet",
        "question": "Frage", "answer": "Antwort", "answer_a": "Antwort A", "answer_b": "Antwort B",
        "show_reference": "Referenzantwort zeigen", "hide_reference": "Referenzantwort verbergen",
        "reference": "Referenzantwort", "comment": "Kommentar (optional)",
        "back": "Zurück", "skip": "Überspringen", "save_next": "Speichern und weiter",
        "a_better": "A ist besser", "b_better": "B ist besser", "tie": "Gleich gut",
        "saved": "Vorherige Bewertung gespeichert.", "saving": "Speichere…",
        "already_rated": "Schon bewertet; Speichern ersetzt die alte Bewertung.",
        "incomplete": "Bitte zuerst alle drei Skalen bewerten (oder mit s überspringen).",
        "error": "Nicht gespeichert: {error}. Ihre Eingaben sind noch da; bitte erneut versuchen.",
        "done_title": "Alles erledigt. Vielen Dank!", "done_text": "Jedes Element in diesem Modus hat Ihre "
                                                                  "Bewertung. Mit Zurück können Sie eine ändern.",
        "empty": "Noch nichts zu bewerten: für dieses Experiment sind keine Antworten eingereiht.",
        "shortcuts": "Tasten: 1-5 bewerten die markierte Skala, n oder Enter speichern und weiter, s überspringen, "
                     "p oder ← zurück, r Referenz.",
        "shortcuts_pair": "Tasten: a = A besser, b = B besser, t = gleich gut, s überspringen, p oder ← zurück, "
                          "r Referenz.",
        "item_lang": {"en": "Englische Frage", "de": "Deutsche Frage"},
        "name_required": "Bitte geben Sie Ihren Namen ein.",
    },
}


def _rubric_for_client() -> list[dict]:
    return [{"key": d, "name": RUBRIC[d]["name"], "question": RUBRIC[d]["question"],
             "levels": [{"score": s, "text": RUBRIC[d][s]} for s in SCORES]} for d in DIMENSIONS]


def _error(message: str, status: int = 400):
    return jsonify({"error": message}), status


class _Queue:
    """The experiment's store, re-synced from eval/*/generations.jsonl whenever one of those files changes."""

    def __init__(self, experiment_dir: str | Path):
        self.experiment_dir = Path(experiment_dir)
        self.store = RatingStore.for_experiment(self.experiment_dir)
        self._stamp = None
        self.refresh()

    def refresh(self) -> None:
        files = generation_files(self.experiment_dir)
        stamp = tuple((t, p.stat().st_mtime_ns, p.stat().st_size) for t, p in files.items())
        if stamp != self._stamp:
            counts = sync_queue(self.experiment_dir, self.store)
            log.info("rating queue synced from %s: %s", self.experiment_dir, counts)
            self._stamp = stamp


def create_rating_blueprint(experiment_dir: str | Path, name: str = "rating") -> Blueprint:
    queue = _Queue(experiment_dir)
    store = queue.store
    bp = Blueprint(name, __name__, template_folder="templates", static_folder="static/rating",
                   static_url_path="/static")

    @bp.errorhandler(RatingError)
    def _bad_input(e):
        return _error(str(e))

    def _rater() -> str:
        return check_rater(request.args.get("rater"))

    @bp.get("/")
    def index():
        lang = request.accept_languages.best_match(list(UI_TEXT)) or "en"
        config = {"text": UI_TEXT, "rubric": _rubric_for_client(), "lang": lang,
                  "api": url_for(f"{name}.index").rstrip("/") + "/api", "experiment": queue.experiment_dir.name}
        return render_template("rating/index.html", config=config, text=UI_TEXT[lang], lang=lang,
                               static=lambda f: url_for(f"{name}.static", filename=f))

    @bp.get("/api/queue")
    def api_queue():
        rater = _rater()
        queue.refresh()
        mode = request.args.get("mode", "single")
        if mode == "pairwise":
            order = store.pair_queue(rater)
            pairs = store.pairs()
            judged = {p["pair_key"] for p in store.pairwise(rater)}
            done = [pid for pid in order if "|".join(sorted(pairs[pid])) in judged]
        elif mode == "single":
            order = store.single_queue(rater)
            rated = {r["uid"] for r in store.ratings(rater)}
            done = [uid for uid in order if uid in rated]
        else:
            raise RatingError(f"field 'mode' must be 'single' or 'pairwise', got {mode!r}")
        return jsonify({"mode": mode, "order": order, "done": done, "total": len(order)})

    @bp.get("/api/item/<uid>")
    def api_item(uid):
        rater = _rater()
        answer = store.answer(uid)
        if answer is None:
            return _error(f"unknown item {uid!r}", 404)
        mine = next((r for r in store.ratings(rater) if r["uid"] == uid), None)
        return jsonify({"uid": uid, "lang": answer["lang"], "question": answer["question"],
                        "reference": answer["reference"], "answer": answer["answer"],
                        "rating": {k: mine[k] for k in (*DIMENSIONS, "comment")} if mine else None})

    @bp.post("/api/rate")
    def api_rate():
        body = request.get_json(silent=True)
        if not isinstance(body, dict):
            raise RatingError("expected a JSON object")
        row_id = store.save_rating(body.get("rater"), str(body.get("uid")), body, body.get("comment", ""))
        return jsonify({"saved": True, "id": row_id})

    @bp.get("/api/pair/<pid>")
    def api_pair(pid):
        rater = _rater()
        if pid not in store.pairs():
            return _error(f"unknown pair {pid!r}", 404)
        uid_a, uid_b = store.pair_sides(rater, pid)
        a, b = store.answer(uid_a), store.answer(uid_b)
        key = "|".join(sorted((uid_a, uid_b)))
        mine = next((p for p in store.pairwise(rater) if p["pair_key"] == key), None)
        choice = None
        if mine:  # report the earlier choice in this rater's current side assignment
            choice = mine["choice"] if mine["uid_a"] == uid_a or mine["choice"] == "tie" else \
                {"a": "b", "b": "a"}[mine["choice"]]
        return jsonify({"pair": pid, "lang": a["lang"], "question": a["question"], "reference": a["reference"],
                        "answer_a": a["answer"], "answer_b": b["answer"],
                        "judgement": {"choice": choice, "comment": mine["comment"]} if mine else None})

    @bp.post("/api/compare")
    def api_compare():
        body = request.get_json(silent=True)
        if not isinstance(body, dict):
            raise RatingError("expected a JSON object")
        rater = check_rater(body.get("rater"))
        pid = str(body.get("pair"))
        if pid not in store.pairs():
            return _error(f"unknown pair {pid!r}", 404)
        if body.get("choice") not in PAIR_CHOICES:
            raise RatingError(f"field 'choice' must be one of {PAIR_CHOICES}, got {body.get('choice')!r}")
        uid_a, uid_b = store.pair_sides(rater, pid)
        row_id = store.save_pairwise(rater, uid_a, uid_b, body["choice"], body.get("comment", ""))
        return jsonify({"saved": True, "id": row_id})

    return bp


def create_rating_app(experiment_dir: str | Path) -> Flask:
    """The blueprint under /rate, with / redirecting there: what `musicprod rate` serves."""
    app = Flask(__name__)
    app.json.ensure_ascii = False
    app.register_blueprint(create_rating_blueprint(experiment_dir), url_prefix="/rate")

    @app.get("/")
    def root():
        return redirect(url_for("rating.index"))

    return app


def serve(experiment_dir: str | Path, host: str = "127.0.0.1", port: int = 8765, threads: int = 8) -> None:
    """Serve the rating app with waitress (a production WSGI server; Flask's own server is for development)."""
    from waitress import serve as waitress_serve
    app = create_rating_app(experiment_dir)
    print(f"rating UI for {experiment_dir}: http://{host}:{port}/rate/  (Ctrl+C to stop)", flush=True)
    waitress_serve(app, host=host, port=port, threads=threads)


if __name__ == "__main__":
    import argparse
    parser = argparse.ArgumentParser(description="Serve the blind rating UI for one experiment directory.")
    parser.add_argument("experiment_dir")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    ns = parser.parse_args()
    logging.basicConfig(level=logging.INFO)
    serve(ns.experiment_dir, ns.host, ns.port)
