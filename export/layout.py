"""Where an export lands (default: inside the experiment, so `musicprod serve --runs-dir` may read it).

runs/<experiment>/export/<system>/
  export.json                     what was exported: source, files with sha256 and size, timings, checks
  merged/                         adapter merged into the base: safetensors, tokenizer, chat template, README.md
  gguf/<experiment>-<system>-f16.gguf, ...-q8_0.gguf    llama.cpp's converter (README.md next to them)
  ollama/Modelfile + the q8_0 GGUF   `ollama create NAME -f Modelfile`
"""

from __future__ import annotations

from pathlib import Path

MANIFEST = "export.json"
GGUF_TYPES = ("f16", "q8_0")  # llama.cpp converter --outtype values we write
SERVE_GGUF_TYPE = "q8_0"  # what the llama.cpp backend and Ollama use by default: half the bytes, near-lossless


def export_dir(experiment_dir: str | Path, system: str) -> Path:
    return Path(experiment_dir) / "export" / system


def gguf_name(name: str, outtype: str) -> str:
    return f"{name}-{outtype}.gguf"


def gguf_path(out_dir: str | Path, name: str, outtype: str) -> Path:
    return Path(out_dir) / "gguf" / gguf_name(name, outtype)
