"""Evaluation: per-item metrics on hand-made answers, the bootstrap code on known distributions, and the
lm-eval tasks end to end on a tiny random model."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from harness.config import DecodingSettings, EvalSettings
from harness.eval.metrics import UnicodeWordTokenizer, bleu, chrf, key_fact_recall, qa_scores, rouge_l, semscore
from harness.eval.stats import mean_ci, paired_delta

REPO = Path(__file__).resolve().parent.parent

EN = {
    "lang": "en",
    "reference": "A compressor with a 4:1 ratio turns every 4 dB above the threshold into 1 dB. "
    "Use a slow attack to keep the transients of the drums.",
    "key_facts": [
        {"fact": "ratio", "any_of": ["4:1", "four to one"]},
        {"fact": "attack", "any_of": [r"slow(er)? attack", r"attack.{0,20}slow"]},
    ],
}
EN_PARAPHRASE = (
    "With four to one, each 4 dB over the threshold comes out as just 1 dB; set the attack slower "
    "so the drum transients get through."
)
EN_WRONG = "Reverb adds a sense of space; try a plate on the vocal and pre-delay of 30 ms."
DE = {
    "lang": "de",
    "reference": "Ein Hochpassfilter entfernt tiefe Frequenzen unterhalb der Grenzfrequenz, "
    "zum Beispiel Trittschall unter 80 Hz bei Gesangsaufnahmen.",
    "key_facts": [
        {"fact": "Hochpass", "any_of": ["hochpass", "high-pass", "low-cut"]},
        {"fact": "tiefe Frequenzen", "any_of": ["tiefe", "bass", "tieffrequen"]},
    ],
}
DE_PARAPHRASE = (
    "Der Hochpass schneidet tiefe Frequenzen unter der Grenzfrequenz weg, etwa Rumpeln unter 80 Hz beim Gesang."
)
DE_WRONG = "Ein Kompressor verringert die Dynamik eines Signals oberhalb des Schwellwerts."


@pytest.mark.parametrize(
    "item,paraphrase,wrong", [(EN, EN_PARAPHRASE, EN_WRONG), (DE, DE_PARAPHRASE, DE_WRONG)], ids=["en", "de"]
)
def test_metrics_rank_correct_over_paraphrase_over_wrong(item, paraphrase, wrong):
    correct = qa_scores(item["reference"], item)
    para = qa_scores(paraphrase, item)
    bad = qa_scores(wrong, item)
    assert correct["rougeL"] == pytest.approx(1.0) and correct["bleu"] == pytest.approx(100.0)
    assert correct["chrf"] == pytest.approx(100.0) and correct["semscore"] == pytest.approx(1.0, abs=1e-4)
    for metric in ("rougeL", "bleu", "chrf", "semscore"):
        assert correct[metric] > para[metric] > bad[metric], metric
    assert correct["key_fact_recall"] == para["key_fact_recall"] == 1.0
    assert bad["key_fact_recall"] == 0.0
    assert para["semscore"] > 0.6 > bad["semscore"]


def test_rouge_keeps_german_words_whole():
    # rouge_score's default tokenizer would split "Grenzfrequenz für" into ascii fragments ("f", "r").
    assert UnicodeWordTokenizer().tokenize("Für die Grenzfrequenz") == ["für", "die", "grenzfrequenz"]
    assert rouge_l("für über", "fur uber", lang="de") == 0.0
    assert rouge_l("Für die Höhen", "für die höhen", lang="de") == pytest.approx(1.0)


def test_key_fact_recall_counts_each_fact_once():
    facts = [
        {"fact": "a", "any_of": ["sidechain", "side-chain"]},
        {"fact": "b", "any_of": ["kick"]},
        {"fact": "c", "any_of": ["bass"]},
    ]
    assert key_fact_recall(facts, "Side-chain the BASS; sidechain it hard.") == pytest.approx(2 / 3)


def test_sentence_metrics_match_sacrebleu_scale():
    assert 0 < bleu("the kick is loud", "the kick drum is loud") < 100
    assert 0 < chrf("Kompressor", "Kompressoren") < 100
    assert semscore("", "anything") == 0.0


def test_bootstrap_ci_covers_true_mean_at_nominal_rate():
    rng = np.random.default_rng(7)
    p, n, reps = 0.3, 300, 120
    hits, widths = 0, []
    for i in range(reps):
        r = mean_ci(rng.binomial(1, p, n).astype(float), resamples=2000, seed=i)
        hits += r["ci_low"] <= p <= r["ci_high"]
        widths.append(r["ci_high"] - r["ci_low"])
    assert 0.88 <= hits / reps <= 0.99
    expected = 2 * 1.96 * np.sqrt(p * (1 - p) / n)
    assert np.mean(widths) == pytest.approx(expected, rel=0.1)


def test_paired_delta_detects_shift_and_its_verdict_needs_both_tests():
    rng = np.random.default_rng(3)
    base = rng.uniform(0, 1, 300)
    better = np.clip(base + 0.08 + rng.normal(0, 0.1, 300), 0, 1)
    d = paired_delta(better, base, resamples=4000)
    assert d["ci_low"] > 0 and d["p_value"] < 0.01 and d["significant"]
    assert d["delta"] == pytest.approx(np.mean(better - base))
    for i in range(20):
        a, b = rng.uniform(0, 1, 80), rng.uniform(0, 1, 80)
        r = paired_delta(a, b, resamples=2000, seed=i)
        excludes_zero = r["ci_low"] > 0 or r["ci_high"] < 0
        assert r["significant"] == (excludes_zero and r["p_value"] < 0.05)


def test_sparse_one_fact_gains_are_not_significant():
    """The shape the issue found: 4 of 301 items better by one of three facts, none worse. The percentile
    bootstrap alone calls it better; the exact sign-flip test gives 2 * 0.5^4 = 0.125."""
    from harness.eval.stats import verdict

    a = np.zeros(301)
    a[:4] = 1 / 3
    r = paired_delta(a, np.zeros(301), resamples=4000)
    assert r["ci_low"] >= 0  # the bootstrap CI does not see the problem ...
    assert r["p_value"] == pytest.approx(0.125) and not r["significant"] and verdict(r) == 0  # ... the test does


def test_paired_verdict_holds_its_level_at_the_key_fact_shape():
    """Under the null, at the real data's shape (301 items, a few differing by +-1/3 of the facts), the
    verdict is significant in <= 5 % of experiments (plus Monte Carlo error); the bootstrap alone is not."""
    rng = np.random.default_rng(11)
    trials, verdicts, bootstrap_only = 300, 0, 0
    for i in range(trials):
        steps = rng.choice([-1 / 3, 0.0, 1 / 3], size=301, p=[0.02, 0.96, 0.02])
        r = paired_delta(steps, np.zeros(301), resamples=1000, seed=i)
        verdicts += r["significant"]
        bootstrap_only += r["ci_low"] > 0 or r["ci_high"] < 0
    assert verdicts / trials <= 0.05 + 2.5 * np.sqrt(0.05 * 0.95 / trials)
    assert bootstrap_only > verdicts  # what the old rule would have called significant


def test_paired_delta_refuses_unpaired_lengths():
    with pytest.raises(ValueError, match="same items"):
        paired_delta([1.0, 2.0], [1.0])


def test_constant_scores_give_degenerate_ci():
    assert mean_ci([0.0] * 10)["ci_low"] == 0.0
    assert mean_ci([1.0])["ci_low"] is None


# ---------- lm-eval end to end on a tiny random model ----------


@pytest.fixture(scope="module")
def tiny_experiment(tmp_path_factory, tiny_model_dir):
    """An experiment folder with one trained (random) adapter and one skipped system."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    exp = tmp_path_factory.mktemp("exp") / "tiny"
    adapter = exp / "hf-lora" / "adapter"
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    torch.manual_seed(1)
    peft_model = get_peft_model(
        model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    )
    peft_model.save_pretrained(adapter)
    base = {"name": "tiny", "path": str(tiny_model_dir)}
    (exp / "hf-lora" / "run.json").write_text(
        json.dumps({"system": "hf-lora", "status": "ok", "adapter_path": str(adapter), "base_model": base})
    )
    (exp / "unsloth-lora").mkdir()
    (exp / "unsloth-lora" / "run.json").write_text(
        json.dumps({"system": "unsloth-lora", "status": "skipped", "reason": "needs CUDA", "base_model": base})
    )
    return exp


def test_eval_writes_items_summary_and_paired_tests(tiny_experiment):
    from harness.eval.run import run_eval

    settings = EvalSettings(
        batch_size=3, decoding=DecodingSettings(max_new_tokens=8), limit=3, dtype="float32", bootstrap_resamples=500
    )
    summary = run_eval(tiny_experiment, settings)
    assert set(summary["targets"]) == {"base", "hf-lora", "lookup"}
    assert summary["n_items"] == {"qa": 3, "mc": 3} and summary["limit"] == 3
    assert "needs CUDA" in summary["skipped"]["unsloth-lora"]
    qa = summary["targets"]["hf-lora"]["metrics"]["qa"]
    assert 0 <= qa["rougeL"]["mean"] <= 1 and qa["rougeL"]["n"] == 3
    assert set(summary["targets"]["base"]["by_lang"]["qa"]) <= {"en", "de"}
    pairs = {(p["a"], p["b"], p["task"], p["metric"]) for p in summary["paired"]}
    assert ("hf-lora", "base", "qa", "key_fact_recall") in pairs and ("hf-lora", "base", "mc", "acc") in pairs

    rows = [json.loads(line) for line in (tiny_experiment / "eval" / "hf-lora" / "generations.jsonl").open()]
    assert len(rows) == 3 and all(
        set(r["metrics"]) == {"rougeL", "bleu", "chrf", "key_fact_recall", "semscore"} for r in rows
    )
    qa_items = json.loads((REPO / "benchmarks/musicprod/data/qa.json").read_text())[:3]
    assert [r["id"] for r in rows] == [q["id"] for q in qa_items]
    # Recompute one item's metrics from its saved answer: the file holds what was scored.
    assert qa_scores(rows[0]["answer"], qa_items[0])["chrf"] == pytest.approx(rows[0]["metrics"]["chrf"])
    results = json.loads((tiny_experiment / "eval" / "hf-lora" / "results.json").read_text())
    assert "musicprod_qa" in results["results"] and "acc,none" in results["results"]["musicprod_mc"]
    assert results["musicprod"]["merged"] is True
    mc_items = json.loads((REPO / "benchmarks/musicprod/data/mc.json").read_text())[:3]
    longest = [float(max(range(4), key=lambda i: (len(m["choices"][i]), -i)) == m["answer"]) for m in mc_items]
    assert summary["mc_baselines"]["pick_longest"]["mean"] == pytest.approx(sum(longest) / 3)
    assert summary["mc_baselines"]["chance"]["mean"] == 0.25


def test_length_baselines_pick_the_first_of_tied_options():
    from harness.eval.run import length_baselines

    doc = {"choices": ["bb", "a", "cc", "ddd"], "answer": 0}
    assert length_baselines(doc) == {"pick_longest": 0.0, "pick_shortest": 0.0, "chance": 0.25}
    assert length_baselines({**doc, "answer": 3})["pick_longest"] == 1.0
    assert length_baselines({"choices": ["x", "yy", "x", "zz"], "answer": 0})["pick_shortest"] == 1.0


def test_lm_eval_cli_finds_tasks_from_any_directory(tmp_path, tiny_model_dir):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "DEEPEVAL_TELEMETRY_OPT_OUT": "YES"}
    out = tmp_path / "out"
    proc = subprocess.run(
        [
            str(Path(sys.executable).parent / "lm_eval"),
            "--model",
            "hf",
            "--model_args",
            f"pretrained={tiny_model_dir},dtype=float32",
            "--device",
            "cpu",
            "--tasks",
            "musicprod",
            "--include_path",
            str(REPO / "benchmarks"),
            "--apply_chat_template",
            "--limit",
            "2",
            "--gen_kwargs",
            "max_gen_toks=4",
            "--output_path",
            str(out),
            "--log_samples",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(next(out.rglob("results_*.json")).read_text())["results"]
    assert {"musicprod_qa", "musicprod_mc"} <= set(results)
    assert 0.0 <= results["musicprod_mc"]["acc,none"] <= 1.0
    assert "key_fact_recall,none" in results["musicprod_qa"]


def test_greedy_generate_matches_hf_generate_and_drops_finished_rows(tiny_model_dir):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from harness.eval.generation import greedy_generate

    tok = AutoTokenizer.from_pretrained(tiny_model_dir, padding_side="left")
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    enc = tok(
        ["How loud should a master be?", "EQ", "Why does my kick drum disappear in the mix on phones?"],
        return_tensors="pt",
        padding=True,
    )
    pad = tok.pad_token_id
    free = model.generate(**enc, do_sample=False, max_new_tokens=12, eos_token_id=None, pad_token_id=pad)
    width = enc["input_ids"].shape[1]
    stop = int(free[1, width])  # row 1 stops at once; the others (random weights: they repeat one token) run on
    assert not (free[[0, 2], width:] == stop).any(), "fixture: rows 0 and 2 must not produce row 1's token"
    batch_sizes = []
    hook = model.register_forward_pre_hook(
        lambda m, a, kw: batch_sizes.append(kw["input_ids"].shape[0]), with_kwargs=True
    )
    ours = greedy_generate(model, enc["input_ids"], enc["attention_mask"], 12, {stop}, fill_id=pad)
    hook.remove()
    reference = model.generate(**enc, do_sample=False, max_new_tokens=12, eos_token_id=stop, pad_token_id=pad)
    assert ours.shape == (3, width + 12)
    assert torch.equal(ours[:, : reference.shape[1]], reference)
    assert (ours[:, reference.shape[1] :] == pad).all()
    assert ours[1, width] == stop and (ours[1, width + 1 :] == pad).all()
    assert torch.equal(ours[[0, 2], width:], free[[0, 2], width:])  # unaffected by the row that left
    assert batch_sizes[0] == 3 and min(batch_sizes) < 3  # the finished row left the batch


def _records_with_base(tmp_path, base_model):
    exp = tmp_path / "exp"
    (exp / "hf-lora").mkdir(parents=True)
    (exp / "hf-lora" / "run.json").write_text(
        json.dumps({"status": "skipped", "reason": "test", "base_model": base_model})
    )
    return exp


def test_eval_prepares_registry_base_here_when_recorded_folder_is_elsewhere(tmp_path, monkeypatch):
    """Run records from the GPU machine name its cache folder; here the same registry model, same GGUF, is used."""
    from harness.eval import run as evaluate
    from harness.models import ResolvedModel

    local = tmp_path / "prepared"
    local.mkdir()
    monkeypatch.setattr(evaluate, "prepare", lambda name: ResolvedModel(name, str(local), "abc", {}))
    exp = _records_with_base(
        tmp_path, {"name": "smollm2-135m-instruct", "path": "/nowhere/smollm2", "source_sha256": "abc"}
    )
    base_path, targets, skipped = evaluate.experiment_targets(exp, include_base=True)
    assert base_path == str(local) and list(targets) == ["base"] and "hf-lora" in skipped

    exp = _records_with_base(
        tmp_path / "other", {"name": "smollm2-135m-instruct", "path": "/nowhere/smollm2", "source_sha256": "def"}
    )
    with pytest.raises(evaluate.EvalError, match="sha256"):
        evaluate.experiment_targets(exp, include_base=True)


def test_eval_names_missing_unregistered_base(tmp_path):
    from harness.eval import run as evaluate

    exp = _records_with_base(tmp_path, {"name": "my/private-model", "path": "/nowhere/private"})
    with pytest.raises(evaluate.EvalError, match="my/private-model"):
        evaluate.experiment_targets(exp, include_base=True)


def _settings(**kw) -> EvalSettings:
    return EvalSettings(
        batch_size=3,
        decoding=DecodingSettings(max_new_tokens=8),
        limit=3,
        dtype="float32",
        bootstrap_resamples=300,
        **kw,
    )


def _jsonl(path):
    return [json.loads(line) for line in path.open()]


def test_the_adapter_changes_what_is_scored(tiny_experiment):
    """An evaluation that scored the base model under an adapter's name would pass every other test: the
    adapter's MC log-likelihoods (and so its scores' inputs) must differ from the base model's."""
    from harness.eval.run import run_eval

    run_eval(tiny_experiment, _settings())
    lls = {
        t: [s["filtered_resps"] for s in _jsonl(tiny_experiment / "eval" / t / "samples_musicprod_mc.jsonl")]
        for t in ("base", "hf-lora")
    }
    assert lls["base"] != lls["hf-lora"]
    assert len(lls["base"]) == len(lls["hf-lora"]) == 3


def test_base_evaluation_is_reused_until_its_key_changes(tiny_experiment, tmp_path):
    import shutil

    from harness.eval.run import run_eval

    other = tmp_path / "other"
    shutil.copytree(tiny_experiment / "hf-lora", other / "hf-lora")
    first = run_eval(tiny_experiment, _settings(), only=["base"])
    again = run_eval(other, _settings(), only=["base"])  # another experiment on the same base: no re-run
    assert again["targets"]["base"]["reused_from"]
    assert _jsonl(other / "eval" / "base" / "generations.jsonl") == _jsonl(
        tiny_experiment / "eval" / "base" / "generations.jsonl"
    )
    assert first["targets"]["base"]["metrics"] == again["targets"]["base"]["metrics"]
    changed = run_eval(
        other,
        EvalSettings(
            batch_size=3, decoding=DecodingSettings(max_new_tokens=5), limit=3, dtype="float32", bootstrap_resamples=300
        ),
        only=["base"],
    )
    assert not changed["targets"]["base"]["reused_from"]  # a decoding change is a new key: evaluated again


def test_lookup_answers_with_the_nearest_training_response(tiny_experiment):
    from harness.eval.run import run_eval, training_rows

    summary = run_eval(tiny_experiment, _settings(), only=["lookup"])
    assert summary["targets"]["lookup"]["reference"] is True
    responses = {r["response"] for r in training_rows(tiny_experiment)}
    rows = _jsonl(tiny_experiment / "eval" / "lookup" / "generations.jsonl")
    assert len(rows) == 3 and all(r["answer"] in responses for r in rows)
    assert not any(p["a"] == "lookup" or p["b"] == "lookup" for p in summary["paired"])  # a reference, not a system


def test_coverage_slices_split_recall_by_what_training_states():
    from harness.eval.coverage import compute_coverage, recall_over

    train = [
        {"id": "t1", "instruction": "How do I set a compressor ratio?", "response": "Use 4:1 on vocals."},
        {
            "id": "t2",
            "instruction": "What is sidechain compression?",
            "response": "Sidechain ducks the bass under the kick.",
        },
    ]
    qa = [
        {
            "id": "q",
            "question": "Which ratio should my vocal compressor use?",
            "key_facts": [
                {"fact": "4:1", "any_of": ["4:1"]},
                {"fact": "duck", "any_of": ["duck"]},
                {"fact": "never said", "any_of": ["tape saturation"]},
            ],
        }
    ]
    cov = compute_coverage(train, qa)
    assert cov["q"]["nearest_train_id"] == "t1"
    assert cov["q"]["facts"] == [
        {"stated": True, "in_nearest": True},
        {"stated": True, "in_nearest": False},
        {"stated": False, "in_nearest": False},
    ]
    answer = {"id": "q", "key_facts": qa[0]["key_facts"], "answer": "4:1, and tape saturation."}
    assert recall_over(answer, cov, "stated", True) == 0.5  # 4:1 yes, duck no
    assert recall_over(answer, cov, "stated", False) == 1.0  # the unstated fact, guessed
    assert recall_over(answer, cov, "in_nearest", True) == 1.0


def test_summary_carries_coverage_slices_and_split(tiny_experiment):
    from harness.eval.run import run_eval

    summary = run_eval(tiny_experiment, _settings())
    slices = summary["targets"]["base"]["by_coverage"]["qa"]
    assert set(slices) == {"stated in training", "not stated in training", "in the nearest training item"}
    assert summary["split"] == "heldout" and summary["question_files"][0].endswith("data/qa.json")
    assert summary["decoding"]["max_new_tokens"] == 8 and summary["decoding"]["repetition_penalty"] == 1.0


def test_repetition_control_changes_greedy_answers_only_where_they_repeat(tiny_model_dir):
    import torch
    from transformers import AutoModelForCausalLM

    from harness.eval.generation import greedy_generate, penalize_repeats

    logits = torch.tensor([[0.0, 5.0, 4.0, 1.0]])
    assert penalize_repeats(logits.clone(), torch.tensor([[1]]), repetition_penalty=2.0).argmax() == 2
    assert penalize_repeats(logits.clone(), torch.tensor([[3]]), repetition_penalty=2.0).argmax() == 1
    banned = penalize_repeats(logits.clone(), torch.tensor([[1, 2, 1]]), no_repeat_ngram_size=2)
    assert banned[0, 2] == -float("inf") and banned.argmax() == 1  # "1 2" seen: after 1, 2 is banned
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    ids = torch.tensor([[5, 6, 7, 8]])
    mask = torch.ones_like(ids)
    until_stop = lambda out: out[: out.index(0)] if 0 in out else out
    plain = until_stop(greedy_generate(model, ids, mask, 24, {0}, 0)[0, 4:].tolist())
    fenced = until_stop(greedy_generate(model, ids, mask, 24, {0}, 0, no_repeat_ngram_size=2)[0, 4:].tolist())
    bigrams = list(zip(fenced, fenced[1:]))
    assert len(bigrams) == len(set(bigrams))  # no bigram twice
    if len(set(zip(plain, plain[1:]))) == len(plain) - 1:
        assert fenced == plain  # nothing repeated: nothing changed
