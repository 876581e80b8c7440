"""Statistics of the ratings: means with bootstrap CIs, Krippendorff's alpha, agreement with a judge, pairwise counts."""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from typing import Iterable

from harness.eval.stats import mean_ci, spearman
from harness.io import now_iso, read_jsonl
from harness.layout import BASE_TARGET, judge_dir, ratings_db_path
from harness.ratings.store import SCORES, RatingError, RatingStore
from harness.rubric import DIMENSIONS


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
