"""Unsloth vs HF parity on CPU, without unsloth: the four systems train with identical effective settings.

The HF side is real (PEFT models on the tiny Llama, a real SFTTrainer). The Unsloth side is what
trainers/unsloth_sut.py would pass to Unsloth, checked two ways: its plan (built by the same pure functions), and
its real `train()` run in a fresh process against a stand-in `unsloth` module that accepts only Unsloth's real
keyword arguments (FastLanguageModel.from_pretrained / get_peft_model of unsloth 2026.10.9), records them and
loads with transformers + PEFT. The stand-in replaces the third-party library only; our code path runs as is.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness import OFFLINE_ENV
from harness.config import load_config
from harness.registry import get_system

REPO = Path(__file__).resolve().parent.parent
PARITY_KEYS = [
    "learning_rate",
    "lr_scheduler",
    "warmup",
    "batch_size",
    "grad_accum",
    "epochs",
    "max_steps",
    "max_length",
    "target_modules",
    "lora_r",
    "lora_alpha",
    "lora_dropout",
    "seed",
    "bf16",
]


def overrides(tmp_path, dataset, *extra) -> list[str]:
    """The small experiment every parity check trains (one step, LoRA on three module kinds)."""
    return [
        f"runs_dir={tmp_path / 'runs'}",
        "name=p",
        f"data.train_path={dataset}",
        "train.max_steps=1",
        "train.batch_size=2",
        "train.grad_accum=2",
        "train.max_length=256",
        "lora.r=8",
        "lora.alpha=16",
        "lora.dropout=0.05",
        "lora.target_modules=[q_proj,v_proj,down_proj]",
        "data.validation_fraction=0",
        "data.max_train_items=4",
        *extra,
    ]


def config(tmp_path, dataset, *extra):
    return load_config(None, overrides(tmp_path, dataset, "train.learning_rate=3e-4", *extra))


def hf_settings(cfg, system_name, model_dir, out_dir) -> dict:
    """effective settings of a real HF model and SFTTrainer (args read after the trainer is built)."""
    from peft import get_peft_model
    from transformers import AutoTokenizer

    from trainers import common, hf

    system = get_system(system_name)
    runtime = common.planned_runtime(cfg, cuda=False)
    model = get_peft_model(hf.load_model(str(model_dir), cfg, system.quantized, cuda=False), hf.lora_config(cfg))
    model = common.apply_runtime(model, runtime)
    train_ds, _, _ = common.load_splits(cfg)
    trainer = common.sft_trainer_class()(
        model=model,
        args=common.sft_config(cfg, out_dir, use_cpu=True),
        train_dataset=train_ds,
        processing_class=AutoTokenizer.from_pretrained(model_dir),
    )
    return {
        "effective_settings": common.effective_settings(
            trainer.args, common.model_lora_settings(model), common.runtime_settings(model, runtime)
        ),
        "model_loading": common.model_load_settings(model),
    }


def test_importing_the_unsloth_trainer_patches_nothing_early():
    """The worker and unsloth_sut import no transformers/trl/peft before `import unsloth` can run."""
    code = (
        "import sys, trainers.worker, trainers.unsloth_sut as u; "
        "print([m for m in u.PATCHED_LIBRARIES if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_four_systems_share_effective_settings(tmp_path, tiny_model_dir, tiny_dataset):
    from trainers import unsloth_sut

    cfg = config(tmp_path, tiny_dataset)
    got = {s: hf_settings(cfg, s, tiny_model_dir, tmp_path / s) for s in ("hf-lora", "hf-qlora")}
    got |= {
        s: unsloth_sut.planned_settings(cfg, get_system(s), tmp_path / s) for s in ("unsloth-lora", "unsloth-qlora")
    }
    reference = got["hf-lora"]["effective_settings"]
    for system, plan in got.items():
        assert plan["effective_settings"] == reference, system
    # the experiment's values really arrive (not four copies of one wrong default)
    assert {k: reference[k] for k in PARITY_KEYS} == {
        "learning_rate": 3e-4,
        "lr_scheduler": "cosine",
        "warmup": 0.05,
        "batch_size": 2,
        "grad_accum": 2,
        "epochs": 1.0,
        "max_steps": 1,
        "max_length": 256,
        "target_modules": ["down_proj", "q_proj", "v_proj"],
        "lora_r": 8,
        "lora_alpha": 16,
        "lora_dropout": 0.05,
        "seed": 42,
        "bf16": True,
    }
    assert reference["padding_free"] is False and reference["completion_only_loss"] is True
    # 16-bit pair and 4-bit pair load their base identically
    assert (
        got["hf-lora"]["model_loading"]
        == got["unsloth-lora"]["model_loading"]
        == {"dtype": "bfloat16", "quantization": None}
    )
    assert got["hf-qlora"]["model_loading"] == got["unsloth-qlora"]["model_loading"]
    assert got["hf-qlora"]["model_loading"]["quantization"] == {
        "load_in_4bit": True,
        "quant_type": "nf4",
        "double_quant": True,
        "compute_dtype": "bfloat16",
    }


def test_a_changed_setting_shows_in_the_unsloth_plan(tmp_path, tiny_dataset):
    """The plan follows the config (a hard-coded plan would pass the parity test by luck)."""
    from trainers import unsloth_sut

    system = get_system("unsloth-qlora")
    base = unsloth_sut.planned_settings(config(tmp_path, tiny_dataset), system, tmp_path)
    changed = unsloth_sut.planned_settings(
        config(tmp_path, tiny_dataset, "train.grad_accum=4", "quant.quant_type=fp4", "train.max_length=128"),
        system,
        tmp_path,
    )
    assert changed["effective_settings"]["grad_accum"] == 4 != base["effective_settings"]["grad_accum"]
    assert changed["effective_settings"]["max_length"] == 128
    assert changed["model_loading"]["quantization"]["quant_type"] == "fp4"


STANDIN = r'''
"""Stand-in for the `unsloth` package (CPU test only): Unsloth's real keyword arguments, loaded by HF + PEFT."""
import inspect, json, sys, types

CALLS = {}

def from_pretrained(model_name="unsloth/Llama-3.2-1B-Instruct", max_seq_length=2048, dtype=None, load_in_4bit=True,
                    load_in_8bit=False, load_in_16bit=False, full_finetuning=False, token=None, device_map="sequential",
                    rope_scaling=None, fix_tokenizer=True, trust_remote_code=False, use_gradient_checkpointing="unsloth",
                    resize_model_vocab=None, revision=None, random_state=3407, **kwargs):
    CALLS["from_pretrained"] = {k: v for k, v in locals().items() if k != "kwargs"} | kwargs
    from transformers import AutoModelForCausalLM, AutoTokenizer
    unknown = set(kwargs) - {"quantization_config"}
    assert not unknown, unknown
    load = {"dtype": dtype}
    if load_in_4bit:
        load |= {"quantization_config": kwargs["quantization_config"], "device_map": {"": "cpu"}}
    model = AutoModelForCausalLM.from_pretrained(model_name, **load)
    model.max_seq_length = max_seq_length
    return model, AutoTokenizer.from_pretrained(model_name)

def get_peft_model(model, r=16, target_modules=None, lora_alpha=16, lora_dropout=0.0, bias="none",
                   layers_to_transform=None, layers_pattern=None, use_gradient_checkpointing="unsloth",
                   random_state=3407, max_seq_length=2048, use_rslora=False, modules_to_save=None,
                   init_lora_weights=True, loftq_config={}, **kwargs):
    CALLS["get_peft_model"] = {k: v for k, v in locals().items() if k not in ("model", "kwargs", "loftq_config")}
    from peft import LoraConfig, get_peft_model as peft_get
    from transformers import set_seed
    set_seed(random_state)
    return peft_get(model, LoraConfig(r=r, lora_alpha=lora_alpha, lora_dropout=lora_dropout, bias=bias,
                                      target_modules=target_modules, task_type="CAUSAL_LM"))

unsloth = types.ModuleType("unsloth")
unsloth.FastLanguageModel = types.SimpleNamespace(from_pretrained=from_pretrained, get_peft_model=get_peft_model)
sys.modules["unsloth"] = unsloth

from harness import set_offline_env
from harness.config import load_config
from harness.registry import get_system
from trainers import unsloth_sut
set_offline_env()
spec = json.loads(sys.argv[1])
cfg = load_config(None, spec["overrides"])
figures = unsloth_sut.train(cfg, get_system(spec["system"]), spec["model"], __import__("pathlib").Path(spec["out"]))
print("RESULT " + json.dumps({"calls": CALLS, "figures": {k: figures[k] for k in
      ("effective_settings", "model_loading", "steps", "train_tokens")}}, default=str))
'''


@pytest.mark.parametrize("system", ["unsloth-lora", "unsloth-qlora"])
def test_unsloth_train_passes_the_hf_systems_settings(tmp_path, tiny_model_dir, tiny_dataset, system):
    cfg_args = overrides(tmp_path, tiny_dataset)
    script = tmp_path / "standin.py"
    script.write_text(STANDIN)
    spec = {"overrides": cfg_args, "system": system, "model": str(tiny_model_dir), "out": str(tmp_path / system)}
    env = {**os.environ, **OFFLINE_ENV, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    out = subprocess.run(
        [sys.executable, str(script), json.dumps(spec)], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(next(line for line in out.stdout.splitlines() if line.startswith("RESULT "))[7:])
    loaded, peft = result["calls"]["from_pretrained"], result["calls"]["get_peft_model"]
    assert loaded["max_seq_length"] == 256 and loaded["load_in_4bit"] == (system == "unsloth-qlora")
    assert loaded["dtype"] == "torch.bfloat16" and loaded["fix_tokenizer"] is False
    assert loaded["use_gradient_checkpointing"] is False and peft["use_gradient_checkpointing"] is False
    assert (peft["r"], peft["lora_alpha"], peft["lora_dropout"]) == (8, 16, 0.05)
    assert sorted(peft["target_modules"]) == ["down_proj", "q_proj", "v_proj"] and peft["random_state"] == 42
    # what the live Unsloth-path model and trainer recorded == what the HF system really trains with
    cfg = load_config(None, cfg_args)
    hf_name = "hf-qlora" if system == "unsloth-qlora" else "hf-lora"
    reference = hf_settings(cfg, hf_name, tiny_model_dir, tmp_path / hf_name)
    assert result["figures"]["effective_settings"] == reference["effective_settings"]
    assert result["figures"]["model_loading"] == reference["model_loading"]
    assert result["figures"]["steps"] == 1 and result["figures"]["train_tokens"] > 0


# --- musicprod bench gpu: what can be checked without a GPU ---------------------------------------------------


def musicprod(*args):
    env = {**os.environ, **OFFLINE_ENV, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "harness.cli", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )


def test_bench_gpu_dry_run_prints_the_plan():
    out = musicprod(
        "bench", "gpu", "--dry-run", "--seq-lens", "512,2048", "--synthetic-steps", "7", "train.max_steps=9"
    )
    assert out.returncode == 0, out.stderr
    lines = [row.split() for row in out.stdout.splitlines() if row.startswith("  gpu-")]
    assert len(lines) == 12  # 4 systems x (real + 2 sequence lengths)
    assert {(row[0], row[1]) for row in lines} == {
        (e, s)
        for e in ("gpu-real", "gpu-synthetic-s512", "gpu-synthetic-s2048")
        for s in ("hf-lora", "hf-qlora", "unsloth-lora", "unsloth-qlora")
    }
    real = [row for row in lines if row[0] == "gpu-real"]
    assert all(row[2] == "false" and row[5] == "9" for row in real)
    assert {(row[3], row[4], row[5]) for row in lines if row[0] == "gpu-synthetic-s2048"} == {("2048", "4", "7")}
    assert {(row[3], row[4]) for row in lines if row[0] == "gpu-synthetic-s512"} == {("512", "16")}


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_bench_gpu_refuses_without_cuda():
    out = musicprod("bench", "gpu", "--part", "real")
    assert out.returncode == 2
    assert "no CUDA device" in out.stderr and "--dry-run" in out.stderr
    assert "=== bench gpu" not in out.stdout  # refused before any training process started


def test_mfu_uses_the_known_peak_or_none():
    from harness.bench.gpu import flops_per_token, mfu, peak_bf16_tflops

    assert peak_bf16_tflops("NVIDIA H100 80GB HBM3") == 989.4 and peak_bf16_tflops("NVIDIA H100 PCIe") == 756.0
    assert peak_bf16_tflops("NVIDIA A100-SXM4-80GB") == 312.0 and peak_bf16_tflops("NVIDIA L4") == 121.0
    assert peak_bf16_tflops("NVIDIA GeForce RTX 4090") is None and mfu(1e5, 1e9, "RTX 4090") is None
    fpt = flops_per_token(n_params=1_000_000_000, n_layers=16, hidden=2048, seq_len=2048)
    assert fpt == 6e9 + 12 * 16 * 2048 * 2048
    assert mfu(50_000, fpt, "NVIDIA H200") == round(50_000 * fpt / 989.4e12, 4)


def test_synthetic_model_is_llama_32_1b_shaped_with_the_tokenizer_vocabulary(model_cache):
    import torch
    from transformers import AutoTokenizer, LlamaForCausalLM

    from harness.bench.gpu import synthetic_config

    tok = AutoTokenizer.from_pretrained(Path(model_cache) / "smollm2-135m-instruct")
    config = synthetic_config(len(tok), tok.eos_token_id, tok.pad_token_id, tok.bos_token_id)
    assert (
        config.hidden_size,
        config.num_hidden_layers,
        config.num_attention_heads,
        config.num_key_value_heads,
        config.intermediate_size,
    ) == (2048, 16, 32, 8, 8192)
    assert config.vocab_size == len(tok) == 49152
    with torch.device("meta"):
        n = sum(p.numel() for p in LlamaForCausalLM(config).parameters())
    # Llama-3.2-1B has 1.236e9 parameters; with 49152 instead of 128256 tied embeddings: 79104 x 2048 fewer
    assert n == 1_235_814_400 - (128256 - 49152) * 2048


def test_synthetic_dataset_is_longer_than_the_sequence_length(tmp_path, model_cache):
    from transformers import AutoTokenizer

    from harness.bench.gpu import synthetic_dataset
    from harness.data.load import load_training_set

    path = synthetic_dataset(tmp_path / "s.json", "data/music_production_dataset.json", min_chars=512 * 6, n_items=5)
    rows = load_training_set(path)  # passes the training-set checks
    tok = AutoTokenizer.from_pretrained(Path(model_cache) / "smollm2-135m-instruct")
    assert len(rows) == 5 and all(len(tok(r["response"])["input_ids"]) > 512 for r in rows)
