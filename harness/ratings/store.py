"""The rating store: scales and rubric, input checks, rater order, and the SQLite store (RatingStore)."""

from __future__ import annotations

import hashlib
import secrets
import sqlite3
from collections import defaultdict
from contextlib import contextmanager
from itertools import combinations
from pathlib import Path
from typing import Iterable, Iterator

from harness.io import now_iso
from harness.layout import ratings_db_path
from harness.rubric import DIMENSIONS

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
