"""Whether a judge can be trusted, measured: sanity pass rate against the bar, self-consistency, position
consistency of pairwise verdicts, and agreement with people."""

from __future__ import annotations

from pathlib import Path

from harness.rubric import DIMENSIONS

BAR_TEXT = "prefers the reference over an off-topic answer in >= {:.0f} % of sanity cases"


def mean_score(scores: dict) -> float | None:
    values = [scores.get(d) for d in DIMENSIONS]
    return None if any(v is None for v in values) else sum(values) / len(values)


def sanity_pass_rate(results: list[dict]) -> float | None:
    """Share of sanity cases where the reference scored strictly higher (mean of the three dimensions); a case the
    judge could not score counts as a failure."""
    if not results:
        return None
    return sum(1 for r in results if r["prefers_reference"]) / len(results)


def is_reliable(pass_rate: float | None, bar: float) -> bool:
    return pass_rate is not None and pass_rate >= bar


def self_consistency(pairs: list[tuple[dict, dict]]) -> dict:
    """Share of repeated (item, dimension) judgements that land on the same 1..5 level, and the mean |difference|."""
    same, diffs = [], []
    for first, second in pairs:
        for d in DIMENSIONS:
            a, b = first.get(d), second.get(d)
            if a is None or b is None:
                continue
            same.append(round(a) == round(b))
            diffs.append(abs(a - b))
    if not same:
        return {"agreement": None, "mean_abs_diff": None, "n": 0}
    return {"agreement": sum(same) / len(same), "mean_abs_diff": sum(diffs) / len(diffs), "n": len(same)}


def combine_orders(first: str, second_swapped: str) -> tuple[str, bool]:
    """Verdicts from (a, b) and from (b, a) -> (final verdict for a: win/tie/loss, consistent?).

    An inconsistent pair (the verdict follows the position, not the answer) counts as a tie."""
    to_a = {"A": "win", "B": "loss", "tie": "tie"}
    swapped_to_a = {"A": "loss", "B": "win", "tie": "tie"}
    v1, v2 = to_a[first], swapped_to_a[second_swapped]
    return (v1, True) if v1 == v2 else ("tie", False)


def pairwise_summary(rows: list[dict]) -> list[dict]:
    out = {}
    for r in rows:
        t = out.setdefault(
            (r["a"], r["b"]), {"a": r["a"], "b": r["b"], "wins": 0, "ties": 0, "losses": 0, "consistent": 0, "n": 0}
        )
        t[{"win": "wins", "tie": "ties", "loss": "losses"}[r["verdict"]]] += 1
        t["consistent"] += r["consistent"]
        t["n"] += 1
    for t in out.values():
        t["position_consistency"] = t.pop("consistent") / t["n"] if t["n"] else None
    return list(out.values())


def human_spearman(experiment_dir: Path, name: str) -> tuple[dict | None, str | None]:
    """Judge vs human ratings (harness.ratings reads judge/<name>/scores.jsonl); None when nobody rated yet."""
    try:
        from harness import ratings
    except ImportError as e:  # ratings land with their own issue; the judge works without them
        return None, f"harness.ratings unavailable: {e}"
    try:
        summary = ratings.summarize(experiment_dir, judge=name)
    except Exception as e:  # a broken ratings db must not lose the judge run
        return None, f"ratings summary failed: {type(e).__name__}: {e}"
    if summary is None:
        return None, "no human ratings yet (musicprod rate)"
    return summary.get("judge_spearman"), None
