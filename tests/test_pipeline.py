"""`musicprod run` end to end on a tiny random model: train -> evaluate -> champion -> report -> serve."""

import json
from pathlib import Path

import pytest

from harness.config import load_config
from harness.pipeline import run_experiment


@pytest.fixture
def wordy_tiny_model_dir(tmp_path, tiny_model_dir):
    """The tiny random model with the embeddings of whitespace-only tokens zeroed (tied: the LM head too).
    Greedy decoding of the plain tiny model emits "\n" only, which strips to an empty answer, and an empty served
    answer equal to an empty evaluated one would prove nothing."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    blank = [i for i in range(len(tok)) if not tok.decode([i]).strip()]
    with torch.no_grad():
        model.get_input_embeddings().weight[blank] = 0
    out = tmp_path / "wordy-tiny"
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def test_run_experiment_trains_evaluates_reports_and_serves_as_measured(
    tmp_path, wordy_tiny_model_dir, tiny_dataset, monkeypatch
):
    tiny_model_dir = wordy_tiny_model_dir
    monkeypatch.chdir(tmp_path)  # the report goes to ./reports/out/<experiment>
    overrides = [
        f"runs_dir={tmp_path / 'runs'}",
        "name=e2e",
        f"data.train_path={tiny_dataset}",
        f"model.name={tiny_model_dir}",
        "systems=[hf-lora,unsloth-lora]",
        "train.max_steps=2",
        "train.logging_steps=1",
        "train.batch_size=4",
        "data.validation_fraction=0.2",
        "train.compile=false",
        "eval.limit=2",
        "eval.decoding.max_new_tokens=4",
        "eval.batch_size=2",
        "eval.dtype=float32",
        "eval.bootstrap_resamples=200",
    ]
    summary = run_experiment(load_config(None, overrides), None, overrides)
    exp = tmp_path / "runs" / "e2e"
    assert summary["systems"]["hf-lora"]["status"] == "ok"
    assert summary["systems"]["unsloth-lora"]["status"] == "skipped"
    stages = json.loads((exp / "experiment.json").read_text())["stages"]
    assert {"prepare_s", "train_hf-lora_s", "eval_s", "report_s", "total_s"} <= set(stages)
    eval_summary = json.loads((exp / "eval" / "summary.json").read_text())
    assert set(eval_summary["targets"]) == {"base", "hf-lora", "lookup"} and "unsloth-lora" in eval_summary["skipped"]
    champion = json.loads((exp / "champion.json").read_text())
    assert champion["system"] in ("base", "hf-lora") and champion["rule"]
    assert champion["decoding"]["max_new_tokens"] == 4 and champion["decoding"]["dtype"] == "float32"
    html = Path(summary["report"]).read_text()
    assert "hf-lora" in html and "unsloth-lora" in html and champion["system"] in html
    _served_answer_is_the_evaluated_one(tmp_path, tiny_model_dir, exp, champion)


def _served_answer_is_the_evaluated_one(tmp_path, tiny_model_dir, exp, champion):
    """`musicprod serve`'s defaults come from champion.json: a /generate without any decoding parameter
    reproduces the answer the evaluation scored for a held-out question."""
    from server.app import ServeSettings, create_app, sampling_from_decoding
    from server.engine import Engine
    from server.loading import from_champion, load_model, make_roots
    from server.main import served_as_measured

    target = from_champion("e2e", make_roots(tmp_path / "runs", [str(tiny_model_dir)], str(tmp_path)), str(tmp_path))
    dtype, merge = served_as_measured(target, None, None)
    assert dtype == "float32"
    engine = Engine(max_batch=1)
    engine.load(lambda: load_model(target, dtype, merge))
    sampling, max_new = sampling_from_decoding(champion["decoding"])
    app = create_app(engine, ServeSettings(default_sampling=sampling, default_max_new_tokens=max_new))
    row = json.loads((exp / "eval" / champion["system"] / "generations.jsonl").read_text().splitlines()[0])
    try:
        resp = app.test_client().post("/generate", json={"messages": [{"role": "user", "content": row["question"]}]})
    finally:
        engine.stop()
    assert resp.status_code == 200, resp.get_json()
    assert resp.get_json()["usage"]["completion_tokens"] <= 4
    assert row["answer"], "the evaluated answer is empty: the comparison would prove nothing"
    assert resp.get_json()["text"].strip() == row["answer"]
