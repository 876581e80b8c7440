"""LLM judge: settings, reliability logic, G-Eval's probability-weighted score on a tiny random model, a full
`musicprod judge` run on a fixture experiment, and the lm-eval task."""

import json
import math

import pytest
import torch

from harness.config import ConfigError
from harness.judge.config import judge_name, load_judge_settings, settings_from_env
from harness.judge.inputs import JudgeError, common_items, read_generations, sanity_cases
from harness.judge.reliability import combine_orders, is_reliable, pairwise_summary, sanity_pass_rate, self_consistency
from harness.judge.run import run_judge
from harness.rubric import DIMENSIONS

BENCH_QA = json.loads(open("benchmarks/musicprod/data/qa.json", encoding="utf-8").read())


# -- settings ---------------------------------------------------------------------------------------------------
def test_settings_from_yaml_overrides_and_env(tmp_path):
    path = tmp_path / "judge.yaml"
    path.write_text("judge:\n  backend: openai\n  model: qwen2.5:7b\n  max_items: 5\n")
    s = load_judge_settings(path, ["max_items=7", "logprobs=false"])
    assert (s.backend, s.model, s.max_items, s.logprobs) == ("openai", "qwen2.5:7b", 7, False)
    assert judge_name(s) == "qwen2.5--7b"
    env = {"MUSICPROD_JUDGE_CONFIG": str(path), "MUSICPROD_JUDGE_REPEATS": "3", "MUSICPROD_JUDGE_MAX_ITEMS": "9"}
    s = settings_from_env({"max_items": 2}, environ=env)
    assert (s.backend, s.repeats, s.max_items) == ("openai", 3, 2)  # metadata beats env beats the YAML


@pytest.mark.parametrize(
    "override, message",
    [
        (["backend=vllm"], "backend"),
        (["max_itemz=3"], "max_itemz"),
        (["max_items=many"], "max_items"),
        (["top_logprobs=50"], "top_logprobs"),
    ],
)
def test_bad_settings_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        load_judge_settings(None, override)


# -- reliability logic -----------------------------------------------------------------------------------------
def test_reliability_bar_is_ninety_percent_of_sanity_cases():
    rows = [{"prefers_reference": True}] * 9 + [{"prefers_reference": False}]
    assert sanity_pass_rate(rows) == pytest.approx(0.9)
    assert is_reliable(sanity_pass_rate(rows), 0.9)
    rows[0] = {"prefers_reference": False}
    assert not is_reliable(sanity_pass_rate(rows), 0.9)
    assert sanity_pass_rate([]) is None and not is_reliable(None, 0.9)


def test_pairwise_both_orders_and_position_consistency():
    assert combine_orders("A", "B") == ("win", True)  # a wins in both presentations
    assert combine_orders("B", "A") == ("loss", True)
    assert combine_orders("A", "A") == ("tie", False)  # always the first position: position bias
    assert combine_orders("tie", "tie") == ("tie", True)
    rows = [
        {"a": "s", "b": "base", "verdict": v, "consistent": c}
        for v, c in [("win", True), ("tie", False), ("loss", True), ("tie", False)]
    ]
    (summary,) = pairwise_summary(rows)
    assert summary == {"a": "s", "b": "base", "wins": 1, "ties": 2, "losses": 1, "n": 4, "position_consistency": 0.5}


def test_self_consistency_counts_same_level():
    first = {"correctness": 2.2, "relevance": 4.0, "helpfulness": 1.0}
    second = {"correctness": 1.9, "relevance": 3.4, "helpfulness": None}
    out = self_consistency([(first, second)])
    assert out["n"] == 2 and out["agreement"] == pytest.approx(0.5)
    assert out["mean_abs_diff"] == pytest.approx((0.3 + 0.6) / 2)


def test_sanity_cases_pair_reference_with_off_topic_answer():
    cases = sanity_cases(BENCH_QA, 12)
    by_id = {q["id"]: q for q in BENCH_QA}
    assert len(cases) == 12 and len({c["id"] for c in cases}) == 12
    for c in cases:
        assert by_id[c["off_topic_id"]]["topic"] != by_id[c["id"]]["topic"]
        assert c["off_topic_answer"] == by_id[c["off_topic_id"]]["reference"] != c["reference"]


def test_generations_errors_name_file_and_line(tmp_path):
    path = tmp_path / "generations.jsonl"
    path.write_text(json.dumps({"id": "x", "question": "q", "reference": "r", "answer": "a"}) + "\n{oops\n")
    with pytest.raises(JudgeError, match=r"generations.jsonl:2"):
        read_generations(path)
    path.write_text(json.dumps({"id": "x", "question": "q", "reference": "r"}) + "\n")
    with pytest.raises(JudgeError, match=r":1: field 'answer'"):
        read_generations(path)


def test_common_items_keeps_shared_ids_in_order():
    gens = {"base": [{"id": i} for i in "abcd"], "s": [{"id": i} for i in "dcb"]}
    assert common_items(gens, 0) == ["b", "c", "d"]
    assert common_items(gens, 2) == ["b", "c"]


# -- the local HF judge ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_judge(tiny_model_dir, tmp_path_factory):
    from harness.judge.rubrics import make_judge, rubric_metrics

    settings = load_judge_settings(None, [f"model={tiny_model_dir}", "reason_tokens=4"])
    judge = make_judge(settings, tmp_path_factory.mktemp("deepeval"))
    return judge, rubric_metrics(judge)


def _expected_weighted_score(model_dir, prompt: str) -> float:
    """Recompute G-Eval's score from the raw model: p(1..5) after the forced `{"score": `, renormalised,
    tokens under 1 % dropped (deepeval's rule), probability-weighted mean."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    text = tok.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=False)
    ids = tok(text, add_special_tokens=False)["input_ids"] + tok('{"score": ', add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0, -1]
    digits = [tok.convert_tokens_to_ids(str(k)) for k in range(1, 6)]
    p = torch.softmax(logits[digits].double(), dim=0).tolist()
    kept = [(k, pk) for k, pk in zip(range(1, 6), p) if pk >= 0.01]
    return sum(k * pk for k, pk in kept) / sum(pk for _, pk in kept)


def test_probability_weighted_score_on_tiny_random_model(tiny_judge, tiny_model_dir):
    from harness.judge.rubrics import score_answer

    judge, metrics = tiny_judge
    item = BENCH_QA[0]
    one = {"correctness": metrics["correctness"]}
    first = score_answer(one, judge, item["question"], "Use a high-pass filter.", item["reference"], item["key_facts"])
    prompt = judge.last_prompt
    assert "Rubric:" in prompt and "1: Wrong" in prompt and item["reference"] in prompt  # reference-guided, anchored
    second = score_answer(one, judge, item["question"], "Use a high-pass filter.", item["reference"], item["key_facts"])
    assert first["correctness"] == second["correctness"]  # deterministic
    assert first["weighted"]["correctness"] is True
    assert 1.0 <= first["correctness"] <= 5.0 and not float(first["correctness"]).is_integer()
    assert first["correctness"] == pytest.approx(_expected_weighted_score(tiny_model_dir, prompt), abs=1e-4)


def _fixture_experiment(root, items):
    for target, suffix in (("base", "the base model rambles"), ("hf-lora", "")):
        d = root / "eval" / target
        d.mkdir(parents=True)
        with open(d / "generations.jsonl", "w", encoding="utf-8") as f:
            for i, q in enumerate(items):
                answer = q["reference"] if target == "hf-lora" else suffix
                f.write(
                    json.dumps(
                        {
                            **{k: q[k] for k in ("id", "lang", "topic", "question", "reference", "key_facts")},
                            "answer": answer,
                            "metrics": {"key_fact_recall": [0.0, 0.5, 1.0][i % 3]},
                        }
                    )
                    + "\n"
                )
    return root


def test_run_judge_writes_contract_and_cli(tmp_path, tiny_model_dir, capsys):
    from harness.cli import main

    exp = _fixture_experiment(tmp_path / "exp", BENCH_QA[:3])
    code = main(
        [
            "judge",
            str(exp),
            f"model={tiny_model_dir}",
            "name=tiny",
            "max_items=3",
            "sanity_items=3",
            "repeats=2",
            "reason_tokens=2",
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    d = exp / "judge" / "tiny"
    summary = json.loads((d / "summary.json").read_text())
    assert ("UNRELIABLE" in out) is (not summary["reliable"])  # the printed verdict is the stored one
    rel = summary["reliability"]
    assert summary["backend"] == "hf" and rel["sanity_n"] == 3 and rel["spearman_key_fact"]["n"] == 6
    assert (
        summary["reliable"] is (rel["sanity_pass_rate"] >= 0.9) and summary["use_for_champion"] is summary["reliable"]
    )
    assert rel["self_consistency_detail"]["n"] == 6
    assert set(summary["targets"]) == {"base", "hf-lora"}
    for dims in summary["targets"].values():
        assert set(dims) == set(DIMENSIONS) and all(1 <= v["mean"] <= 5 and v["n"] == 3 for v in dims.values())
    (pair,) = summary["pairwise"]
    assert (pair["a"], pair["b"], pair["n"]) == ("hf-lora", "base", 3)
    assert pair["wins"] + pair["ties"] + pair["losses"] == 3 and 0 <= pair["position_consistency"] <= 1
    rows = [json.loads(line) for line in (d / "scores.jsonl").read_text().splitlines()]
    assert len(rows) == 6 and {r["target"] for r in rows} == {"base", "hf-lora"}
    assert all(isinstance(r[dim], float) for r in rows for dim in DIMENSIONS)
    assert len((d / "sanity.jsonl").read_text().splitlines()) == 3
    assert summary["deepeval_cache_dir"] == str(exp / "judge" / ".deepeval")


def test_run_judge_without_generations_says_what_to_run(tmp_path):
    with pytest.raises(JudgeError, match="musicprod eval"):
        run_judge(tmp_path, load_judge_settings(None, []))


def test_lm_eval_task_scores_with_the_judge(tiny_model_dir, tmp_path):
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    lm = HFLM(pretrained=model, tokenizer=AutoTokenizer.from_pretrained(tiny_model_dir), batch_size=2)
    tm = TaskManager(
        include_path="benchmarks",
        include_defaults=False,
        metadata={
            "judge": {"model": str(tiny_model_dir), "sanity_items": 2, "reason_tokens": 2},
            "experiment_dir": str(tmp_path),
        },
    )
    res = simple_evaluate(
        model=lm,
        tasks=["musicprod_judge"],
        task_manager=tm,
        limit=2,
        apply_chat_template=True,
        gen_kwargs={"max_gen_toks": 8},
        bootstrap_iters=0,
    )
    metrics = res["results"]["musicprod_judge"]
    for d in DIMENSIONS:
        assert 1.0 <= metrics[f"judge_{d},none"] <= 5.0
    rate = metrics["judge_sanity_pass_rate,none"]
    assert rate in (0.0, 0.5, 1.0) and not math.isnan(rate)
