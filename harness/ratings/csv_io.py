"""CSV round trips: ratings export, blind sheets for spreadsheet raters, import with file:line:field errors."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from harness.io import atomic_open, now_iso
from harness.ratings.store import (
    _FORMULA_START,
    PAIR_CHOICES,
    PAIRWISE_CSV_FIELDS,
    SINGLE_CSV_FIELDS,
    TEMPLATE_CSV_FIELDS,
    RatingError,
    RatingStore,
    check_comment,
    check_rater,
    check_score,
)
from harness.rubric import DIMENSIONS


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
    with atomic_open(path, newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows({k: _defuse(v) for k, v in row.items()} for row in rows)
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
