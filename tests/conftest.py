import json
import os
from pathlib import Path

import pytest

from harness import set_offline_env

REPO = Path(__file__).resolve().parent.parent
set_offline_env()


@pytest.fixture(scope="session", autouse=True)
def private_cache(tmp_path_factory):
    """Eval and coverage caches of the test session live in a temp folder, never in the user's cache."""
    os.environ["MUSICPROD_CACHE"] = str(tmp_path_factory.mktemp("musicprod-cache"))


def make_rows(n: int = 24) -> list[dict]:
    topics = ["mixing", "mastering", "ableton"]
    return [
        {
            "id": f"t-{i:03d}",
            "lang": "de" if i % 4 == 0 else "en",
            "topic": topics[i % 3],
            "instruction": f"How should I set the compressor ratio for source {i}?",
            "response": "A ratio of 4:1 means every 4 dB above the threshold comes out as 1 dB. "
            "Use 2:1 for gentle bus glue and 8:1 or more for peaky sources.",
        }
        for i in range(n)
    ]


@pytest.fixture
def tiny_dataset(tmp_path) -> Path:
    path = tmp_path / "train.json"
    path.write_text(json.dumps(make_rows()))
    return path


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory) -> str:
    """The real prepared SmolLM2 (converted once per session; reuses the user's cache when present)."""
    from harness.models import prepare

    cache = os.environ.get("MUSICPROD_TEST_MODEL_CACHE", os.path.expanduser("~/.cache/musicprod/models"))
    prepare("smollm2-135m-instruct", cache, progress=False)
    return cache


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, model_cache) -> Path:
    """A tiny randomly initialised Llama built from a config, with SmolLM2's tokenizer and template.

    Widths are multiples of 64: bitsandbytes' CPU 4-bit kernels quantize in blocks of 64 inputs.
    """
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(Path(model_cache) / "smollm2-135m-instruct")
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
        tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    out = tmp_path_factory.mktemp("tiny-llama")
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out
