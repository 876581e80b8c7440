"""The llama.cpp backend (`musicprod serve --backend llamacpp`): the exported GGUF behind the same Flask API.

It is the torch Engine with another forward pass. Queue, dynamic batching, timeouts, cancellation, stop strings,
streaming deltas, sampling (greedy / temperature + top-p, the evaluation's repetition control, logprobs) and
metrics are the Engine's own code; only the model call differs: llama.cpp (llama-cpp-python's C API) decodes
every row of a batch in one `llama_decode`, each request in its own KV-cache sequence, and hands back one
logits row per request. Tokenizer and chat template come from the GGUF itself, i.e. what llama.cpp and Ollama
use for the same file.

Needs the optional extra: pip install -e '.[llamacpp]' (compiles llama.cpp).
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import os
import time
from pathlib import Path

from server.engine import Engine
from server.loading import LoadedModel, ServeError, ServeTarget

log = logging.getLogger("musicprod.server")

DEFAULT_CONTEXT = 2048  # per request (prompt + answer); the KV cache holds this for each of max_batch rows
BACKENDS = ("auto", "torch", "llamacpp")


def available() -> bool:
    return importlib.util.find_spec("llama_cpp") is not None


# ---- which GGUF --------------------------------------------------------------------------------------------
def exported_gguf(target: ServeTarget, gguf_type: str | None = None) -> Path | None:
    """The GGUF `musicprod export` wrote for this target (runs/<exp>/export/<system>/gguf/), if any."""
    from export.layout import SERVE_GGUF_TYPE, export_dir, gguf_name

    if target.champion is not None:  # from champion.json
        exp_dir, system = Path(target.source).parent, target.champion["system"]
        experiment = target.champion.get("experiment") or exp_dir.name
    elif target.adapter_path and Path(target.adapter_path).name == "adapter":  # runs/<exp>/<system>/adapter
        exp_dir, system = Path(target.adapter_path).parent.parent, Path(target.adapter_path).parent.name
        experiment = exp_dir.name
    else:
        return None
    folder = export_dir(exp_dir, system) / "gguf"
    for kind in (gguf_type or SERVE_GGUF_TYPE, "f16"):
        path = folder / gguf_name(f"{experiment}-{system}", kind)
        if path.is_file():
            return path
    return None


def resolve_gguf(target: ServeTarget, gguf: str | None, roots) -> Path:
    """--gguf FILE (inside the allowed roots), else the target's exported GGUF; a clear error otherwise."""
    if gguf:
        folder = roots.check(Path(gguf).expanduser().parent, "--gguf folder", "command line")
        path = folder / Path(gguf).name
        if not path.is_file():
            raise ServeError(f"--gguf {gguf!r}: no such file")
        return path
    path = exported_gguf(target)
    if path is None:
        exp = (target.champion or {}).get("experiment") or "EXPERIMENT"
        raise ServeError(
            f"{target.model_id}: no exported GGUF for the llama.cpp backend; run "
            f"`musicprod export {exp} --format gguf` first, or pass --gguf FILE"
        )
    roots.check(path.parent, "exported GGUF folder", target.source)
    return path


def choose_backend(requested: str, target: ServeTarget, gguf: str | None) -> tuple[str, str]:
    """(backend, why). auto: llama.cpp when it is installed and a GGUF is there to serve, else torch."""
    if requested == "torch":
        return "torch", "--backend torch"
    if requested == "llamacpp":
        if not available():
            raise ServeError("--backend llamacpp: llama-cpp-python is not installed (pip install -e '.[llamacpp]')")
        return "llamacpp", "--backend llamacpp"
    if not available():
        return "torch", "auto: llama-cpp-python is not installed"
    if gguf is None and exported_gguf(target) is None:
        return "torch", "auto: no exported GGUF for this model (musicprod export --format gguf)"
    return "llamacpp", "auto: llama-cpp-python installed and a GGUF export found"


# ---- tokenizer --------------------------------------------------------------------------------------------
class GGUFTokenizer:
    """The GGUF's tokenizer and chat template, with the few HF tokenizer methods the Engine calls."""

    def __init__(self, llm):
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        self.llm = llm
        meta = llm.metadata  # values are strings
        self.eos_token_id = llm.token_eos()
        self.pad_token_id = self.eos_token_id
        self.bos_token_id = llm.token_bos()
        self.add_bos = meta.get("tokenizer.ggml.add_bos_token", "false") == "true"
        self.chat_template = meta.get("tokenizer.chat_template")
        if not self.chat_template:
            raise ServeError("the GGUF has no tokenizer.chat_template (needed for messages); re-export it")
        self.bos_token = self._piece(self.bos_token_id)
        self.eos_token = self._piece(self.eos_token_id)

        def raise_exception(message):
            raise ValueError(message)

        # the environment transformers renders chat templates in (so the prompt text is the same)
        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        env.globals["raise_exception"] = raise_exception
        self._template = env.from_string(self.chat_template)

    def _piece(self, token_id: int) -> str:
        return "" if token_id < 0 else self.llm.detokenize([token_id], special=True).decode("utf-8", "replace")

    def apply_chat_template(self, messages, tokenize: bool = False, add_generation_prompt: bool = True) -> str:
        return self._template.render(
            messages=messages,
            add_generation_prompt=add_generation_prompt,
            bos_token=self.bos_token,
            eos_token=self.eos_token,
        )

    def __call__(self, text: str, add_special_tokens: bool = True) -> dict:
        # special=True: special-token text in the input becomes the token, as HF tokenizers do
        ids = self.llm.tokenize(text.encode("utf-8"), add_bos=add_special_tokens and self.add_bos, special=True)
        return {"input_ids": ids}

    def decode(self, ids, skip_special_tokens: bool = False) -> str:
        return self.llm.detokenize(list(ids), special=not skip_special_tokens).decode("utf-8", errors="replace")


# ---- batched decoding ---------------------------------------------------------------------------------------
class BatchedContext:
    """A llama.cpp context with one KV-cache sequence per batch row (n_seq_max = max batch)."""

    def __init__(self, llm, n_seq: int, n_ctx_seq: int, n_threads: int, n_batch: int = 512):
        import llama_cpp

        self.lib = llama_cpp
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = n_seq * n_ctx_seq
        params.n_batch = params.n_ubatch = n_batch
        params.n_seq_max = n_seq
        params.n_threads = params.n_threads_batch = n_threads
        params.kv_unified = False  # each sequence owns n_ctx_seq cells: a long request cannot starve the others
        params.no_perf = True
        self.ctx = llama_cpp.llama_init_from_model(llm.model, params)
        if not self.ctx:
            raise ServeError(f"llama.cpp could not create a context ({n_seq} x {n_ctx_seq} tokens)")
        self.n_batch, self.n_vocab, self.n_seq = n_batch, llm.n_vocab(), n_seq
        self.batch = llama_cpp.llama_batch_init(n_batch, 0, 1)
        self.mem = llama_cpp.llama_get_memory(self.ctx)

    def clear(self) -> None:
        self.lib.llama_memory_clear(self.mem, True)

    def drop(self, seq: int) -> None:
        self.lib.llama_memory_seq_rm(self.mem, seq, -1, -1)

    def decode(self, items: list[tuple[int, int, list[int]]]):
        """items: (sequence, position of the first token, tokens). Appends every item's tokens to its sequence
        (in chunks of n_batch tokens) and returns the logits after each item's last token, in item order."""
        import numpy as np

        flat = [
            (seq, pos + j, tok, j == len(toks) - 1, i)
            for i, (seq, pos, toks) in enumerate(items)
            for j, tok in enumerate(toks)
        ]
        out: list = [None] * len(items)
        b = self.batch
        for start in range(0, len(flat), self.n_batch):
            chunk = flat[start : start + self.n_batch]
            for k, (seq, pos, tok, want, _) in enumerate(chunk):
                b.token[k], b.pos[k], b.n_seq_id[k], b.logits[k] = tok, pos, 1, int(want)
                b.seq_id[k][0] = seq
            b.n_tokens = len(chunk)
            rc = self.lib.llama_decode(self.ctx, b)
            if rc != 0:
                raise RuntimeError(f"llama_decode returned {rc}" + (" (no KV-cache slot)" if rc == 1 else ""))
            for k, (_, _, _, want, item) in enumerate(chunk):
                if want:
                    ptr = self.lib.llama_get_logits_ith(self.ctx, k)
                    out[item] = np.ctypeslib.as_array(ptr, shape=(self.n_vocab,)).copy()
        return out

    def close(self) -> None:
        if self.ctx:
            self.lib.llama_batch_free(self.batch)
            self.lib.llama_free(self.ctx)
            self.ctx = None


class LlamaCppEngine(Engine):
    """Engine whose forward pass is llama.cpp (see the module docstring)."""

    backend = "llamacpp"

    def _eos_ids(self) -> set[int]:
        return set(self.loaded.load_info["eog_token_ids"])

    def _generate(self, batch) -> None:
        import torch

        from server.engine import _Row

        runner: BatchedContext = self.loaded.model
        rows = [_Row(r, self.eos_ids) for r in batch]
        seqs = list(range(len(rows)))  # row i decodes in KV sequence i
        runner.clear()
        self.active_rows = len(rows)
        logits = runner.decode([(s, 0, r.req.prompt_ids) for s, r in zip(seqs, rows)])
        positions = [len(r.req.prompt_ids) for r in rows]
        while rows:
            step = [self._step_row(r, torch.from_numpy(lg)) for r, lg in zip(rows, logits)]
            keep = []
            for i, r in enumerate(rows):
                if self._finish_if_done(r):
                    runner.drop(seqs[i])  # its KV cells are free for nobody else in this batch, but clean
                else:
                    keep.append(i)
            if not keep:
                break
            rows, seqs = [rows[i] for i in keep], [seqs[i] for i in keep]
            step, positions = [step[i] for i in keep], [positions[i] for i in keep]
            self.active_rows = len(rows)
            logits = runner.decode([(s, p, [t]) for s, p, t in zip(seqs, positions, step)])
            positions = [p + 1 for p in positions]


# ---- loading -------------------------------------------------------------------------------------------------
@contextlib.contextmanager
def model_params(use_extra_bufts: bool):
    """llama_cpp.Llama builds its model parameters from llama_model_default_params() and exposes no
    `use_extra_bufts` argument; this sets it for the models loaded inside the block.

    Why it is off by default: with llama.cpp's extra CPU buffer types (AMX tiles, repacked weights), every q8_0
    GGUF segfaulted in llama_decode on our 2-core machines (AVX512 + AMX_INT8 in a VM), through llama_cpp.Llama as
    much as through the batched context, and a q8_0 made by llama.cpp's own quantizer did too; without them q8_0
    serves, and no slower than f16 there (2026-12-07, docs/serving.md)."""
    import llama_cpp.llama as high_level

    lib = high_level.llama_cpp
    default = lib.llama_model_default_params

    def params():
        p = default()
        p.use_extra_bufts = use_extra_bufts
        return p

    lib.llama_model_default_params = params
    try:
        yield
    finally:
        lib.llama_model_default_params = default


def load_gguf(
    target: ServeTarget,
    gguf: Path,
    max_batch: int,
    n_threads: int = 0,
    context_length: int = DEFAULT_CONTEXT,
    extra_buffer_types: bool = False,
) -> LoadedModel:
    import llama_cpp

    t0 = time.perf_counter()
    threads = n_threads or os.cpu_count() or 1
    with model_params(use_extra_bufts=extra_buffer_types):
        llm = llama_cpp.Llama(model_path=str(gguf), n_ctx=64, n_batch=64, n_threads=threads, verbose=False)
    n_ctx_seq = min(context_length, llama_cpp.llama_model_n_ctx_train(llm.model))
    runner = BatchedContext(llm, max(1, max_batch), n_ctx_seq, threads)
    runner.owner = llm  # keep the model alive as long as the context
    tokenizer = GGUFTokenizer(llm)
    vocab = llama_cpp.llama_model_get_vocab(llm.model)
    eog = [i for i in range(llm.n_vocab()) if llama_cpp.llama_vocab_is_eog(vocab, i)]
    manifest = gguf.parent / "musicprod_export.json"
    exported = json.loads(manifest.read_text()).get("files", {}).get(gguf.name) if manifest.is_file() else None
    runner.decode([(0, 0, tokenizer("warm up", add_special_tokens=True)["input_ids"])])  # first decode allocates
    runner.clear()
    info = {
        "model_id": target.model_id,
        "backend": "llamacpp",
        "gguf": str(gguf),
        "gguf_bytes": gguf.stat().st_size,
        "gguf_export": exported,
        "base_model": target.base_model,
        "adapter_path": target.adapter_path,
        "source": target.source,
        "llama_cpp_python": llama_cpp.__version__,
        "n_threads": threads,
        "extra_buffer_types": extra_buffer_types,
        "n_seq_max": runner.n_seq,
        "context_length": n_ctx_seq,
        "eog_token_ids": eog,
        "dtype": None,
        "merge": "merged" if target.adapter_path else None,
        "load_s": round(time.perf_counter() - t0, 2),
    }
    log.info("loaded %s", json.dumps({k: v for k, v in info.items() if k != "eog_token_ids"}))
    return LoadedModel(runner, tokenizer, info)
