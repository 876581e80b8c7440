"""`--format gguf`: f16 and q8_0 GGUF files through llama.cpp's converter, checked before they are published.

Checks: the file's metadata (architecture, the tokenizer model that llama.cpp will use, the chat template and
end-of-turn token) and, for f16, the weights themselves: transformers loads the GGUF back (`gguf_file=`) and its
logits must match the merged folder's within f16 rounding.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from export import converter as conv
from export.layout import gguf_name
from export.source import ExportError, ExportSource
from harness.io import atomic_dir, write_json_atomic

# f16 stores each weight with a 2^-11 relative error; over SmolLM2's 30 layers that moves logits by ~0.05
# (measured 0.02-0.06). A transposed, permuted or missing tensor moves them by whole units.
F16_LOGIT_ATOL = 0.5


def read_metadata(path: Path) -> dict:
    """The GGUF's key/value metadata (minus the vocabulary arrays) with the gguf package's reader."""
    from gguf import GGUFReader

    reader = GGUFReader(str(path))
    skip = ("tokenizer.ggml.tokens", "tokenizer.ggml.scores", "tokenizer.ggml.token_type", "tokenizer.ggml.merges")
    meta = {}
    for key, field in reader.fields.items():
        if key in skip:
            continue
        try:
            meta[key] = field.contents()
        except Exception:  # a field type this gguf version cannot render is not needed here
            continue
    meta["_tensor_count"] = len(reader.tensors)
    return meta


def check_metadata(meta: dict, merged_dir: Path, path: Path) -> None:
    """Refuse a file llama.cpp would tokenize or stop wrongly."""
    tok = (
        json.loads((merged_dir / "tokenizer.json").read_text(encoding="utf-8"))
        if (merged_dir / "tokenizer.json").is_file()
        else {}
    )
    pre = tok.get("pre_tokenizer") or {}
    byte_level = pre.get("type") == "ByteLevel" or any(
        isinstance(p, dict) and p.get("type") == "ByteLevel" for p in pre.get("pretokenizers", [])
    )
    if byte_level and meta.get("tokenizer.ggml.model") != "gpt2":
        raise ExportError(
            f"{path}: the tokenizer is byte-level BPE but the GGUF says tokenizer.ggml.model = "
            f"{meta.get('tokenizer.ggml.model')!r}; llama.cpp would tokenize it wrongly"
        )
    if not meta.get("tokenizer.chat_template"):
        raise ExportError(
            f"{path}: no tokenizer.chat_template in the GGUF (llama.cpp / Ollama could not build prompts)"
        )
    config = json.loads((merged_dir / "config.json").read_text())
    eos = config.get("eos_token_id")
    eos = eos[0] if isinstance(eos, list) else eos
    if eos is not None and meta.get("tokenizer.ggml.eos_token_id") != eos:
        raise ExportError(
            f"{path}: eos token id {meta.get('tokenizer.ggml.eos_token_id')} in the GGUF, {eos} in the "
            "model: generation would not stop at the end of a turn"
        )


def f16_logit_diff(merged_dir: Path, gguf_file: Path) -> float:
    """max |logit difference| between the merged folder and the GGUF loaded back by transformers."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from export.merged import VERIFY_PROMPT

    tok = AutoTokenizer.from_pretrained(merged_dir)
    ids = tok(VERIFY_PROMPT, return_tensors="pt")["input_ids"]
    ref = AutoModelForCausalLM.from_pretrained(merged_dir, dtype=torch.float32)
    back = AutoModelForCausalLM.from_pretrained(gguf_file.parent, gguf_file=gguf_file.name, dtype=torch.float32)
    with torch.inference_mode():
        return float((ref(ids).logits - back(ids).logits).abs().max())


def write_gguf(
    src: ExportSource, merged_dir: Path, out: Path, outtypes: tuple[str, ...], script: Path, log=print
) -> dict:
    """Write out/ (atomically): <name>-<type>.gguf for each type + README.md; returns per-file info."""
    info: dict = {"converter": conv.describe(script), "files": {}}
    with atomic_dir(out) as tmp:
        for outtype in outtypes:
            t0 = time.perf_counter()
            path = tmp / gguf_name(src.name, outtype)
            log(f"[export] gguf {outtype}: converting {merged_dir.name}/ -> {path.name}")
            conv.convert(script, merged_dir, path, outtype, log)
            meta = read_metadata(path)
            check_metadata(meta, merged_dir, path)
            entry = {
                "bytes": path.stat().st_size,
                "convert_s": round(time.perf_counter() - t0, 1),
                "architecture": meta.get("general.architecture"),
                "tensors": meta["_tensor_count"],
                "tokenizer_model": meta.get("tokenizer.ggml.model"),
                "tokenizer_pre": meta.get("tokenizer.ggml.pre"),
                "context_length": meta.get(f"{meta.get('general.architecture')}.context_length"),
            }
            if outtype == "f16":
                t1 = time.perf_counter()
                diff = f16_logit_diff(merged_dir, path)
                entry["reload_max_abs_logit_diff"] = diff
                log(
                    f"[export] gguf f16: loaded back by transformers, max |logit diff| vs merged {diff:.3g} "
                    f"({time.perf_counter() - t1:.1f} s)"
                )
                if not diff <= F16_LOGIT_ATOL:
                    raise ExportError(
                        f"{path.name}: loaded back, its logits differ from the merged model's by "
                        f"{diff:.3g} (> {F16_LOGIT_ATOL}); the conversion is wrong, nothing written"
                    )
            info["files"][path.name] = entry
            log(
                f"[export] gguf {outtype}: {path.name} {entry['bytes'] / 2**20:.1f} MiB in {entry['convert_s']} s "
                f"(tokenizer {entry['tokenizer_model']}/{entry['tokenizer_pre']})"
            )
        (tmp / "README.md").write_text(_readme(src, info), encoding="utf-8")
        write_json_atomic(tmp / "musicprod_export.json", {"experiment": src.experiment, "system": src.system, **info})
    return info


def _readme(src: ExportSource, info: dict) -> str:
    rows = [
        f"| `{name}` | {e['bytes'] / 2**20:.1f} MiB | {e['tokenizer_model']}/{e['tokenizer_pre']} |"
        for name, e in info["files"].items()
    ]
    return "\n".join(
        [
            f"# {src.name} (GGUF)",
            "",
            f"Converted by llama.cpp's `convert_hf_to_gguf.py` ({info['converter']}) from the merged folder "
            "`../merged/` (whose README.md is the model card: base model, data, recipe, held-out results, licence).",
            "",
            "| file | size | tokenizer |",
            "| --- | --- | --- |",
            *rows,
            "",
            "f16 keeps every weight at half precision (checked: loaded back by transformers, same logits within f16 "
            "rounding); q8_0 is 8-bit (half the bytes, faster on CPU, near-lossless).",
            "",
            "```bash",
            f"llama-cli -m {gguf_name(src.name, 'q8_0')} -cnv        # llama.cpp",
            f"musicprod serve --backend llamacpp --experiment {src.experiment}   # same API as the torch server",
            "```",
            "",
        ]
    )
