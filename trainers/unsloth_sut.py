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
    train_ds, val_ds, data_info = common.load_splits(cfg)
    args = common.sft_config(cfg, out_dir / "trainer", use_cpu=False)
    callback = common.MeasuringCallback()
    trainer = common.counting_trainer_class()(model=model, args=args, train_dataset=train_ds,
                                               processing_class=tokenizer, callbacks=[callback])
    # Unsloth reads its own max_seq_length; TRL's max_length must not silently differ from it.
    assert trainer.args.max_length == cfg.train.max_length, "TRL max_length diverged from Unsloth's"
    trainable, total = common.count_params(model)
    figures = common.run_training(trainer, callback, val_ds, out_dir / "adapter", tokenizer)
    return {"data": data_info, "trainable_params": trainable, "total_params": total,
            "effective_settings": common.effective_settings(args, cfg), **figures}
