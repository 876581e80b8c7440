"""Quality gates: does fine-tuning help, does QLoRA hold up, is the held-out clean?

Each gate reads the paired tests of the latest experiment's eval/summary.json (the held-out; 95 % CIs over the
same items). A gate that cannot be computed is skipped with its reason, never passed silently; a comparison
that should exist (both targets evaluated) and does not is a failure.
"""

from pathlib import Path

import pytest

from harness.eval.stats import verdict
from harness.layout import BASE_TARGET, is_system_target
from harness.registry import QLORA_PAIRS

REPO = Path(__file__).resolve().parent.parent
# QLoRA may trail LoRA by at most 5 points (CI lower bound) ...
QLORA_MARGIN = {"key_fact_recall": 0.05, "acc": 0.05}
# ... and, relative to what LoRA gained over the base model, by at most half of that gain: on a metric near zero
# an absolute 5 points would pass a QLoRA that learned nothing.
QLORA_RELATIVE_MARGIN = 0.5


def _summary(gate_data) -> dict:
    if gate_data["summary"] is None:
        pytest.skip(gate_data["note"])
    return gate_data["summary"]


def _paired(summary: dict, a: str, b: str, task: str, metric: str) -> dict | None:
    """Delta a - b, flipping the sign when the summary stored b - a."""
    for p in summary["paired"]:
        if (p["a"], p["b"], p["task"], p["metric"]) == (a, b, task, metric):
            return p
        if (p["a"], p["b"], p["task"], p["metric"]) == (b, a, task, metric) and p.get("ci_low") is not None:
            return {**p, "a": a, "b": b, "delta": -p["delta"], "ci_low": -p["ci_high"], "ci_high": -p["ci_low"]}
    return None


def _required_pair(summary: dict, a: str, b: str, task: str, metric: str, note: str) -> dict:
    p = _paired(summary, a, b, task, metric)
    if p is None or p.get("ci_low") is None:
        pytest.fail(f"{note}: {a} and {b} were both evaluated but the summary has no paired {task}.{metric} row")
    return p


def _champion_system(gate_data) -> str:
    summary = _summary(gate_data)
    systems = [t for t in summary["targets"] if is_system_target(t)]
    if BASE_TARGET not in summary["targets"]:
        pytest.skip(f"{gate_data['note']}: the base model was not evaluated (eval.include_base=false)")
    if not systems:
        pytest.skip(f"{gate_data['note']}: no trained system was evaluated")
    champion = (gate_data["champion"] or {}).get("system")
    if champion in systems:
        return champion
    # No champion yet, or the champion rule fell back to the base model: gate the best system on key facts.
    return max(systems, key=lambda s: summary["targets"][s]["metrics"]["qa"]["key_fact_recall"]["mean"])


def _fmt(p: dict) -> str:
    return f"{p['a']} - {p['b']}: {p['delta']:+.3f}, 95 % CI [{p['ci_low']:+.3f}, {p['ci_high']:+.3f}], p={p['p_value']:.3g}, n={p['n']}"


@pytest.mark.parametrize("task,metric", [("qa", "key_fact_recall"), ("mc", "acc")])
def test_champion_beats_base(gate_data, task, metric):
    system = _champion_system(gate_data)
    p = _required_pair(gate_data["summary"], system, BASE_TARGET, task, metric, gate_data["note"])
    print(f"{gate_data['note']}: {task}.{metric} {_fmt(p)}")
    assert verdict(p) == 1, (
        f"{system} does not beat the base model on {task}.{metric} (needs 95 % CI above 0 and "
        f"sign-flip p < 0.05): {_fmt(p)} ({gate_data['note']})"
    )


@pytest.mark.parametrize("qlora,lora", QLORA_PAIRS, ids=[q for q, _ in QLORA_PAIRS])
@pytest.mark.parametrize("task,metric", [("qa", "key_fact_recall"), ("mc", "acc")])
def test_qlora_not_worse_than_lora(gate_data, qlora, lora, task, metric):
    summary = _summary(gate_data)
    missing = [s for s in (qlora, lora) if s not in summary["targets"]]
    if missing:
        reasons = "; ".join(f"{s}: {summary.get('skipped', {}).get(s, 'not in this experiment')}" for s in missing)
        pytest.skip(f"{gate_data['note']}: {reasons}")
    gain = _paired(summary, lora, BASE_TARGET, task, metric)
    if gain is None or gain.get("ci_low") is None or verdict(gain) != 1:
        pytest.skip(
            f"{gate_data['note']}: {lora} does not beat the base model on {task}.{metric}, so there is no "
            f"gain for {qlora} to keep" + (f" ({_fmt(gain)})" if gain and gain.get("ci_low") is not None else "")
        )
    p = _required_pair(summary, qlora, lora, task, metric, gate_data["note"])
    margin = min(QLORA_MARGIN[metric], QLORA_RELATIVE_MARGIN * gain["delta"])
    print(
        f"{gate_data['note']}: {task}.{metric} {_fmt(p)}; {lora} gain over base {gain['delta']:+.3f}, "
        f"allowed shortfall {margin:.3f}"
    )
    assert p["ci_low"] > -margin, (
        f"{qlora} may be worse than {lora} by more than {margin:.3f} on {task}.{metric} (min of {QLORA_MARGIN[metric]} "
        f"and half of {lora}'s gain {gain['delta']:+.3f}): {_fmt(p)}"
    )


def test_heldout_not_contaminated_by_training(gate_data):
    """The experiment's own training text (seed split and augmentations, from its run records) against the
    question files its evaluation read (MC options included)."""
    from harness.data.check import as_items, contamination, load_mc, load_qa
    from harness.eval.run import training_rows

    if gate_data["experiment"] is None:
        pytest.skip(gate_data["note"])
    summary = gate_data["summary"] or {}
    files = summary.get("question_files") or [
        str(REPO / "benchmarks/musicprod/data/qa.json"),
        str(REPO / "benchmarks/musicprod/data/mc.json"),
    ]
    qa, mc = load_qa(Path(files[0])), load_mc(Path(files[1]))
    leaks = contamination(training_rows(gate_data["experiment"]), as_items(qa, mc), semantic=True)
    assert not leaks, "held-out items overlap the training set:\n" + "\n".join(leaks[:20])
