"""Systems unsloth-lora and unsloth-qlora: Unsloth FastLanguageModel with the HF systems' exact settings.

Field by field against trainers/hf.py:
- base weights: same folder, same dtype (bf16 when train.bf16); QLoRA gets the *same* BitsAndBytesConfig object
  as hf-qlora (`hf.bnb_config`: nf4/fp4, double quant, compute dtype), which Unsloth keeps authoritative over
  its own default;
- adapter: same r / alpha / dropout / target modules, bias none, LoRA init seeded with train.seed;
- optimisation, max_length, answer-only loss, chat-template shaping, measurement: the one `common.sft_config`
  and `common.fit` the HF systems use. Unsloth's patched SFTTrainer keeps its gradient-accumulation-correct loss
  (num_items_in_batch) and TRL 1.15's fused LM head (Unsloth >= 2026.10 patches `add_fused_lm_head`).
- tokenizer: `fix_tokenizer=False`, so both stacks train on the same token ids and pad token.

`import unsloth` must come before transformers/trl/peft in the process (it patches them), so this module imports
none of them at module level: the worker imports it first, and `train` imports unsloth, then the shared code.
The kwargs builders below need no unsloth, so a CPU test can check exactly what this path would pass.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

PATCHED_LIBRARIES = ("transformers", "trl", "peft")


def dtype_name(cfg) -> str:
    return "bfloat16" if cfg.train.bf16 else "float32"  # the HF systems' rule (trainers/hf.load_model)


def loader_kwargs(cfg, system, model_path: str) -> dict:
    """Arguments of FastLanguageModel.from_pretrained for this system."""
    import torch

    kwargs = {
        "model_name": model_path,
        "max_seq_length": cfg.train.max_length,  # = SFTConfig.max_length (common.fit asserts the trainer's)
        "dtype": getattr(torch, dtype_name(cfg)),
        "load_in_4bit": system.quantized,
        "fix_tokenizer": False,
        # from_pretrained defaults to Unsloth's offloaded checkpointing; follow the experiment's switch instead.
        "use_gradient_checkpointing": "unsloth" if cfg.train.gradient_checkpointing else False,
        "random_state": cfg.train.seed,
    }
    if system.quantized:
        from trainers.hf import bnb_config  # the very object hf-qlora loads with

        kwargs["quantization_config"] = bnb_config(cfg)
    return kwargs


def peft_kwargs(cfg) -> dict:
    """Arguments of FastLanguageModel.get_peft_model (the HF systems' LoraConfig, in Unsloth's names)."""
    return {
        "r": cfg.lora.r,
        "lora_alpha": cfg.lora.alpha,
        "lora_dropout": cfg.lora.dropout,
        "target_modules": list(cfg.lora.target_modules),
        "bias": "none",
        "use_gradient_checkpointing": "unsloth" if cfg.train.gradient_checkpointing else False,
        "random_state": cfg.train.seed,
        "max_seq_length": cfg.train.max_length,
    }


def planned_settings(cfg, system, out_dir: str | Path) -> dict:
    """What this path would train with, built without unsloth: the SFTConfig it passes, its LoRA and load settings.

    The same pure functions (`common.effective_settings`, `common.quantization_settings`) read the live model in
    `common.fit`; the parity test compares this plan with the HF systems' real objects.
    """
    from trainers import common

    peft = peft_kwargs(cfg)
    load = loader_kwargs(cfg, system, "unused")
    args = common.sft_config(cfg, Path(out_dir) / "trainer", use_cpu=not cuda_available())
    lora = common.lora_settings(peft["r"], peft["lora_alpha"], peft["lora_dropout"], peft["target_modules"])
    runtime = common.planned_runtime(cfg, cuda_available())
    return {
        "effective_settings": common.effective_settings(args, lora, runtime),
        "model_loading": {
            "dtype": dtype_name(cfg),
            "quantization": common.quantization_settings(load.get("quantization_config")),
        },
    }


def cuda_available() -> bool:
    import torch  # real Unsloth runs on CUDA only; a CPU check of this path (tests) trains on the CPU

    return torch.cuda.is_available()


def import_unsloth_first():
    late = [name for name in PATCHED_LIBRARIES if name in sys.modules]
    if late:
        raise RuntimeError(
            f"{', '.join(late)} imported before unsloth in this process: Unsloth could not patch "
            "them, and the run would not measure Unsloth (train each system in a fresh process)"
        )
    os.environ.setdefault("UNSLOTH_DISABLE_STATISTICS", "1")  # offline anyway; skip its hub ping outright
    import unsloth  # noqa: F401
    from unsloth import FastLanguageModel

    return FastLanguageModel


def train(cfg, system, model_path: str, out_dir: Path) -> dict:
    FastLanguageModel = import_unsloth_first()
    from trainers import common  # transformers/trl/peft: only after unsloth

    model, tokenizer = FastLanguageModel.from_pretrained(**loader_kwargs(cfg, system, model_path))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = FastLanguageModel.get_peft_model(model, **peft_kwargs(cfg))
    # The HF systems' speed settings, resolved for this device (on CUDA: fp32 adapters, no torch.compile, which
    # is what Unsloth's own defaults are compared against); the record reads the adapter dtype off the model.
    runtime = common.planned_runtime(cfg, cuda_available())
    model = common.apply_runtime(model, runtime)  # a no-op on CUDA; on CPU the same bf16 adapters and compile
    return common.fit(cfg, model, tokenizer, out_dir, use_cpu=not cuda_available(), runtime=runtime)
