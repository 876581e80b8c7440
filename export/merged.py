"""`--format merged`: the adapter merged into the base weights, saved as a plain transformers folder.

The merge goes through PEFT (`merge_and_unload`) on the same loader evaluation and serving use
(`harness.models.load_for_inference`); the saved folder is loaded back and must give the logits of base + attached
adapter before anything is published.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from export.card import model_card
from export.source import ExportError, ExportSource
from export.tokenizer import normalize_byte_level
from harness.io import atomic_dir, write_json_atomic

VERIFY_PROMPT = "How do I set the attack time on a bus compressor? Wie stelle ich einen Limiter ein?"
# fp32 merge + save + reload differs only by the merge's own rounding (measured ~1e-5 on SmolLM2 135M);
# a wrong merge (adapter scaled, skipped or applied twice) moves logits by whole units.
RELOAD_ATOL = {"float32": 1e-3, "bfloat16": 0.25, "float16": 0.05}


def base_dtype(folder: str) -> str:
    """The dtype the base checkpoint is stored in (merging in it loses nothing the base had)."""
    try:
        config = json.loads((Path(folder) / "config.json").read_text())
    except (OSError, json.JSONDecodeError):
        return "float32"
    dtype = config.get("dtype") or config.get("torch_dtype") or "float32"
    return dtype if dtype in RELOAD_ATOL else "float32"


def _logits(model, ids):
    import torch

    with torch.inference_mode():
        return model(ids).logits.float()


def write_merged(
    src: ExportSource, out: Path, dtype: str = "auto", card_files: list[str] | None = None, log=print
) -> dict:
    """Write out/ (atomically): merged safetensors, tokenizer + chat template, generation config, README.md."""
    from transformers import AutoModelForCausalLM

    from harness.models import load_for_inference

    t0 = time.perf_counter()
    dtype = base_dtype(src.base_model_path) if dtype == "auto" else dtype
    if dtype not in RELOAD_ATOL:
        raise ExportError(f"--dtype {dtype!r}: expected auto, {', '.join(RELOAD_ATOL)}")
    what = f"{src.base_model} + adapter {src.adapter_path}" if src.adapter_path else src.base_model
    log(f"[export] merged: loading {what} ({dtype})")
    model, tokenizer = load_for_inference(src.base_model_path, src.adapter_path, dtype, merge=False)
    if not tokenizer.chat_template:
        raise ExportError(
            f"{src.base_model_path}: tokenizer has no chat template; the export would not know how "
            "to turn messages into a prompt"
        )
    ids = tokenizer(VERIFY_PROMPT, return_tensors="pt")["input_ids"]
    reference = _logits(model, ids)  # base + attached adapter: what was evaluated
    adapter_config = None
    if src.adapter_path and (Path(src.adapter_path) / "adapter_config.json").is_file():
        adapter_config = json.loads((Path(src.adapter_path) / "adapter_config.json").read_text())
        model = model.merge_and_unload()
    with atomic_dir(out) as tmp:
        log(f"[export] merged: saving to {out}")
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        tokenizer_note = normalize_byte_level(tmp)
        reloaded = AutoModelForCausalLM.from_pretrained(tmp, dtype=model.dtype)
        diff = float((_logits(reloaded, ids) - reference).abs().max())
        if not diff <= RELOAD_ATOL[dtype]:
            raise ExportError(
                f"{src.name}: the merged folder gives different logits from base + adapter "
                f"(max |diff| {diff:.3g} > {RELOAD_ATOL[dtype]}); nothing written"
            )
        files = sorted(p.name for p in tmp.iterdir()) + ["README.md", "musicprod_export.json"]
        (tmp / "README.md").write_text(
            model_card(src, dtype=dtype, adapter_config=adapter_config, files=files + list(card_files or [])),
            encoding="utf-8",
        )
        info = {
            "dtype": dtype,
            "parameters": sum(p.numel() for p in reloaded.parameters()),
            "adapter_merged": adapter_config is not None,
            "tokenizer": tokenizer_note,
            "reload_max_abs_logit_diff": diff,
            "seconds": round(time.perf_counter() - t0, 1),
        }
        write_json_atomic(
            tmp / "musicprod_export.json",
            {
                "experiment": src.experiment,
                "system": src.system,
                "base_model": src.base_model,
                "base_source_sha256": src.base_source_sha256,
                "adapter_path": src.adapter_path,
                **info,
            },
        )
    log(f"[export] merged: {out} ({info['seconds']} s; reload max |logit diff| {diff:.2g}; tokenizer {tokenizer_note})")
    return info
