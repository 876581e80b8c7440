"""Systems hf-lora and hf-qlora: TRL SFTTrainer + PEFT, optionally on a bitsandbytes 4-bit base."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig, set_seed

from trainers import common


def fsdp_enabled() -> bool:
    return os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"  # set by accelerate launch


def bnb_config(cfg) -> BitsAndBytesConfig:
    extra = {}
    if fsdp_enabled():  # FSDP can only shard the packed 4-bit weights when they are stored as a float dtype
        extra["bnb_4bit_quant_storage"] = torch.bfloat16 if cfg.train.bf16 else torch.float32
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=cfg.quant.quant_type,
        bnb_4bit_use_double_quant=cfg.quant.double_quant,
        bnb_4bit_compute_dtype=getattr(torch, cfg.quant.compute_dtype),
        **extra,
    )


def lora_config(cfg) -> LoraConfig:
    return LoraConfig(
        r=cfg.lora.r,
        lora_alpha=cfg.lora.alpha,
        lora_dropout=cfg.lora.dropout,
        target_modules=list(cfg.lora.target_modules),
        bias="none",
        task_type="CAUSAL_LM",
    )


def load_model(model_path: str, cfg, quantized: bool, cuda: bool, master_fp32: bool = False):
    # Full fine-tuning keeps fp32 master weights (bf16 compute under autocast): a bf16 weight cannot take an
    # update smaller than 1/256 of itself, which at fine-tuning rates is most of them.
    dtype = torch.bfloat16 if cfg.train.bf16 and not master_fp32 else torch.float32
    kwargs = {"dtype": dtype, "attn_implementation": "sdpa"}
    if quantized:
        kwargs["quantization_config"] = bnb_config(cfg)
        if not fsdp_enabled():  # under FSDP accelerate places the shards itself
            local_rank = int(os.environ.get("LOCAL_RANK", "0"))  # one GPU per rank under DDP
            kwargs["device_map"] = {"": local_rank} if cuda else {"": "cpu"}
    model = AutoModelForCausalLM.from_pretrained(model_path, **kwargs)
    if quantized:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=cfg.train.gradient_checkpointing)
    return model


def train(cfg, system, model_path: str, out_dir: Path) -> dict:
    cuda = torch.cuda.is_available()
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    base = load_model(model_path, cfg, system.quantized, cuda, master_fp32=not system.adapter)
    set_seed(cfg.train.seed)  # LoRA's random init: the same on every rank, and across runs and launchers
    if system.adapter:
        model = get_peft_model(base, lora_config(cfg))
    else:  # hf-full: every weight trains, at the full fine-tuning rate
        model = base
        cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, learning_rate=cfg.train.full_learning_rate))
    runtime = common.planned_runtime(cfg, cuda)
    return common.fit(cfg, common.apply_runtime(model, runtime), tokenizer, out_dir, use_cpu=not cuda, runtime=runtime)
