"""Systems unsloth-lora and unsloth-qlora: Unsloth FastLanguageModel with the HF systems' exact settings."""
from __future__ import annotations

import unsloth  # noqa: F401  (must precede transformers/trl/peft: it patches them on import)
from unsloth import FastLanguageModel

from pathlib import Path

import torch

from trainers import common


def train(cfg, system, model_path: str, out_dir: Path) -> dict:
    model, tokenizer = FastLanguageModel.from_pretrained(
        model_name=model_path, max_seq_length=cfg.train.max_length, load_in_4bit=system.quantized,
        dtype=torch.bfloat16 if cfg.train.bf16 else torch.float32)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = FastLanguageModel.get_peft_model(
        model, r=cfg.lora.r, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout,
        target_modules=list(cfg.lora.target_modules), bias="none", random_state=cfg.train.seed,
        use_gradient_checkpointing="unsloth" if cfg.train.gradient_checkpointing else False,
        max_seq_length=cfg.train.max_length)
    return common.fit(cfg, model, tokenizer, out_dir, use_cpu=False)
