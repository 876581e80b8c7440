"""Take a fine-tuned model out of musicprod: a merged transformers folder with a model card, GGUF files (f16,
q8_0) from llama.cpp's own converter, an Ollama Modelfile. Reads runs/ (via harness); the server may read what
this writes. Import direction: export imports harness, never the other way round (except the command line, harness/cli/)."""

from export.core import FORMATS, parse_formats, run_export
from export.source import ExportError, ExportSource, resolve_source

__all__ = ["FORMATS", "ExportError", "ExportSource", "parse_formats", "resolve_source", "run_export"]
