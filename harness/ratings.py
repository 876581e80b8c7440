"""Human ratings: the rating queue, a durable SQLite store, CSV import/export, and the statistics.

Store: runs/<experiment>/ratings.sqlite in WAL mode with synchronous=FULL; every rating is one transaction that
is committed before the web UI is told "saved", so a confirmed rating survives a killed server (and a power cut).
Each call opens its own connection, so several raters (threads or processes) can write at once; SQLite
serialises the writers and `busy_timeout` makes them wait instead of failing.

Blindness: inside the store an answer is identified by `uid`, a hash of target, item and answer text (so lm-eval
and CSV imports can find it); anyone who sees the answer text can compute that hash, so it never leaves the
server. A rater only sees `blind_id`, drawn at random when the answer is queued, and everything the browser gets
(queue order, pair ids, which answer is shown as A) derives from blind ids alone. An answer regenerated with
different text gets a new uid, so old ratings never count for a new answer: statistics use the *current* answer
per (target, item), the one most recently queued.

Raters: `issue_token` gives each rater a random token for their personal link; the store keeps only its SHA-256.

Statistics (summarize): per target and dimension the mean over answers (each answer's ratings averaged first) with
a 95 % bootstrap CI (harness.eval.stats), Krippendorff's ordinal alpha per dimension (the `krippendorff` package),
Spearman between the human mean and an LLM judge's score per answer, coverage, and pairwise win/tie/loss counts.
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
import os
import secrets
import sqlite3
import tempfile
from collections import defaultdict
from contextlib import contextmanager
from datetime import datetime, timezone
from itertools import combinations
from pathlib import Path
from typing import Iterable, Iterator

from harness.eval.stats import mean_ci, spearman
from harness.io import read_jsonl
from harness.layout import BASE_TARGET, eval_dir, judge_dir, ratings_db_path

DIMENSIONS = ("correctness", "relevance", "helpfulness")
SCORES = (1, 2, 3, 4, 5)
PAIR_CHOICES = ("a", "b", "tie")
# Items are served in blocks: every rater gets block 1 first (in their own random order inside the block), then
# block 2, ... . Fully independent random orders would leave a small team with almost no answer rated twice,
# and agreement (alpha) needs overlap; shuffling inside a block still controls order effects per rater.
BLOCK_SIZE = 30
MAX_RATER_LEN = 64
MAX_COMMENT_LEN = 4000

# Anchored descriptions per level: the rating scale itself, shown next to every score button and in CSV templates.
RUBRIC = {
    "correctness": {
        "name": {"en": "Correctness", "de": "Korrektheit"},
        "question": {"en": "Is what the answer says true?", "de": "Stimmt, was die Antwort sagt?"},
        1: {
            "en": "Wrong: the main claim is false or would mislead.",
            "de": "Falsch: die Kernaussage ist falsch oder führt in die Irre.",
        },
        2: {
            "en": "Mostly wrong: some correct bits, but a substantial error.",
            "de": "Überwiegend falsch: einzelne richtige Teile, aber ein wesentlicher Fehler.",
        },
        3: {
            "en": "Partly correct: the core is right, with notable errors or gaps.",
            "de": "Teilweise richtig: der Kern stimmt, mit deutlichen Fehlern oder Lücken.",
        },
        4: {"en": "Mostly correct: only minor inaccuracies.", "de": "Überwiegend richtig: nur kleine Ungenauigkeiten."},
        5: {
            "en": "Fully correct: accurate and consistent with the reference.",
            "de": "Vollständig richtig: zutreffend und im Einklang mit der Referenz.",
        },
    },
    "relevance": {
        "name": {"en": "Relevance", "de": "Relevanz"},
        "question": {"en": "Does it answer what was asked?", "de": "Beantwortet sie die gestellte Frage?"},
        1: {"en": "Off-topic: does not address the question.", "de": "Themenfremd: geht nicht auf die Frage ein."},
        2: {
            "en": "Tangential: touches the topic but misses the question.",
            "de": "Am Rand: streift das Thema, verfehlt aber die Frage.",
        },
        3: {
            "en": "Partly relevant: answers it, with much beside the point.",
            "de": "Teilweise relevant: beantwortet sie, mit viel Nebensächlichem.",
        },
        4: {
            "en": "Relevant: answers the question with little digression.",
            "de": "Relevant: beantwortet die Frage mit wenig Abschweifung.",
        },
        5: {
            "en": "Fully on point: exactly what was asked, nothing extra.",
            "de": "Genau auf den Punkt: genau das Gefragte, nichts Überflüssiges.",
        },
    },
    "helpfulness": {
        "name": {"en": "Helpfulness", "de": "Nützlichkeit"},
        "question": {"en": "Could the asker act on it?", "de": "Kann die fragende Person damit etwas anfangen?"},
        1: {"en": "Useless: nothing the asker could act on.", "de": "Nutzlos: nichts, womit man arbeiten könnte."},
        2: {
            "en": "Slightly helpful: a hint, but vague or hard to apply.",
            "de": "Wenig hilfreich: ein Hinweis, aber vage oder schwer umzusetzen.",
        },
        3: {
            "en": "Somewhat helpful: usable, but missing steps or specifics.",
            "de": "Einigermaßen hilfreich: brauchbar, aber es fehlen Schritte oder Details.",
        },
        4: {"en": "Helpful: clear and actionable, small gaps.", "de": "Hilfreich: klar und umsetzbar, kleine Lücken."},
        5: {
            "en": "Very helpful: clear, specific, actionable, as an expert would answer.",
            "de": "Sehr hilfreich: klar, konkret, umsetzbar, wie von einer Fachperson.",
        },
    },
}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS answers (
    uid TEXT PRIMARY KEY,               -- opaque id shown to raters: hash of target, item id and answer text
    target TEXT NOT NULL,
    item_id TEXT NOT NULL,
    lang TEXT, topic TEXT, difficulty TEXT,
    question TEXT NOT NULL,
    reference TEXT,
    answer TEXT NOT NULL,
    source TEXT NOT NULL,               -- 'eval' (eval/<target>/generations.jsonl) or 'lm-eval' (musicprod_human)
    queued_seq INTEGER NOT NULL,        -- the latest queueing of (target, item_id) is the current answer
    queued_at TEXT NOT NULL,
    blind_id TEXT                       -- random id the rater sees (added by _migrate to stores made before it)
);
CREATE INDEX IF NOT EXISTS answers_target_item ON answers (target, item_id);
CREATE TABLE IF NOT EXISTS ratings (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    rater TEXT NOT NULL,
    uid TEXT NOT NULL REFERENCES answers (uid),
    correctness INTEGER NOT NULL CHECK (correctness BETWEEN 1 AND 5),
    relevance INTEGER NOT NULL CHECK (relevance BETWEEN 1 AND 5),
    helpfulness INTEGER NOT NULL CHECK (helpfulness BETWEEN 1 AND 5),
    comment TEXT NOT NULL DEFAULT '',
    source TEXT NOT NULL,               -- 'web' or 'csv'
    created_at TEXT NOT NULL,
    UNIQUE (rater, uid)                 -- rating an answer again (after "back") replaces the earlier rating
);
CREATE TABLE IF NOT EXISTS pairwise (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    rater TEXT NOT NULL,
    uid_a TEXT NOT NULL REFERENCES answers (uid),   -- shown on the left (A)
    uid_b TEXT NOT NULL REFERENCES answers (uid),   -- shown on the right (B)
    pair_key TEXT NOT NULL,             -- the two uids sorted: one judgement per rater and pair, whatever the sides
    choice TEXT NOT NULL CHECK (choice IN ('a', 'b', 'tie')),
    comment TEXT NOT NULL DEFAULT '',
    source TEXT NOT NULL,
    created_at TEXT NOT NULL,
    UNIQUE (rater, pair_key)
);
CREATE TABLE IF NOT EXISTS raters (
    name TEXT PRIMARY KEY,
    token_sha256 TEXT NOT NULL UNIQUE,  -- the token itself is printed once, in the rater's link
    created_at TEXT NOT NULL
);
"""

SINGLE_CSV_FIELDS = (
    "rater",
    "uid",
    "target",
    "item_id",
    "correctness",
    "relevance",
    "helpfulness",
    "comment",
    "created_at",
    "source",
)
PAIRWISE_CSV_FIELDS = (
    "rater",
    "item_id",
    "uid_a",
    "uid_b",
    "target_a",
    "target_b",
    "choice",
    "comment",
    "created_at",
    "source",
)
# A blind sheet for raters who work in a spreadsheet: no target column and no uid (computable from the answer
# text, see the module docstring); import maps answer_id (the blind id) back to the answer.
TEMPLATE_CSV_FIELDS = (
    "rater",
    "answer_id",
    "question",
    "reference",
    "answer",
    "correctness",
    "relevance",
    "helpfulness",
    "comment",
)
# Spreadsheets run a cell starting with one of these as a formula (CSV injection); see _defuse.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


class RatingError(ValueError):
    """Bad rating input; the message names the file, line and field (or the request field)."""


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _hash(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode("utf-8")).hexdigest()


def answer_uid(target: str, item_id: str, answer: str) -> str:
    return _hash("answer", target, item_id, answer)[:16]


def pair_key(uid1: str, uid2: str) -> str:
    return "|".join(sorted((uid1, uid2)))


def pair_id(blind1: str, blind2: str) -> str:
    """Opaque id of an unordered pair of answers (what the pairwise UI sees), from their random blind ids."""
    return _hash("pair", pair_key(blind1, blind2))[:16]


def _new_blind_id() -> str:
    return secrets.token_hex(8)


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def check_text(value: str, field: str, where: str = "") -> str:
    """SQLite (and any UTF-8 file) cannot store a lone surrogate such as JSON's "\\ud800": reject it by name."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:
        raise RatingError(
            f"{where}field {field!r} is not valid Unicode (lone surrogate at character {e.start})"
        ) from None
    return value


def check_rater(rater) -> str:
    name = (rater or "").strip() if isinstance(rater, str) else ""
    if not name or len(name) > MAX_RATER_LEN or any(ord(c) < 32 for c in name):
        raise RatingError(f"rater name must be 1-{MAX_RATER_LEN} printable characters, got {rater!r}")
    return check_text(name, "rater")


def check_score(value, field: str, where: str = "") -> int:
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int) or value not in SCORES:
        raise RatingError(f"{where}field {field!r} must be an integer 1-5, got {value!r}")
    return value


def check_comment(comment, where: str = "") -> str:
    comment = "" if comment is None else comment
    if not isinstance(comment, str) or len(comment) > MAX_COMMENT_LEN:
        raise RatingError(f"{where}field 'comment' must be text of at most {MAX_COMMENT_LEN} characters")
    return check_text(comment, "comment", where).strip()


def rater_order(keys: Iterable[str], rater: str, block_size: int = BLOCK_SIZE) -> list[str]:
    """Per-rater random order, seeded by the rater's name: blocks in one shared order, shuffled inside each block."""
    shared = sorted(keys, key=lambda k: _hash("block", k))
    order = []
    for start in range(0, len(shared), block_size):
        block = shared[start : start + block_size]
        order += sorted(block, key=lambda k: _hash("rater", rater, k))
    return order


def a_is_first(rater: str, pid: str) -> bool:
    """Which answer of a pair is shown as A for this rater: a fair coin seeded by rater and pair."""
    return int(_hash("side", rater, pid)[:8], 16) % 2 == 0


# ---------------------------------------------------------------------------------------------------------- store


class RatingStore:
    """ratings.sqlite of one experiment. Each method opens its own connection (thread- and process-safe)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.connect() as conn:
            conn.execute("PRAGMA journal_mode=WAL")  # persistent: stored in the database file
            conn.executescript(_SCHEMA)
        self._migrate()

    def _migrate(self) -> None:
        """Give a store made before blind ids one per answer (ratings keep their uid: nothing else changes).
        Only then is there a write: opening a current store takes no write lock."""
        with self.connect() as conn:
            if (
                "blind_id" in {row["name"] for row in conn.execute("PRAGMA table_info(answers)")}
                and not conn.execute("SELECT 1 FROM answers WHERE blind_id IS NULL LIMIT 1").fetchone()
            ):
                conn.execute("CREATE UNIQUE INDEX IF NOT EXISTS answers_blind ON answers (blind_id)")
                return
        with self.transaction() as conn:
            if "blind_id" not in {row["name"] for row in conn.execute("PRAGMA table_info(answers)")}:
                conn.execute("ALTER TABLE answers ADD COLUMN blind_id TEXT")
            missing = [row["uid"] for row in conn.execute("SELECT uid FROM answers WHERE blind_id IS NULL")]
            conn.executemany("UPDATE answers SET blind_id = ? WHERE uid = ?", [(_new_blind_id(), u) for u in missing])
            conn.execute("CREATE UNIQUE INDEX IF NOT EXISTS answers_blind ON answers (blind_id)")

    @classmethod
    def for_experiment(cls, experiment_dir: str | Path) -> "RatingStore":
        return cls(ratings_db_path(experiment_dir))

    @contextmanager
    def connect(self) -> Iterator[sqlite3.Connection]:
        conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        try:
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA synchronous=FULL")  # WAL + FULL: a committed transaction survives a power cut
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute("PRAGMA busy_timeout=30000")
            yield conn
        finally:
            conn.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction: BEGIN IMMEDIATE takes the write lock up front (no upgrade deadlocks)."""
        with self.connect() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    # -- queue
    def add_answers(self, rows: Iterable[dict], source: str) -> int:
        """Queue answers (dicts with target, item_id, question, answer, ...); returns how many were new.

        Re-queueing an existing answer marks it current again (e.g. after an eval re-run restored old text).
        """
        rows = list(rows)
        if not rows:
            return 0
        stamp = now_iso()
        with self.transaction() as conn:
            seq = conn.execute("SELECT COALESCE(MAX(queued_seq), 0) + 1 FROM answers").fetchone()[0]
            before = conn.execute("SELECT COUNT(*) FROM answers").fetchone()[0]
            conn.executemany(
                "INSERT INTO answers (uid, target, item_id, lang, topic, difficulty, question, reference, answer,"
                " source, queued_seq, queued_at, blind_id) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)"
                " ON CONFLICT (uid) DO UPDATE SET queued_seq = excluded.queued_seq, queued_at = excluded.queued_at",
                [
                    (
                        answer_uid(r["target"], r["item_id"], r["answer"]),
                        r["target"],
                        r["item_id"],
                        r.get("lang"),
                        r.get("topic"),
                        r.get("difficulty"),
                        r["question"],
                        r.get("reference"),
                        r["answer"],
                        source,
                        seq,
                        stamp,
                        _new_blind_id(),
                    )
                    for r in rows
                ],
            )
            after = conn.execute("SELECT COUNT(*) FROM answers").fetchone()[0]
        return after - before

    def current_answers(self) -> list[dict]:
        """The answer to rate per (target, item): the most recently queued one."""
        with self.connect() as conn:
            rows = conn.execute(
                "SELECT a.* FROM answers a JOIN (SELECT target, item_id, MAX(queued_seq) AS seq FROM answers"
                " GROUP BY target, item_id) m ON a.target = m.target AND a.item_id = m.item_id"
                " AND a.queued_seq = m.seq ORDER BY a.item_id, a.target"
            ).fetchall()
        return [dict(r) for r in rows]

    def answer(self, uid: str) -> dict | None:
        with self.connect() as conn:
            row = conn.execute("SELECT * FROM answers WHERE uid = ?", (uid,)).fetchone()
        return dict(row) if row else None

    def answer_by_blind_id(self, blind_id: str) -> dict | None:
        with self.connect() as conn:
            row = conn.execute("SELECT * FROM answers WHERE blind_id = ?", (blind_id,)).fetchone()
        return dict(row) if row else None

    def resolve_uid(self, target: str, item_id: str) -> str | None:
        with self.connect() as conn:
            row = conn.execute(
                "SELECT uid FROM answers WHERE target = ? AND item_id = ? ORDER BY queued_seq DESC LIMIT 1",
                (target, item_id),
            ).fetchone()
        return row["uid"] if row else None

    # -- ratings
    def save_rating(
        self, rater: str, uid: str, scores: dict, comment: str = "", source: str = "web", created_at: str | None = None
    ) -> int:
        """Store (or replace) one rater's scores for one answer in its own committed transaction; returns row id."""
        rater = check_rater(rater)
        values = [check_score(scores.get(d), d) for d in DIMENSIONS]
        comment = check_comment(comment)
        with self.transaction() as conn:
            return self._upsert_rating(conn, rater, uid, values, comment, source, created_at or now_iso())

    @staticmethod
    def _upsert_rating(conn, rater, uid, values, comment, source, created_at) -> int:
        if conn.execute("SELECT 1 FROM answers WHERE uid = ?", (uid,)).fetchone() is None:
            raise RatingError(f"unknown answer uid {uid!r}")
        return conn.execute(
            "INSERT INTO ratings (rater, uid, correctness, relevance, helpfulness, comment, source, created_at)"
            " VALUES (?,?,?,?,?,?,?,?) ON CONFLICT (rater, uid) DO UPDATE SET correctness = excluded.correctness,"
            " relevance = excluded.relevance, helpfulness = excluded.helpfulness, comment = excluded.comment,"
            " source = excluded.source, created_at = excluded.created_at RETURNING id",
            (rater, uid, *values, comment, source, created_at),
        ).fetchone()[0]

    def save_pairwise(
        self,
        rater: str,
        uid_a: str,
        uid_b: str,
        choice: str,
        comment: str = "",
        source: str = "web",
        created_at: str | None = None,
    ) -> int:
        rater = check_rater(rater)
        comment = check_comment(comment)
        if choice not in PAIR_CHOICES:
            raise RatingError(f"field 'choice' must be one of {PAIR_CHOICES}, got {choice!r}")
        with self.transaction() as conn:
            return self._upsert_pairwise(conn, rater, uid_a, uid_b, choice, comment, source, created_at or now_iso())

    @staticmethod
    def _upsert_pairwise(conn, rater, uid_a, uid_b, choice, comment, source, created_at) -> int:
        for uid in (uid_a, uid_b):
            if conn.execute("SELECT 1 FROM answers WHERE uid = ?", (uid,)).fetchone() is None:
                raise RatingError(f"unknown answer uid {uid!r}")
        if uid_a == uid_b:
            raise RatingError("a pair needs two different answers")
        return conn.execute(
            "INSERT INTO pairwise (rater, uid_a, uid_b, pair_key, choice, comment, source, created_at)"
            " VALUES (?,?,?,?,?,?,?,?) ON CONFLICT (rater, pair_key) DO UPDATE SET uid_a = excluded.uid_a,"
            " uid_b = excluded.uid_b, choice = excluded.choice, comment = excluded.comment, source = excluded.source,"
            " created_at = excluded.created_at RETURNING id",
            (rater, uid_a, uid_b, pair_key(uid_a, uid_b), choice, comment, source, created_at),
        ).fetchone()[0]

    def ratings(self, rater: str | None = None) -> list[dict]:
        sql = (
            "SELECT r.*, a.target, a.item_id, a.blind_id FROM ratings r JOIN answers a ON a.uid = r.uid"
            + (" WHERE r.rater = ?" if rater is not None else "")
            + " ORDER BY r.id"
        )
        with self.connect() as conn:
            return [dict(r) for r in conn.execute(sql, (rater,) if rater is not None else ())]

    def pairwise(self, rater: str | None = None) -> list[dict]:
        sql = (
            "SELECT p.*, a.item_id, a.target AS target_a, b.target AS target_b FROM pairwise p"
            " JOIN answers a ON a.uid = p.uid_a JOIN answers b ON b.uid = p.uid_b"
            + (" WHERE p.rater = ?" if rater is not None else "")
            + " ORDER BY p.id"
        )
        with self.connect() as conn:
            return [dict(r) for r in conn.execute(sql, (rater,) if rater is not None else ())]

    # -- raters
    def issue_token(self, name: str, reissue: bool = False) -> str | None:
        """A new random token for `name` (its link); None when the rater has one and `reissue` is false."""
        name = check_rater(name)
        token = secrets.token_urlsafe(24)
        with self.transaction() as conn:
            if not reissue and conn.execute("SELECT 1 FROM raters WHERE name = ?", (name,)).fetchone():
                return None
            conn.execute(
                "INSERT INTO raters (name, token_sha256, created_at) VALUES (?,?,?) ON CONFLICT (name)"
                " DO UPDATE SET token_sha256 = excluded.token_sha256, created_at = excluded.created_at",
                (name, _token_hash(token), now_iso()),
            )
        return token

    def rater_for_token(self, token: str | None) -> str | None:
        if not token:
            return None
        with self.connect() as conn:
            row = conn.execute("SELECT name FROM raters WHERE token_sha256 = ?", (_token_hash(token),)).fetchone()
        return row["name"] if row else None

    def raters(self) -> list[str]:
        with self.connect() as conn:
            return [row["name"] for row in conn.execute("SELECT name FROM raters ORDER BY name")]

    # -- what a rater sees: blind ids only (the order and the pair ids are computed from them, never from uids)
    def single_queue(self, rater: str) -> list[str]:
        return rater_order([a["blind_id"] for a in self.current_answers()], rater)

    def pairs(self) -> dict[str, tuple[str, str]]:
        """pair id -> (uid, uid): every two current answers to the same item from different targets.

        Answers with identical text are left out (a certain tie; no rater time spent on it). Each pair is ordered
        by blind id, not by target name, so which side a rater sees as A tells nothing about the system.
        """
        by_item: dict[str, list[dict]] = defaultdict(list)
        for a in self.current_answers():
            by_item[a["item_id"]].append(a)
        out = {}
        for answers in by_item.values():
            for x, y in combinations(sorted(answers, key=lambda a: a["blind_id"]), 2):
                if x["answer"].strip() != y["answer"].strip():
                    out[pair_id(x["blind_id"], y["blind_id"])] = (x["uid"], y["uid"])
        return out

    def pair_queue(self, rater: str) -> list[str]:
        return rater_order(list(self.pairs()), rater)

    def pair_sides(self, rater: str, pid: str) -> tuple[str, str]:
        """(uid shown as A, uid shown as B) for this rater."""
        uid1, uid2 = self.pairs()[pid]
        return (uid1, uid2) if a_is_first(rater, pid) else (uid2, uid1)


# ---------------------------------------------------------------------------------------------- queue from eval


def read_generations(path: Path, target: str) -> list[dict]:
    """eval/<target>/generations.jsonl -> queue rows; errors name file, line and field."""
    return [
        {
            "target": target,
            "item_id": rec["id"],
            "question": rec["question"],
            "answer": rec["answer"],
            "reference": rec.get("reference"),
            "lang": rec.get("lang"),
            "topic": rec.get("topic"),
            "difficulty": rec.get("difficulty"),
        }
        for rec in read_jsonl(path, ("id", "question", "answer"), RatingError)
    ]


def generation_files(experiment_dir: str | Path) -> dict[str, Path]:
    """{target: eval/<target>/generations.jsonl}. Hidden folders are harness.io.atomic_dir's work in progress
    (.<target>.tmp-*) or leftovers of a crash (.<target>.old-*), not targets."""
    root = eval_dir(experiment_dir)
    if not root.is_dir():
        return {}
    return {p.parent.name: p for p in sorted(root.glob("*/generations.jsonl")) if not p.parent.name.startswith(".")}


def sync_queue(experiment_dir: str | Path, store: RatingStore | None = None) -> dict:
    """Queue every target's eval generations; returns {target: answers in file} (new ones are added)."""
    store = store or RatingStore.for_experiment(experiment_dir)
    counts = {}
    for target, path in generation_files(experiment_dir).items():
        rows = read_generations(path, target)
        store.add_answers(rows, source="eval")
        counts[target] = len(rows)
    return counts


# ------------------------------------------------------------------------------------------------------ CSV


def _sniff_reader(text: str) -> csv.DictReader:
    """Spreadsheets write ',' or ';' (German Excel) or tabs; read whichever the header uses."""
    header = text.split("\n", 1)[0]
    delimiter = max(",;\t", key=header.count)
    return csv.DictReader(io.StringIO(text), delimiter=delimiter)


def export_csv(store: RatingStore, path: str | Path, kind: str = "single") -> int:
    """Write all single ratings (kind='single') or pairwise judgements (kind='pairwise'); returns rows written."""
    fields, rows = (SINGLE_CSV_FIELDS, store.ratings()) if kind == "single" else (PAIRWISE_CSV_FIELDS, store.pairwise())
    return _write_csv(path, fields, rows)


def export_template(store: RatingStore, path: str | Path, rater: str) -> int:
    """A blind sheet for one rater (their order, no target names) to fill in a spreadsheet and import."""
    rater = check_rater(rater)
    answers = {a["blind_id"]: a for a in store.current_answers()}
    done = {r["blind_id"]: r for r in store.ratings(rater)}
    rows = []
    for blind_id in store.single_queue(rater):
        a, r = answers[blind_id], done.get(blind_id, {})
        rows.append(
            {
                "rater": rater,
                "answer_id": blind_id,
                "question": a["question"],
                "reference": a["reference"] or "",
                "answer": a["answer"],
                **{d: r.get(d, "") for d in DIMENSIONS},
                "comment": r.get("comment", ""),
            }
        )
    return _write_csv(path, TEMPLATE_CSV_FIELDS, rows)


def _defuse(value):
    """A leading ' makes a spreadsheet show the cell as text instead of running it as a formula. Cells that
    already start with ' get one more, so _restore gives back exactly the original."""
    if isinstance(value, str) and value.startswith((*_FORMULA_START, "'")):
        return "'" + value
    return value


def _restore(value: str) -> str:
    return value[1:] if value[:1] == "'" and value[1:2] and value[1:2] in (*_FORMULA_START, "'") else value


def _write_csv(path, fields, rows) -> int:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
            writer.writeheader()
            writer.writerows({k: _defuse(v) for k, v in row.items()} for row in rows)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return len(rows)


def import_csv(store: RatingStore, path: str | Path) -> dict:
    """Import single ratings or pairwise judgements (told apart by a 'choice' column) in one transaction.

    Rows identify the answer by `uid`, or by `target` + `item_id` (the current answer). Rows whose three scores
    are all empty are skipped (an unfinished template). Any bad row aborts the whole import, naming the line.
    """
    path = Path(path)
    text = path.read_text(encoding="utf-8-sig")  # utf-8-sig: spreadsheets often prepend a BOM
    reader = _sniff_reader(text)
    header = [h.strip() for h in (reader.fieldnames or [])]
    reader.fieldnames = header
    if "rater" not in header:
        raise RatingError(f"{path}: header has no 'rater' column (got {header})")
    pairwise = "choice" in header
    if not pairwise and not set(DIMENSIONS) <= set(header):
        raise RatingError(f"{path}: header needs columns {list(DIMENSIONS)} or 'choice' (got {header})")
    imported = skipped = 0
    with store.transaction() as conn:
        for row in reader:
            where = f"{path}:{reader.line_num}: "
            row = {k: _restore((v or "").strip()) for k, v in row.items() if k is not None}
            if pairwise:
                imported += _import_pair_row(store, conn, row, where)
                continue
            if not any(row.get(d) for d in DIMENSIONS):
                skipped += 1
                continue
            try:
                rater = check_rater(row.get("rater"))
                values = [check_score(row.get(d), d, where) for d in DIMENSIONS]
                comment = check_comment(row.get("comment"), where)
            except RatingError as e:
                raise RatingError(str(e) if str(e).startswith(str(path)) else where + str(e)) from None
            uid = _row_uid(store, row, "", where)
            store._upsert_rating(conn, rater, uid, values, comment, "csv", row.get("created_at") or now_iso())
            imported += 1
    return {"kind": "pairwise" if pairwise else "single", "imported": imported, "skipped_empty": skipped}


def _row_uid(store: RatingStore, row: dict, suffix: str, where: str) -> str:
    blind_id = row.get(f"answer_id{suffix}")
    if blind_id:
        answer = store.answer_by_blind_id(blind_id)
        if answer is None:
            raise RatingError(f"{where}field 'answer_id{suffix}': no answer {blind_id!r} in the rating queue")
        return answer["uid"]
    uid = row.get(f"uid{suffix}")
    if uid:
        if store.answer(uid) is None:
            raise RatingError(f"{where}field 'uid{suffix}': no answer {uid!r} in the rating queue")
        return uid
    target, item_id = row.get(f"target{suffix}"), row.get("item_id")
    if not target or not item_id:
        raise RatingError(f"{where}needs 'answer_id{suffix}', 'uid{suffix}' or both 'target{suffix}' and 'item_id'")
    uid = store.resolve_uid(target, item_id)
    if uid is None:
        raise RatingError(
            f"{where}no queued answer for target {target!r}, item {item_id!r} "
            f"(run the eval stage or `musicprod rate` once so the queue is filled)"
        )
    return uid


def _import_pair_row(store, conn, row, where) -> int:
    if not row.get("choice"):
        return 0
    try:
        rater = check_rater(row.get("rater"))
        comment = check_comment(row.get("comment"), where)
    except RatingError as e:
        raise RatingError(where + str(e)) from None
    choice = row["choice"].lower()
    if choice not in PAIR_CHOICES:
        raise RatingError(f"{where}field 'choice' must be one of {PAIR_CHOICES}, got {row['choice']!r}")
    uid_a, uid_b = _row_uid(store, row, "_a", where), _row_uid(store, row, "_b", where)
    store._upsert_pairwise(conn, rater, uid_a, uid_b, choice, comment, "csv", row.get("created_at") or now_iso())
    return 1


# ------------------------------------------------------------------------------------------------ statistics


def krippendorff_alpha(matrix: list[list[float]]) -> float | None:
    """Ordinal alpha over a raters x units matrix (nan = not rated); None when it is undefined.

    Undefined: no unit rated by two raters, or no variation at all (expected disagreement 0).
    """
    import krippendorff
    import numpy as np

    data = np.asarray(matrix, dtype=float)
    if data.ndim != 2 or data.shape[0] < 2 or not ((~np.isnan(data)).sum(axis=0) >= 2).any():
        return None
    with np.errstate(invalid="ignore", divide="ignore"):
        value = krippendorff.alpha(reliability_data=data, level_of_measurement="ordinal", value_domain=list(SCORES))
    return None if value is None or math.isnan(value) else float(value)


def read_judge_scores(experiment_dir: str | Path, judge: str | None = None) -> tuple[str | None, dict]:
    """(judge name, {(target, item_id): {dim: score}}) from judge/<judge>/scores.jsonl; the newest when not named."""
    if judge is None:
        root = Path(experiment_dir) / "judge"
        files = sorted(root.glob("*/scores.jsonl"), key=lambda p: p.stat().st_mtime) if root.is_dir() else []
        if not files:
            return None, {}
        path, judge = files[-1], files[-1].parent.name
    else:
        path = judge_dir(experiment_dir, judge) / "scores.jsonl"
        if not path.exists():
            return judge, {}
    scores = {
        (rec["target"], rec["id"]): {d: rec.get(d) for d in DIMENSIONS if isinstance(rec.get(d), (int, float))}
        for rec in read_jsonl(path, ("target", "id"), RatingError)
    }
    return judge, scores


def _orient(t1: str, t2: str) -> bool:
    """True when (t1, t2) is already the reported orientation: base on the b side, else alphabetical."""
    if t1 == BASE_TARGET or t2 == BASE_TARGET:
        return t2 == BASE_TARGET
    return t1 <= t2


def pairwise_counts(rows: list[dict]) -> list[dict]:
    tally: dict[tuple[str, str], dict] = {}
    for r in rows:
        ta, tb, choice = r["target_a"], r["target_b"], r["choice"]
        if not _orient(ta, tb):
            ta, tb = tb, ta
            choice = {"a": "b", "b": "a", "tie": "tie"}[choice]
        t = tally.setdefault((ta, tb), {"a": ta, "b": tb, "wins": 0, "ties": 0, "losses": 0, "n": 0})
        t[{"a": "wins", "b": "losses", "tie": "ties"}[choice]] += 1
        t["n"] += 1
    return [tally[k] for k in sorted(tally)]


def summarize(experiment_dir: str | Path, judge: str | None = None, resamples: int = 10_000) -> dict | None:
    """The human-rating statistics (per target and criterion, agreement); None when nobody has rated anything yet."""
    db = ratings_db_path(experiment_dir)
    if not db.exists():
        return None
    store = RatingStore(db)
    single, pairs = store.ratings(), store.pairwise()
    if not single and not pairs:
        return None
    current = store.current_answers()
    current_uids = {a["uid"]: a for a in current}
    live = [r for r in single if r["uid"] in current_uids]
    by_uid: dict[str, list[dict]] = defaultdict(list)
    for r in live:
        by_uid[r["uid"]].append(r)

    targets: dict[str, dict] = {}
    for target in sorted({a["target"] for a in current}):
        uids = [u for u, a in current_uids.items() if a["target"] == target and u in by_uid]
        if uids:
            targets[target] = {
                d: mean_ci([sum(r[d] for r in by_uid[u]) / len(by_uid[u]) for u in uids], resamples=resamples)
                for d in DIMENSIONS
            }

    raters = sorted({r["rater"] for r in live})
    units = sorted(by_uid)
    alpha = {}
    for d in DIMENSIONS:
        cell = {(r["rater"], r["uid"]): r[d] for r in live}
        alpha[d] = krippendorff_alpha([[cell.get((rt, u), math.nan) for u in units] for rt in raters])

    judge_name, judge_scores = read_judge_scores(experiment_dir, judge)
    judge_spearman = None
    if judge_scores:
        judge_spearman = {}
        for d in DIMENSIONS:
            xs, ys = [], []
            for u, rs in by_uid.items():
                a = current_uids[u]
                j = judge_scores.get((a["target"], a["item_id"]), {}).get(d)
                if j is not None:
                    xs.append(sum(r[d] for r in rs) / len(rs))
                    ys.append(float(j))
            judge_spearman[d] = spearman(xs, ys)

    n_ratings = len(live)
    coverage = {
        "items": len(current),
        "rated_items": len(by_uid),
        "ratings": n_ratings,
        "raters": len(raters),
        "ratings_per_item": round(n_ratings / len(by_uid), 3) if by_uid else 0.0,
        "items_rated_twice": sum(1 for rs in by_uid.values() if len(rs) >= 2),
        "questions": len({a["item_id"] for a in current}),
        "stale_ratings": len(single) - n_ratings,  # ratings of answers since replaced by a newer eval run
        "pairwise_judgements": len(pairs),
        "by_target": {
            t: {
                "items": sum(1 for a in current if a["target"] == t),
                "rated_items": sum(1 for u in by_uid if current_uids[u]["target"] == t),
                "ratings": sum(len(rs) for u, rs in by_uid.items() if current_uids[u]["target"] == t),
            }
            for t in sorted({a["target"] for a in current})
        },
    }
    live_pairs = [p for p in pairs if p["uid_a"] in current_uids and p["uid_b"] in current_uids]
    return {
        "targets": targets,
        "alpha": alpha,
        "coverage": coverage,
        "judge": judge_name,
        "judge_spearman": judge_spearman,
        "pairwise": pairwise_counts(live_pairs),
        "created_at": now_iso(),
    }


def human_scores(db_path: str | Path, uids: Iterable[str]) -> dict:
    """For the lm-eval task: {dim: mean over rated answers or None, 'rated': k, 'n': n} for these answers."""
    uids = list(dict.fromkeys(uids))
    out = {d: None for d in DIMENSIONS} | {"rated": 0, "n": len(uids)}
    if not Path(db_path).exists() or not uids:
        return out
    store = RatingStore(db_path)
    wanted = set(uids)
    by_uid: dict[str, list[dict]] = defaultdict(list)
    for r in store.ratings():
        if r["uid"] in wanted:
            by_uid[r["uid"]].append(r)
    out["rated"] = len(by_uid)
    if by_uid:
        for d in DIMENSIONS:
            per_answer = [sum(r[d] for r in rs) / len(rs) for rs in by_uid.values()]
            out[d] = sum(per_answer) / len(per_answer)
    return out


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def format_summary(summary: dict | None) -> str:
    """A plain-text table of summarize() for the terminal."""
    if summary is None:
        return "no ratings yet"
    lines = []
    cov = summary["coverage"]
    lines.append(
        f"coverage: {cov['rated_items']} of {cov['items']} answers rated, {cov['ratings']} ratings by "
        f"{cov['raters']} raters ({cov['ratings_per_item']} per rated answer, "
        f"{cov['items_rated_twice']} rated at least twice)"
    )
    lines.append(f"{'target':16s}" + "".join(f"{d:>26s}" for d in DIMENSIONS))
    for target, dims in summary["targets"].items():
        cells = []
        for d in DIMENSIONS:
            s = dims[d]
            ci = f"[{s['ci_low']:.2f}, {s['ci_high']:.2f}]" if s["ci_low"] is not None else "[n/a]"
            cells.append(f"{s['mean']:.2f} {ci} n={s['n']}".rjust(26))
        lines.append(f"{target:16s}" + "".join(cells))
    lines.append("Krippendorff alpha (ordinal): " + ", ".join(f"{d} {_fmt(a)}" for d, a in summary["alpha"].items()))
    if summary["judge_spearman"]:
        lines.append(
            f"judge {summary['judge']} vs human Spearman: "
            + ", ".join(f"{d} {_fmt(s['rho'])} (n={s['n']})" for d, s in summary["judge_spearman"].items())
        )
    for p in summary["pairwise"]:
        lines.append(f"pairwise {p['a']} vs {p['b']}: {p['wins']} wins, {p['ties']} ties, {p['losses']} losses")
    return "\n".join(lines)
