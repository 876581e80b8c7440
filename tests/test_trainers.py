"""Training smoke tests: each system in its own process, on a tiny random Llama (and one real-model run)."""

import json
import math
from pathlib import Path

import pytest

from harness.config import load_config
from harness.models import ResolvedModel
from harness.pipeline import train_system

REQUIRED = [
    "system",
    "status",
    "base_model",
    "config",
    "data",
    "versions",
    "git_sha",
    "device",
    "trainable_params",
    "total_params",
    "steps",
    "train_tokens",
    "train_wall_s",
    "train_tokens_per_s",
    "peak_rss_mib",
    "loss_curve",
    "final_train_loss",
    "validation_loss",
    "adapter_path",
    "effective_settings",
    "wall_s",
]


def run(tmp_path, system, model_dir, dataset, *extra):
    overrides = [
        f"runs_dir={tmp_path / 'runs'}",
        "name=t",
        f"data.train_path={dataset}",
        "train.max_steps=3",
        "train.logging_steps=1",
        "train.batch_size=4",
        "data.validation_fraction=0.2",
        "train.compile=false",
        *extra,
    ]
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
    assert on_disk["train_tokens"] == on_disk["loss_curve"][-1]["tokens"]  # the Trainer's own count, at the last log
    # the memory profile: RSS and the high-water mark at every logging step (the kernel updates the mark lazily,
    # so RSS now may exceed it by a little; the mark itself only grows, up to the run's peak)
    by_step = on_disk["rss_by_step"]
    assert [p["step"] for p in by_step] == [1, 2, 3] and all(p["rss_mib"] > 100 for p in by_step)
    peaks = [p["peak_rss_mib"] for p in by_step] + [on_disk["peak_rss_mib"]]
    assert peaks == sorted(peaks)
    assert math.isfinite(on_disk["validation_loss"])
    assert on_disk["data"]["train_items"] + on_disk["data"]["validation_items"] == 24
    assert len(on_disk["data"]["sha256"]) == 64
    adapter = Path(on_disk["adapter_path"])
    assert (adapter / "adapter_config.json").exists() and (adapter / "adapter_model.safetensors").exists()
    assert json.loads((adapter / "adapter_config.json").read_text())["r"] == 16


def test_hf_systems_share_identical_settings(tmp_path, tiny_model_dir, tiny_dataset):
    records = [run(tmp_path, s, tiny_model_dir, tiny_dataset, "train.max_steps=1") for s in ("hf-lora", "hf-qlora")]
    assert records[0]["effective_settings"] == records[1]["effective_settings"]
    # the CPU speed settings are recorded, and read from the live model (bf16 adapters on this CPU run)
    assert records[0]["effective_settings"]["adapter_dtype"] == "bfloat16"
    assert records[0]["effective_settings"]["allocator"] in ("tcmalloc", "glibc (tuned)", "jemalloc")


@pytest.mark.parametrize("system", ["unsloth-lora", "unsloth-qlora"])
def test_unsloth_is_skipped_without_cuda(tmp_path, tiny_model_dir, tiny_dataset, system):
    record = run(tmp_path, system, tiny_model_dir, tiny_dataset)
    assert record["status"] == "skipped"
    assert "CUDA" in record["reason"] or "unsloth is not installed" in record["reason"]
    assert "train_tokens_per_s" not in record  # never a number for a system that did not run


@pytest.mark.integration
def test_real_smollm2_loss_goes_down(tmp_path, model_cache, tiny_dataset):
    model = ResolvedModel("smollm2-135m-instruct", str(Path(model_cache) / "smollm2-135m-instruct"), None, {})
    overrides = [
        f"runs_dir={tmp_path / 'runs'}",
        "name=real",
        f"data.train_path={tiny_dataset}",
        "train.max_steps=8",
        "train.logging_steps=1",
        "train.batch_size=4",
        "train.learning_rate=0.001",
        "train.lr_scheduler=constant",
        "train.warmup_ratio=0",
        "data.validation_fraction=0.1",
    ]
    record = train_system(load_config(None, overrides), None, overrides, "hf-lora", model)
    assert record["status"] == "ok", record.get("traceback")
    losses = [p["loss"] for p in record["loss_curve"]]
    assert losses[-1] < 0.8 * losses[0], losses


def test_loss_is_on_the_answer_only(tmp_path, tiny_model_dir, tiny_dataset):
    """The batches the trainer sees: every prompt position (system, user turn, assistant header) is -100, every
    answer position carries its own token, and the answer-only loss equals cross-entropy over those positions."""
    import torch
    from peft import get_peft_model
    from transformers import AutoTokenizer

    from trainers import common, hf

    cfg = load_config(
        None,
        [
            f"runs_dir={tmp_path}",
            f"data.train_path={tiny_dataset}",
            "data.validation_fraction=0",
            "train.batch_size=4",
            "train.max_steps=1",
            "train.bf16=false",
            "train.compile=false",
        ],
    )
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = get_peft_model(hf.load_model(str(tiny_model_dir), cfg, False, cuda=False), hf.lora_config(cfg))
    train_ds, _, _ = common.load_splits(cfg)
    trainer = common.sft_trainer_class()(
        model=model,
        args=common.sft_config(cfg, tmp_path / "t", use_cpu=True),
        train_dataset=train_ds,
        processing_class=tok,
    )
    batch = next(iter(trainer.get_train_dataloader()))
    for ids, labels, mask in zip(batch["input_ids"], batch["labels"], batch["attention_mask"]):
        text = tok.decode(ids[mask.bool()])
        answer_start = text.index("<|im_start|>assistant\n") + len("<|im_start|>assistant\n")
        prompt_tokens = len(tok(text[:answer_start], add_special_tokens=False)["input_ids"])
        assert (labels[:prompt_tokens] == -100).all()
        answer = labels[prompt_tokens:][mask[prompt_tokens:].bool()]
        assert (answer != -100).all() and (answer == ids[prompt_tokens:][mask[prompt_tokens:].bool()]).all()
        assert tok.decode(answer).startswith("A ratio of 4:1")
    with torch.no_grad():
        loss = common.completion_only_loss(model, batch)
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
        targets = batch["labels"][:, 1:]
        full = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1))
    assert loss.item() == pytest.approx(full.item(), rel=1e-5)


def test_compiled_training_matches_eager(tmp_path, tiny_model_dir, tiny_dataset):
    """train.compile (per-layer torch.compile, the CPU default) changes speed, not the loss curve."""
    curves = {}
    for compiled in (False, True):
        record = run(
            tmp_path / str(compiled),
            "hf-lora",
            tiny_model_dir,
            tiny_dataset,
            f"train.compile={compiled}",
            "train.bf16=false",
            "train.max_steps=4",
        )
        assert record["status"] == "ok", record.get("traceback")
        assert record["effective_settings"]["torch_compile"] is compiled
        curves[compiled] = [p["loss"] for p in record["loss_curve"]]
    assert curves[True] == pytest.approx(curves[False], rel=1e-4)


def test_compiled_qlora_validates_after_training(tmp_path, tiny_model_dir, tiny_dataset):
    """The CPU default (compiled layers) on a 4-bit base: validation after training must not fail (it did, after a
    whole epoch, until validation ran eager)."""
    record = run(tmp_path, "hf-qlora", tiny_model_dir, tiny_dataset, "train.compile=true", "train.max_steps=2")
    assert record["status"] == "ok", record.get("traceback")
    assert record["effective_settings"]["torch_compile"] is True
    assert math.isfinite(record["validation_loss"])


def test_hf_full_trains_every_weight_and_saves_a_whole_model(tmp_path, tiny_model_dir, tiny_dataset):
    record = run(tmp_path, "hf-full", tiny_model_dir, tiny_dataset, "train.full_learning_rate=1e-4")
    assert record["status"] == "ok", record.get("traceback")
    assert record["trainable_params"] == record["total_params"]
    assert record["effective_settings"]["learning_rate"] == 1e-4 and record["effective_settings"]["lora_r"] is None
    assert record["effective_settings"]["adapter_dtype"] == "float32"  # fp32 master weights
    saved = Path(record["adapter_path"])
    assert (saved / "config.json").exists() and not (saved / "adapter_config.json").exists()


def test_chunked_answer_loss_has_the_same_value_and_gradients(tiny_model_dir, monkeypatch):
    """The LM head in checkpointed chunks (memory) computes exactly the unchunked loss and gradients."""
    import torch
    from transformers import AutoModelForCausalLM

    from trainers import common

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    ids = torch.randint(5, 200, (2, 12))
    labels = ids.clone()
    labels[:, :4] = -100
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}
    grads = {}
    vocab = model.lm_head.out_features
    for chunk in (10_000, 3):
        monkeypatch.setattr(common, "LOSS_CHUNK_LOGITS", chunk * vocab)  # chunks of `chunk` answer positions
        model.zero_grad()
        loss = common.completion_only_loss(model, inputs)
        loss.backward()
        grads[chunk] = (
            loss.item(),
            model.model.layers[0].mlp.up_proj.weight.grad.clone(),
            model.lm_head.weight.grad.clone(),
        )
    assert grads[3][0] == pytest.approx(grads[10_000][0], rel=1e-6)
    for a, b in zip(grads[3][1:], grads[10_000][1:]):
        assert torch.allclose(a, b, atol=1e-6)


def test_trains_from_an_alpaca_jsonl_file(tmp_path, tiny_model_dir):
    rows = [
        {
            "instruction": f"What ratio suits source {i}?",
            "input": "",
            "output": "A 4:1 ratio turns every 4 dB over the threshold into 1 dB.",
        }
        for i in range(12)
    ]
    data = tmp_path / "alpaca.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in rows))
    record = run(tmp_path, "hf-lora", tiny_model_dir, data, "train.max_steps=2")
    assert record["status"] == "ok", record.get("traceback")
    assert record["data"]["train_items"] + record["data"]["validation_items"] == 12


@pytest.mark.skipif(__import__("importlib").util.find_spec("tensorboard") is None, reason="tensorboard not installed")
def test_report_to_tensorboard_writes_event_files(tmp_path, tiny_model_dir, tiny_dataset):
    record = run(tmp_path, "hf-lora", tiny_model_dir, tiny_dataset, "train.max_steps=2", "train.report_to=tensorboard")
    assert record["status"] == "ok", record.get("traceback")
    assert list((tmp_path / "runs" / "t" / "hf-lora" / "trainer").rglob("events.out.tfevents.*"))
