"""Make a saved tokenizer readable by llama.cpp's converter as what it is.

transformers' GGUF loader (how `harness.models.prepare` builds the base folder from a GGUF) writes a byte-level
BPE vocabulary (GPT-2 style, tokens like 'Ġthe') with `byte_fallback: true` and a SentencePiece-style decoder
(ByteFallback, Fuse, Replace '▁'). llama.cpp's converter takes exactly that combination for a Llama
SentencePiece vocabulary and writes `tokenizer.ggml.model = llama`, which tokenizes byte-level text wrongly in
llama.cpp and Ollama. The plain byte-level form (no byte fallback, a ByteLevel decoder) is what the original
model ships with; the converter then recognises the pre-tokenizer (SmolLM2: `gpt2` / `smollm`).

The rewrite is kept only if the tokenizer encodes and decodes a set of probe strings exactly as before.
"""

from __future__ import annotations

import json
from pathlib import Path

PROBES = [
    "Hello world! How do I set a compressor's attack time?",
    "Wie stelle ich einen Limiter ein? Äöü ß € – „Anführungszeichen“",
    "  two leading spaces\n\n\ttab, newline   and trailing spaces  ",
    "-14 LUFS, 1.5 dB, 120 BPM, 44.1 kHz; a 4:1 ratio at -18 dBFS",
    "emoji 🎛️🎚️ and CJK 音楽制作 and ÿ\u00a0nbsp",
    "<|im_start|>user\nWhat is sidechain compression?<|im_end|>\n<|im_start|>assistant\n",
    "code: def f(x):\n    return x ** 2  # comment",
]

_BYTE_LEVEL_DECODER = {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True}


def _is_byte_level_with_fallback(tok: dict) -> bool:
    model, pre = tok.get("model") or {}, tok.get("pre_tokenizer") or {}
    pre_types = {pre.get("type")} | {p.get("type") for p in pre.get("pretokenizers", []) if isinstance(p, dict)}
    return (
        model.get("type") == "BPE"
        and model.get("byte_fallback") is True
        and "ByteLevel" in pre_types
        and (tok.get("decoder") or {}).get("type") == "Sequence"
    )


def _roundtrip(folder: Path) -> list[tuple[list[int], str]]:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    out = []
    for text in PROBES:
        ids = tok(text, add_special_tokens=False)["input_ids"]
        out.append((ids, tok.decode(ids)))
    return out


def normalize_byte_level(folder: str | Path) -> str:
    """Rewrite folder/tokenizer.json in the plain byte-level form when it is the GGUF loader's variant; returns
    what was done ('rewritten', 'unchanged: ...')."""
    path = Path(folder) / "tokenizer.json"
    if not path.is_file():
        return "unchanged: no tokenizer.json"
    original = path.read_text(encoding="utf-8")
    tok = json.loads(original)
    if not _is_byte_level_with_fallback(tok):
        return "unchanged: not a byte-level BPE with byte fallback"
    before = _roundtrip(path.parent)
    tok["model"]["byte_fallback"] = False
    tok["decoder"] = dict(_BYTE_LEVEL_DECODER)
    path.write_text(json.dumps(tok, ensure_ascii=False, indent=2), encoding="utf-8")
    after = _roundtrip(path.parent)
    if after != before:  # never ship a tokenizer that behaves differently from the one that was evaluated
        path.write_text(original, encoding="utf-8")
        bad = next(PROBES[i] for i, (a, b) in enumerate(zip(before, after)) if a != b)
        return f"unchanged: the byte-level form tokenizes {bad!r} differently"
    return "rewritten: byte-level BPE without byte fallback (llama.cpp reads it as gpt2)"
