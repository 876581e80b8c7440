"""Training smoke tests: each system in its own process, on a tiny random Llama (and one real-model run)."""
import json
import math
from pathlib import Path

import pytest

from harness.config import load_config
from harness.models import ResolvedModel
from harness.pipeline import train_system

REQUIRED = ["system", "status", "base_model", "config", "data", "versions", "git_sha", "device", "trainable_params",
            "total_params", "steps", "train_tokens", "train_wall_s", "train_tokens_per_s", "peak_rss_mib",
            "loss_curve", "final_train_loss", "validation_loss", "adapter_path", "effective_settings", "wall_s"]


def run(tmp_path, system, model_dir, dataset, *extra):
    overrides = [f"runs_dir={tmp_path / 'runs'}", "name=t", f"data.train_path={dataset}", "train.max_steps=3",
                 "train.logging_steps=1", "train.batch_size=4", "data.validation_fraction=0.2", "train.compile=false", *extra]
    cfg = load_config(None, overrides)
    model = ResolvedModel("tiny", str(model_dir), "0" * 64, {})
    return train_system(cfg, None, overrides, system, model)


@pytest.mark.parametrize("system", ["hf-lora", "hf-qlora"])
def test_hf_system_trains_and_writes_a_complete_record(tmp_path, tiny_model_dir, tiny_dataset, system):
    record = run(tmp_path, system, tiny_model_dir, tiny_dataset)
    assert record["status"] == "ok", record.get("traceback")
    on_disk = json.loads((tmp_path / "runs" / "t" / system / "run.json").read_text())
    assert on_disk["status"] == "ok"
    for key in REQUIRED:
        assert key in on_disk, key
    assert on_disk["steps"] == 3 and len(on_disk["loss_curve"]) == 3
    assert all(math.isfinite(p["loss"]) for p in on_disk["loss_curve"])
    assert 0 < on_disk["trainable_params"] < on_disk["total_params"]
    assert on_disk["train_tokens"] > 0 and on_disk["train_tokens_per_s"] > 0 and on_disk["peak_rss_mib"] > 100
    assert math.isfinite(on_disk["validation_loss"])
    assert on_disk["data"]["train_items"] + on_disk["data"]["validation_items"] == 24
    assert len(on_disk["data"]["sha256"]) == 64
    adapter = Path(on_disk["adapter_path"])
    assert (adapter / "adapter_config.json").exists() and (adapter / "adapter_model.safetensors").exists()
    assert json.loads((adapter / "adapter_config.json").read_text())["r"] == 16


def test_hf_systems_share_identical_settings(tmp_path, tiny_model_dir, tiny_dataset):
    records = [run(tmp_path, s, tiny_model_dir, tiny_dataset, "train.max_steps=1") for s in ("hf-lora", "hf-qlora")]
    assert records[0]["effective_settings"] == records[1]["effective_settings"]


@pytest.mark.parametrize("system", ["unsloth-lora", "unsloth-qlora"])
def test_unsloth_is_skipped_without_cuda(tmp_path, tiny_model_dir, tiny_dataset, system):
    record = run(tmp_path, system, tiny_model_dir, tiny_dataset)
    assert record["status"] == "skipped"
    assert "CUDA" in record["reason"] or "unsloth is not installed" in record["reason"]
    assert "train_tokens_per_s" not in record  # never a number for a system that did not run


@pytest.mark.integration
def test_real_smollm2_loss_goes_down(tmp_path, model_cache, tiny_dataset):
    model = ResolvedModel("smollm2-135m-instruct", str(Path(model_cache) / "smollm2-135m-instruct"), None, {})
    overrides = [f"runs_dir={tmp_path / 'runs'}", "name=real", f"data.train_path={tiny_dataset}",
                 "train.max_steps=8", "train.logging_steps=1", "train.batch_size=4", "train.learning_rate=0.001",
                 "train.lr_scheduler=constant", "train.warmup_ratio=0", "data.validation_fraction=0.1"]
    record = train_system(load_config(None, overrides), None, overrides, "hf-lora", model)
    assert record["status"] == "ok", record.get("traceback")
    losses = [p["loss"] for p in record["loss_curve"]]
    assert losses[-1] < 0.8 * losses[0], losses
