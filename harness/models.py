"""Base models: resolve a registry name / HF id / local folder, and prepare GGUF models once as HF folders."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from harness.io import atomic_dir, sha256_file, write_json_atomic
from harness.registry import BASE_MODELS, get_base_model

PREPARED_MARKER = "musicprod_model.json"


class ModelError(ValueError):
    pass


@dataclass
class ResolvedModel:
    name: str
    path: str  # a local HF folder or an HF id that transformers can load
    source_sha256: str | None
    info: dict


def cache_root(cache_dir: str) -> Path:
    return Path(os.path.expanduser(os.environ.get("MUSICPROD_MODEL_CACHE", cache_dir)))


def prepared_dir(name: str, cache_dir: str) -> Path:
    return cache_root(cache_dir) / name


def prepare(name: str, cache_dir: str = "~/.cache/musicprod/models", progress: bool = True) -> ResolvedModel:
    """Convert a registry GGUF model once into an HF folder (atomic; a second call is a no-op).

    HF ids and local folders are passed through unchanged.
    """
    entry = get_base_model(name)
    if entry is None:
        if Path(name).is_dir():
            return ResolvedModel(name, str(Path(name).resolve()), None, {"kind": "local folder"})
        if "/" in name and not Path(name).exists():
            return ResolvedModel(name, name, None, {"kind": "hf id"})
        known = ", ".join(m.name for m in BASE_MODELS)
        raise ModelError(
            f"unknown base model {name!r}: not in the registry ({known}), not a local folder, not an HF id (owner/name)"
        )
    target = prepared_dir(name, cache_dir)
    marker = target / PREPARED_MARKER
    if marker.exists():
        info = json.loads(marker.read_text())
        return ResolvedModel(name, str(target), info["source_sha256"], info)
    gguf = Path(entry.gguf_path())
    if progress:
        print(f"[prepare] {name}: hashing {gguf.name}", flush=True)
    source_sha = sha256_file(gguf)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with atomic_dir(target) as tmp:
        print(f"[prepare] {name}: converting GGUF -> HF folder", flush=True)
        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
        # The GGUF loader de-quantizes into a float model but leaves a quantizer attached that would
        # make save_pretrained refuse / mis-save; clear it so the folder is a plain HF checkpoint.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.is_quantized = False
        tok.chat_template = entry.chat_template
        # transformers' GGUF tokenizer conversion maps eos/pad to the wrong token (SmolLM2: <|im_start|>);
        # set the real end-of-turn token and keep config/generation config in line with it.
        tok.eos_token = entry.eos_token
        tok.pad_token = entry.eos_token
        eos_id = tok.convert_tokens_to_ids(entry.eos_token)
        model.config.eos_token_id = model.config.pad_token_id = eos_id
        model.generation_config.eos_token_id = model.generation_config.pad_token_id = eos_id
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        reloaded = AutoModelForCausalLM.from_pretrained(tmp)
        _verify_reload(model, reloaded, name)
        info = {
            "name": name,
            "description": entry.description,
            "source_file": gguf.name,
            "source_sha256": source_sha,
            "architecture": type(model).__name__,
            "parameters": sum(p.numel() for p in model.parameters()),
            "is_instruct": entry.is_instruct,
            "chat_template_note": "registry template (no injected default system prompt)",
        }
        write_json_atomic(tmp / PREPARED_MARKER, info)
    print(f"[prepare] {name}: ready at {target}", flush=True)
    return ResolvedModel(name, str(target), source_sha, info)


def _verify_reload(model, reloaded, name: str) -> None:
    import torch

    ids = torch.arange(1, 17).unsqueeze(0)
    with torch.no_grad():
        a = model(ids).logits.float()
        b = reloaded(ids).logits.float()
    if not torch.allclose(a, b, atol=1e-3, rtol=1e-3):
        raise ModelError(f"{name}: reloaded HF folder gives different logits (max diff {(a - b).abs().max():.3g})")


def load_for_inference(base_path: str, adapter_path: str | None, dtype: str, merge: bool):
    """(model, tokenizer) as evaluated and served: the base in `dtype` + the LoRA adapter, merged into the weights
    when `merge` (else left attached as a PeftModel)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if (
        adapter_path
        and not (Path(adapter_path) / "adapter_config.json").exists()
        and (Path(adapter_path) / "config.json").exists()
    ):
        base_path, adapter_path = adapter_path, None  # full fine-tuned weights (hf-full, or one of its checkpoints)
    tokenizer = AutoTokenizer.from_pretrained(base_path)
    model = AutoModelForCausalLM.from_pretrained(base_path, dtype=getattr(torch, dtype))
    if adapter_path:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter_path)
        if merge:
            model = model.merge_and_unload()
    model.eval()
    return model, tokenizer
