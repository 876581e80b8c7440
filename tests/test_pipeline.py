"""`musicprod run` end to end on a tiny random model: train -> evaluate -> champion -> report."""
import json
from pathlib import Path

from harness.config import load_config
from harness.pipeline import run_experiment


def test_run_experiment_trains_evaluates_and_reports(tmp_path, tiny_model_dir, tiny_dataset, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the report goes to ./reports/out/<experiment>
    overrides = [f"runs_dir={tmp_path / 'runs'}", "name=e2e", f"data.train_path={tiny_dataset}",
                 f"model.name={tiny_model_dir}", "systems=[hf-lora,unsloth-lora]", "train.max_steps=2",
                 "train.logging_steps=1", "train.batch_size=4", "data.validation_fraction=0.2",
                 "eval.limit=2", "eval.max_gen_toks=4", "eval.batch_size=2", "eval.dtype=float32",
                 "eval.bootstrap_resamples=200"]
    summary = run_experiment(load_config(None, overrides), None, overrides)
    exp = tmp_path / "runs" / "e2e"
    assert summary["systems"]["hf-lora"]["status"] == "ok"
    assert summary["systems"]["unsloth-lora"]["status"] == "skipped"
    stages = json.loads((exp / "experiment.json").read_text())["stages"]
    assert {"prepare_s", "train_hf-lora_s", "eval_s", "report_s", "total_s"} <= set(stages)
    eval_summary = json.loads((exp / "eval" / "summary.json").read_text())
    assert set(eval_summary["targets"]) == {"base", "hf-lora"} and "unsloth-lora" in eval_summary["skipped"]
    champion = json.loads((exp / "champion.json").read_text())
    assert champion["system"] in ("base", "hf-lora") and champion["rule"]
    html = Path(summary["report"]).read_text()
    assert "hf-lora" in html and "unsloth-lora" in html and champion["system"] in html
