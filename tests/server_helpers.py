"""Shared set-up for the server tests: a fake experiment around the tiny model with a real LoRA adapter."""
from __future__ import annotations

import json
from pathlib import Path


def make_adapter(base_dir: Path, out: Path, nonzero: bool = True) -> Path:
    """A real PEFT LoRA adapter for the model at base_dir (random B when nonzero, so it changes outputs)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM
    torch.manual_seed(1)
    model = AutoModelForCausalLM.from_pretrained(base_dir)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM",
                        init_lora_weights=not nonzero)
    peft_model = get_peft_model(model, config)
    peft_model.save_pretrained(out)
    return out


def make_experiment(root: Path, base_dir: Path, name: str = "fake", system: str = "hf-lora",
                    nonzero: bool = True) -> Path:
    """root/runs/<name>/<system>/adapter + root/runs/<name>/champion.json (contract of CONTRACTS.md)."""
    exp = root / "runs" / name
    adapter = make_adapter(base_dir, exp / system / "adapter", nonzero)
    champion = {"experiment": name, "system": system, "base_model": "tiny-llama",
                "base_model_path": str(base_dir), "adapter_path": f"runs/{name}/{system}/adapter",
                "scores": {}, "rule": "test fixture", "created_at": "2026-11-24T00:00:00+00:00"}
    (exp / "champion.json").write_text(json.dumps(champion))
    assert adapter.is_dir()
    return exp
