"""Typed experiment configuration: dataclasses with help texts, YAML files and key=value overrides.

One YAML file under configs/ is one experiment. Unknown keys are errors, in files and overrides alike.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from harness.registry import DEFAULT_SYSTEMS, SYSTEM_NAMES


class ConfigError(ValueError):
    """A config file or override that cannot be used; the message names the key and the source."""


def _field(default, help: str, **kw):
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata={"help": help}, **kw)
    return field(default=default, metadata={"help": help}, **kw)


@dataclass
class ModelConfig:
    name: str = _field(
        "smollm2-135m-instruct",
        "Base model: a registry name (see `musicprod model list`), an HF model id or a local HF folder.",
    )
    cache_dir: str = _field("~/.cache/musicprod/models", "Where prepared (GGUF-converted) base models live.")


@dataclass
class DataConfig:
    train_path: str = _field(
        "data/music_production_dataset.json",
        "Training set: JSON list of {id, lang, topic, instruction, response, ...}.",
    )
    validation_fraction: float = _field(
        0.05, "Share of the training set held back (stratified by topic) for validation loss."
    )
    augmented_path: str = _field(
        "",
        "Paraphrase augmentations of the training set (JSON list, each naming its seed item in "
        "augmented_from; '' = none). Those of validation items are left out.",
    )
    train_on_seed: bool = _field(
        True,
        "Train on the seed items themselves (false: only on their augmentations, about "
        "half the tokens per epoch; the validation split is the seed's either way).",
    )
    max_train_items: int = _field(
        0,
        "Use only the first N training items after the split (0 = all; their augmentations "
        "follow them). For quick runs.",
    )
    system_prompt: str = _field(
        "", "System message put before every instruction ('' = none; no template default is injected)."
    )


@dataclass
class LoraSettings:
    r: int = _field(16, "LoRA rank.")
    alpha: int = _field(32, "LoRA alpha (scaling = alpha / r).")
    dropout: float = _field(0.0, "LoRA dropout. 0 lets Unsloth use its fast path; HF gets the same value.")
    target_modules: list[str] = _field(
        ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        "Linear layers that get LoRA adapters.",
    )


@dataclass
class QuantSettings:
    quant_type: str = _field("nf4", "4-bit quantization type for *-qlora systems: nf4 or fp4.")
    double_quant: bool = _field(True, "Quantize the quantization constants too (QLoRA double quantization).")
    compute_dtype: str = _field("bfloat16", "Dtype of the de-quantized matmuls: bfloat16 or float32.")


@dataclass
class TrainSettings:
    epochs: float = _field(1.0, "Passes over the training split.")
    max_steps: int = _field(-1, "Stop after this many optimizer steps (-1 = run all epochs).")
    learning_rate: float = _field(2e-4, "Peak learning rate (adapter systems).")
    full_learning_rate: float = _field(
        2e-4,
        "Peak learning rate of full fine-tuning systems (hf-full): lower than a LoRA rate (the usual rule is a "
        "tenth); 2e-4, a fifth of the recipe's LoRA 1e-3, measured on the dev set (one epoch: recall 0.086, "
        "MC 0.367, vs LoRA's 0.033 / 0.344).",
    )
    lr_scheduler: str = _field("cosine", "LR schedule: linear, cosine or constant.")
    warmup_ratio: float = _field(0.05, "Share of steps spent warming the LR up.")
    batch_size: int = _field(8, "Sequences per device per micro-batch.")
    grad_accum: int = _field(1, "Micro-batches accumulated per optimizer step.")
    max_length: int = _field(512, "Longest tokenized prompt+answer; longer examples are truncated.")
    seed: int = _field(42, "Seed for data order, LoRA init and dropout.")
    bf16: bool = _field(True, "Train in bfloat16 (weights and activations).")
    logging_steps: int = _field(5, "Record the loss every N optimizer steps.")
    gradient_checkpointing: bool = _field(
        False,
        "Recompute activations in the backward pass: peak RSS 2.9 instead of 4.6 GiB for hf-lora on 2 cores, "
        "at 15-36 % fewer tokens/s (docs/training.md); off by default.",
    )
    num_threads: int = _field(0, "torch CPU threads (0 = one per physical core).")
    group_by_length: bool = _field(True, "Batch similar lengths together to cut padding.")
    adapter_dtype: str = _field(
        "auto",
        "Dtype of the LoRA weights: float32 (PEFT's default), bfloat16, or auto = bfloat16 "
        "on CPU when train.bf16 (no fp32<->bf16 copies of activations around every adapter: "
        "+30 % tokens/s on 2 cores), float32 on CUDA (what the Unsloth comparison uses).",
    )
    compile: str = _field(
        "auto",
        "torch.compile each transformer layer (inductor): true, false, or auto = on CPU only "
        "(fused elementwise kernels: +45-75 % tokens/s on 2 cores after a ~30 s compile; on CUDA the "
        "HF systems stay stock for the Unsloth comparison).",
    )
    allocator: str = _field(
        "auto",
        "malloc of the training processes: auto (tcmalloc where installed, else glibc kept "
        "from unmapping freed activations), tcmalloc, or glibc (the plain default).",
    )
    save_steps: int = _field(
        0,
        "Save a resumable checkpoint every N optimizer steps (0 = none) under "
        "<system>/trainer/checkpoint-N; `musicprod eval --only SYSTEM@N` evaluates one.",
    )
    save_total_limit: int = _field(0, "Keep at most this many checkpoints (0 = all).")
    resume: bool = _field(False, "Continue from the newest checkpoint of this system (`musicprod train ... --resume`).")
    report_to: str = _field(
        "none",
        "Experiment tracker the Trainer logs to: none, tensorboard or trackio (both offline; "
        "logs under <system>/trainer/). Needs the tracker's package installed.",
    )


@dataclass
class DecodingSettings:
    do_sample: bool = _field(False, "Sample (true) or decode greedily (false).")
    temperature: float = _field(0.0, "Sampling temperature (with do_sample).")
    top_p: float = _field(1.0, "Nucleus sampling mass (with do_sample).")
    repetition_penalty: float = _field(
        1.0,
        "Divide (positive) logits of tokens already in the answer by this "
        "(CTRL-style; 1.0 = off). Applies to the generated answer, not the prompt.",
    )
    no_repeat_ngram_size: int = _field(0, "Never repeat an n-gram of this size within the answer (0 = off).")
    max_new_tokens: int = _field(256, "Longest generated answer in tokens.")


@dataclass
class EvalSettings:
    batch_size: int = _field(
        64,
        "Held-out items generated (left-padded) or scored together (64: 8 % faster "
        "than 32 on 2 CPU cores; bf16 outputs depend slightly on the batch).",
    )
    decoding: DecodingSettings = field(
        default_factory=DecodingSettings,
        metadata={
            "help": "How answers are generated; recorded in the eval summary and "
            "champion.json, and the server's default."
        },
    )
    split: str = _field(
        "heldout",
        "Which question set: heldout (benchmarks/musicprod/data, the once-at-the-end "
        "figures) or dev (benchmarks/musicprod/data/dev, where recipes and checkpoints are chosen).",
    )
    cache_base: bool = _field(
        True,
        "Reuse the base model's evaluation across experiments (keyed by base weights, "
        "question files and these settings; under <model cache>/eval-cache/).",
    )
    lookup: bool = _field(
        True,
        "Also evaluate the lookup reference: the training answer whose instruction is "
        "nearest to the question (MiniLM), i.e. what the training data holds.",
    )
    limit: int = _field(
        0, "Evaluate only the first N items of each task (0 = all). Quick checks only: no headline figures."
    )
    dtype: str = _field("bfloat16", "Weights dtype during evaluation: bfloat16 or float32.")
    merge_adapter: bool = _field(
        True, "Merge the LoRA adapter into the base weights before evaluating (faster; same outputs up to rounding)."
    )
    include_base: bool = _field(
        True, "Also evaluate the un-adapted base model, the reference for every paired comparison."
    )
    tasks: list[str] = _field(
        ["musicprod_qa", "musicprod_mc"], "lm-eval tasks (from benchmarks/) run for every target."
    )
    bootstrap_resamples: int = _field(10000, "Bootstrap resamples for 95 % CIs and paired tests.")


@dataclass
class DistributedSettings:
    launcher: str = _field(
        "python",
        "How each system's training process starts: python (one process, one device) or "
        "accelerate (`accelerate launch`: num_processes data-parallel ranks, DDP or FSDP).",
    )
    num_processes: int = _field(
        1,
        "Ranks per system under the accelerate launcher (one per GPU; CPU processes on the "
        "gloo backend without CUDA). Global batch = num_processes x train.batch_size x "
        "train.grad_accum. Unsloth systems are skipped when > 1 (its open-source build is single-GPU).",
    )
    accelerate_config: str = _field(
        "auto",
        "accelerate config file: auto = configs/accelerate/ddp.yaml with CUDA, "
        "configs/accelerate/ddp-cpu.yaml without; configs/accelerate/fsdp.yaml shards the "
        "base model across GPUs when it does not fit one.",
    )


@dataclass
class ExperimentConfig:
    name: str = _field("default", "Experiment name: results go to <runs_dir>/<name>/.")
    runs_dir: str = _field("runs", "Root folder of run records and adapters.")
    systems: list[str] = _field(
        list(DEFAULT_SYSTEMS), "Systems under test, from the registry: " + ", ".join(SYSTEM_NAMES) + "."
    )
    model: ModelConfig = field(default_factory=ModelConfig, metadata={"help": "Base model."})
    data: DataConfig = field(default_factory=DataConfig, metadata={"help": "Training data."})
    lora: LoraSettings = field(default_factory=LoraSettings, metadata={"help": "LoRA adapter shape."})
    quant: QuantSettings = field(
        default_factory=QuantSettings, metadata={"help": "4-bit settings of the QLoRA systems."}
    )
    train: TrainSettings = field(
        default_factory=TrainSettings, metadata={"help": "Optimisation settings shared by every system."}
    )
    eval: EvalSettings = field(
        default_factory=EvalSettings, metadata={"help": "Held-out evaluation (lm-eval), the same for every system."}
    )
    distributed: DistributedSettings = field(
        default_factory=DistributedSettings, metadata={"help": "Multi-process training through accelerate (DDP, FSDP)."}
    )

    @property
    def experiment_dir(self) -> Path:
        return Path(self.runs_dir) / self.name


def _hints(cls) -> dict:
    return typing.get_type_hints(cls)


def _coerce(value, hint, where: str):
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return _build(hint, value, where)
    if origin is list:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        (item,) = typing.get_args(hint)
        return [_coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
    if hint is bool:
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true/false, got {value!r}")
    if hint in (int, float):
        if isinstance(value, bool):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        try:
            number = hint(value) if hint is float else int(str(value), 0) if isinstance(value, str) else value
        except ValueError:
            raise ConfigError(f"{where}: expected {hint.__name__}, got {value!r}") from None
        if hint is int and (not isinstance(number, int) or isinstance(value, float) and value != int(value)):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return hint(number)
    if hint is str:
        if not isinstance(value, (str, int, float)):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return str(value)
    raise ConfigError(f"{where}: unsupported type {hint}")


def _build(cls, values: dict, where: str):
    hints = _hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for key in values:
        if key not in names:
            raise ConfigError(f"{where}: unknown key {key!r} (known: {', '.join(sorted(names))})")
    kwargs = {k: _coerce(v, hints[k], f"{where}.{k}" if where else k) for k, v in values.items()}
    return cls(**kwargs)


def validate(cfg: ExperimentConfig) -> ExperimentConfig:
    for s in cfg.systems:
        if s not in SYSTEM_NAMES:
            raise ConfigError(f"systems: unknown system {s!r} (known: {', '.join(SYSTEM_NAMES)})")
    if not 0 <= cfg.data.validation_fraction < 1:
        raise ConfigError("data.validation_fraction: must be in [0, 1)")
    if cfg.train.lr_scheduler not in ("linear", "cosine", "constant", "constant_with_warmup"):
        raise ConfigError(f"train.lr_scheduler: unknown schedule {cfg.train.lr_scheduler!r}")
    if cfg.quant.quant_type not in ("nf4", "fp4"):
        raise ConfigError(f"quant.quant_type: must be nf4 or fp4, got {cfg.quant.quant_type!r}")
    if cfg.quant.compute_dtype not in ("bfloat16", "float32", "float16"):
        raise ConfigError(f"quant.compute_dtype: unknown dtype {cfg.quant.compute_dtype!r}")
    if cfg.eval.dtype not in ("bfloat16", "float32"):
        raise ConfigError(f"eval.dtype: must be bfloat16 or float32, got {cfg.eval.dtype!r}")
    for key in ("batch_size", "bootstrap_resamples"):
        if getattr(cfg.eval, key) < 1:
            raise ConfigError(f"eval.{key}: must be >= 1")
    validate_decoding(cfg.eval.decoding, "eval.decoding")
    if cfg.eval.split not in ("heldout", "dev"):
        raise ConfigError(f"eval.split: must be heldout or dev, got {cfg.eval.split!r}")
    for key in ("batch_size", "grad_accum", "max_length", "logging_steps"):
        if getattr(cfg.train, key) < 1:
            raise ConfigError(f"train.{key}: must be >= 1")
    if cfg.train.adapter_dtype not in ("auto", "float32", "bfloat16"):
        raise ConfigError(f"train.adapter_dtype: must be auto, float32 or bfloat16, got {cfg.train.adapter_dtype!r}")
    if cfg.train.allocator not in ("auto", "tcmalloc", "glibc"):
        raise ConfigError(f"train.allocator: must be auto, tcmalloc or glibc, got {cfg.train.allocator!r}")
    if cfg.train.report_to not in ("none", "tensorboard", "trackio"):
        raise ConfigError(f"train.report_to: must be none, tensorboard or trackio, got {cfg.train.report_to!r}")
    if str(cfg.train.compile).lower() not in ("auto", "true", "false"):
        raise ConfigError(f"train.compile: must be auto, true or false, got {cfg.train.compile!r}")
    _validate_distributed(cfg.distributed)
    return cfg


def validate_decoding(d: DecodingSettings, where: str) -> None:
    if d.max_new_tokens < 1:
        raise ConfigError(f"{where}.max_new_tokens: must be >= 1")
    if d.repetition_penalty <= 0 or d.temperature < 0 or not 0 < d.top_p <= 1 or d.no_repeat_ngram_size < 0:
        raise ConfigError(
            f"{where}: need repetition_penalty > 0, temperature >= 0, 0 < top_p <= 1, "
            f"no_repeat_ngram_size >= 0 (got {d})"
        )


def _validate_distributed(d: DistributedSettings) -> None:
    if d.launcher not in ("python", "accelerate"):
        raise ConfigError(f"distributed.launcher: must be python or accelerate, got {d.launcher!r}")
    if d.num_processes < 1:
        raise ConfigError(f"distributed.num_processes: must be >= 1, got {d.num_processes}")
    if d.num_processes > 1 and d.launcher != "accelerate":
        raise ConfigError(
            f"distributed.num_processes={d.num_processes} needs distributed.launcher=accelerate "
            "(the python launcher starts one process)"
        )
    if d.accelerate_config != "auto" and not Path(d.accelerate_config).is_file():
        raise ConfigError(
            f"distributed.accelerate_config: no such file {d.accelerate_config!r} (see configs/accelerate/)"
        )


def parse_overrides(overrides: list[str]) -> dict:
    """torchtune-style `a.b=value` strings -> nested dict. Values are parsed as YAML scalars/lists."""
    nested: dict = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected key=value")
        key, raw = item.split("=", 1)
        value = yaml.safe_load(raw) if raw.strip() else ""
        node = nested
        *parents, leaf = key.strip().split(".")
        for p in parents:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {p} is not a section")
        node[leaf] = value
    return nested


def _merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for k, v in extra.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def read_yaml_mapping(path: str | Path, what: str = "config") -> dict:
    try:
        values = yaml.safe_load(Path(path).read_text()) or {}
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such {what} file") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: invalid YAML: {e}") from None
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: top level must be a mapping")
    return values


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> ExperimentConfig:
    """Load an experiment from YAML (or the defaults), then apply key=value overrides."""
    values: dict = {}
    source = "defaults"
    if path is not None:
        source = str(path)
        values = read_yaml_mapping(path)
        values.setdefault("name", Path(path).stem)
    try:
        values = _merge(values, parse_overrides(overrides or []))
        return validate(_build(ExperimentConfig, values, ""))
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}") from None


def experiment_config(experiment_dir: str | Path, overrides: list[str] | None = None) -> ExperimentConfig:
    """The config an experiment was trained with (from its run records), with key=value overrides on top."""
    import json

    record = next(iter(sorted(Path(experiment_dir).glob("*/run.json"))), None)
    values = json.loads(record.read_text()).get("config", {}) if record else {"name": Path(experiment_dir).name}
    legacy = (values.get("eval") or {}).pop("max_gen_toks", None)  # records written before eval.decoding
    if legacy is not None:
        values["eval"].setdefault("decoding", {})["max_new_tokens"] = legacy
    try:
        return validate(_build(ExperimentConfig, _merge(values, parse_overrides(overrides or [])), ""))
    except ConfigError as e:
        raise ConfigError(f"{record or 'defaults'}: {e}") from None


def to_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)


def describe(cls=ExperimentConfig, prefix: str = "") -> list[tuple[str, str, str]]:
    """(key, default, help) rows for `musicprod config --help`-style listings."""
    rows = []
    default = cls()
    for f in dataclasses.fields(cls):
        value = getattr(default, f.name)
        if dataclasses.is_dataclass(value):
            rows += describe(type(value), f"{prefix}{f.name}.")
        else:
            rows.append((prefix + f.name, repr(value), f.metadata.get("help", "")))
    return rows


def split_config_args(args: list[str]) -> tuple[str | None, list[str]]:
    """`[CONFIG] [key=value ...]`: a first argument without '=' is the experiment YAML (path or configs/NAME)."""
    if not args or "=" in args[0]:
        default = Path("configs/default.yaml")
        return (str(default) if default.exists() else None), list(args)
    path = Path(args[0])
    if not path.exists() and (Path("configs") / f"{args[0]}.yaml").exists():
        path = Path("configs") / f"{args[0]}.yaml"
    return str(path), args[1:]
