"""Quality gates: does fine-tuning help, does QLoRA hold up, is the held-out clean?

Each gate reads the paired bootstrap tests of the latest experiment's eval/summary.json (95 % CIs over the same
held-out items). A gate that cannot be computed is skipped with its reason, never passed silently.
"""
from pathlib import Path

import pytest

from harness.layout import BASE_TARGET

REPO = Path(__file__).resolve().parent.parent
QLORA_MARGIN = {"key_fact_recall": 0.05, "acc": 0.05}  # QLoRA may trail LoRA by at most 5 points (CI lower bound)
LORA_QLORA_PAIRS = [("hf-qlora", "hf-lora"), ("unsloth-qlora", "unsloth-lora")]


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


def _champion_system(gate_data) -> str:
    summary = _summary(gate_data)
    systems = [t for t in summary["targets"] if t != BASE_TARGET]
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
    p = _paired(gate_data["summary"], system, BASE_TARGET, task, metric)
    if p is None or p.get("ci_low") is None:
        pytest.skip(f"{gate_data['note']}: no paired {task}.{metric} result for {system} vs base")
    print(f"{gate_data['note']}: {task}.{metric} {_fmt(p)}")
    assert p["ci_low"] > 0, f"{system} does not beat the base model on {task}.{metric}: {_fmt(p)} ({gate_data['note']})"


@pytest.mark.parametrize("qlora,lora", LORA_QLORA_PAIRS, ids=[q for q, _ in LORA_QLORA_PAIRS])
@pytest.mark.parametrize("task,metric", [("qa", "key_fact_recall"), ("mc", "acc")])
def test_qlora_not_worse_than_lora(gate_data, qlora, lora, task, metric):
    summary = _summary(gate_data)
    missing = [s for s in (qlora, lora) if s not in summary["targets"]]
    if missing:
        reasons = "; ".join(f"{s}: {summary.get('skipped', {}).get(s, 'not in this experiment')}" for s in missing)
        pytest.skip(f"{gate_data['note']}: {reasons}")
    p = _paired(summary, qlora, lora, task, metric)
    if p is None or p.get("ci_low") is None:
        pytest.skip(f"{gate_data['note']}: no paired {task}.{metric} result for {qlora} vs {lora}")
    print(f"{gate_data['note']}: {task}.{metric} {_fmt(p)}")
    assert p["ci_low"] > -QLORA_MARGIN[metric], (
        f"{qlora} may be worse than {lora} by more than {QLORA_MARGIN[metric]} on {task}.{metric}: {_fmt(p)}")


def test_heldout_not_contaminated_by_training():
    from harness.data import load_training_set
    from harness.datacheck import contamination, load_mc, load_qa
    data = REPO / "benchmarks" / "musicprod" / "data"
    heldout = [("qa", r) for r in load_qa(data / "qa.json")] + [("mc", r) for r in load_mc(data / "mc.json")]
    leaks = contamination(load_training_set(REPO / "data" / "music_production_dataset.json"), heldout, semantic=True)
    assert not leaks, "held-out items overlap the training set:\n" + "\n".join(leaks[:20])
