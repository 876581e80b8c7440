"""`musicprod export`: one system of an experiment (default: the champion) as a merged folder, GGUF files and an
Ollama Modelfile, each written atomically, then export.json listing every file with its sha256."""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

from export.layout import GGUF_TYPES, MANIFEST, SERVE_GGUF_TYPE, export_dir, gguf_path
from export.source import ExportError, resolve_source
from harness.io import now_iso, sha256_file, write_json_atomic

FORMATS = ("merged", "gguf", "ollama")


def parse_formats(values: list[str] | str | None) -> list[str]:
    """'merged,gguf' or ['merged', 'gguf'] -> known formats in pipeline order; ollama needs the GGUF."""
    if not values:
        return list(FORMATS)
    items = [v.strip() for value in ([values] if isinstance(values, str) else values) for v in value.split(",")]
    unknown = [v for v in items if v and v not in FORMATS]
    if unknown:
        raise ExportError(f"--format {', '.join(unknown)}: unknown (choose from {', '.join(FORMATS)})")
    wanted = set(items) | ({"gguf"} if "ollama" in items else set())
    return [f for f in FORMATS if f in wanted]


def _file_entries(folder: Path, root: Path) -> dict:
    return {
        str(p.relative_to(root)): {"bytes": p.stat().st_size, "sha256": sha256_file(p)}
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def run_export(
    experiment_dir: str | Path,
    system: str | None = None,
    formats: list[str] | str | None = None,
    out: str | Path | None = None,
    converter: str | None = None,
    dtype: str = "auto",
    gguf_types: tuple[str, ...] = GGUF_TYPES,
    converter_cache: str | Path | None = None,
    log=print,
) -> dict:
    t_start = time.perf_counter()
    formats = parse_formats(formats)
    src = resolve_source(experiment_dir, system)
    out = Path(out) if out else export_dir(src.experiment_dir, src.system)
    gguf_types = tuple(dict.fromkeys(gguf_types + ((SERVE_GGUF_TYPE,) if "ollama" in formats else ())))
    log(
        f"[export] {src.name}: {'champion' if src.is_champion else 'system'} {src.system} of {src.experiment_dir} "
        f"-> {out}/ ({', '.join(formats)})"
    )
    script = None
    if "gguf" in formats:  # fetch (or find) the converter before minutes of merging, so a bad setup fails fast
        from export.converter import resolve_converter

        script = resolve_converter(converter, converter_cache, log)
    manifest = {
        "experiment": src.experiment,
        "system": src.system,
        "is_champion": src.is_champion,
        "base_model": src.base_model,
        "base_source_sha256": src.base_source_sha256,
        "adapter_path": src.adapter_path,
        "formats": formats,
        "created_at": now_iso(),
        "steps": {},
    }
    from export.merged import write_merged

    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".merged-for-gguf-", dir=out) as scratch:
        # GGUF alone still converts from a merged folder: a scratch one, dropped afterwards.
        merged_dir = out / "merged" if "merged" in formats else Path(scratch) / "merged"
        card_files = [f"../gguf/{gguf_path(out, src.name, t).name}" for t in gguf_types] if "gguf" in formats else []
        manifest["steps"]["merged"] = write_merged(
            src, merged_dir, dtype, card_files if "merged" in formats else None, log
        )
        if "gguf" in formats:
            from export.gguf import write_gguf

            t0 = time.perf_counter()
            manifest["steps"]["gguf"] = write_gguf(src, merged_dir, out / "gguf", gguf_types, script, log)
            manifest["steps"]["gguf"]["seconds"] = round(time.perf_counter() - t0, 1)
        if "ollama" in formats:
            from export.ollama import write_ollama

            context = json.loads((merged_dir / "config.json").read_text()).get("max_position_embeddings", 2048)
            manifest["steps"]["ollama"] = write_ollama(
                src, merged_dir, gguf_path(out, src.name, SERVE_GGUF_TYPE), out / "ollama", int(context), log
            )
    if "merged" not in formats:
        manifest["steps"]["merged"]["kept"] = False  # only used for the conversion
    manifest["files"] = {}
    for fmt in formats:
        manifest["files"].update(_file_entries(out / fmt, out))
    manifest["wall_s"] = round(time.perf_counter() - t_start, 1)
    write_json_atomic(out / MANIFEST, manifest)
    log(f"[export] done in {manifest['wall_s']} s: {out / MANIFEST}")
    return manifest
