"""What every system shares, so the comparison is fair: data shaping, SFTConfig, measurement, run record.

Import only after `unsloth` in Unsloth processes (it patches transformers/trl on import).
"""

from __future__ import annotations

import math
import os
import statistics
import time
from pathlib import Path

import torch
from transformers import Trainer, TrainerCallback
from trl import SFTConfig, SFTTrainer

from harness.config import ExperimentConfig
from harness.data.load import dataset_fingerprint, experiment_rows, to_prompt_completion
from harness.records import peak_rss_mib, rss_mib

WARMUP_STEPS_EXCLUDED = 2  # first optimizer steps pay one-off costs (allocator, kernel selection)


def load_splits(cfg: ExperimentConfig):
    from datasets import Dataset

    train, val = experiment_rows(cfg.data, cfg.train.seed)
    shape = lambda rs: Dataset.from_list([to_prompt_completion(r, cfg.data.system_prompt) for r in rs])
    return shape(train), (shape(val) if val else None), dataset_fingerprint(cfg.data, train, val)


def sft_config(cfg: ExperimentConfig, output_dir: str | Path, use_cpu: bool) -> SFTConfig:
    """One SFTConfig for every system: identical optimisation settings are the point of the benchmark."""
    t = cfg.train
    return SFTConfig(
        output_dir=str(output_dir),
        num_train_epochs=t.epochs,
        max_steps=t.max_steps,
        learning_rate=t.learning_rate,
        lr_scheduler_type=t.lr_scheduler,
        warmup_steps=t.warmup_ratio,
        per_device_train_batch_size=t.batch_size,
        per_device_eval_batch_size=t.batch_size,
        gradient_accumulation_steps=t.grad_accum,
        max_length=t.max_length,
        seed=t.seed,
        data_seed=t.seed,
        bf16=t.bf16,
        logging_steps=t.logging_steps,
        logging_first_step=True,
        gradient_checkpointing=t.gradient_checkpointing,
        train_sampling_strategy="group_by_length" if t.group_by_length else "random",
        completion_only_loss=True,  # loss on the answer only
        packing=False,
        # Explicit, not TRL's default: Unsloth's patched SFTConfig leaves this None and then turns padding-free
        # batching on by itself; the same padded batches for every system keep the comparison like for like.
        padding_free=False,
        report_to=t.report_to,
        # Resumable checkpoints (model + optimizer + scheduler + RNG) every save_steps; `--resume` continues.
        save_strategy="steps" if t.save_steps else "no",
        save_steps=t.save_steps or 500,
        save_total_limit=t.save_total_limit or None,
        eval_strategy="no",
        include_num_input_tokens_seen="non_padding",  # the Trainer's own count, gathered across ranks
        use_cpu=use_cpu,
        dataloader_num_workers=0,
        disable_tqdm=False,
        ddp_find_unused_parameters=False,  # every LoRA weight is used in every forward: skip DDP's graph walk
    )


def _plain(value):
    """Enum members (schedulers, optimizers) and dtypes as plain strings, so settings compare and serialise."""
    value = getattr(value, "value", value)
    return str(value).replace("torch.", "") if not isinstance(value, (int, float, bool, str, type(None))) else value


def effective_settings(args: SFTConfig, lora: dict, runtime: dict) -> dict:
    """The settings that must be identical for all four systems (asserted by tests, written to run records).

    `args` is the SFTConfig as the trainer holds it after construction (Unsloth's trainer rewrites some fields in
    place), `lora` the adapter shape the model really carries (`lora_settings`), `runtime` the speed settings read
    from the live process and model (`runtime_settings`). One pure function for every system, so a difference in
    the record is a difference in what ran.
    """
    return {
        **runtime,
        "learning_rate": args.learning_rate,
        "lr_scheduler": _plain(args.lr_scheduler_type),
        "warmup": args.warmup_steps,
        "batch_size": args.per_device_train_batch_size,
        "grad_accum": args.gradient_accumulation_steps,
        "epochs": args.num_train_epochs,
        "max_steps": args.max_steps,
        "num_processes": args.world_size,
        "global_batch_size": args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size,
        "max_length": args.max_length,
        "seed": args.seed,
        "bf16": args.bf16,
        "fp16": args.fp16,
        "completion_only_loss": args.completion_only_loss,
        "packing": args.packing,
        "padding_free": args.padding_free,
        "optimizer": _plain(args.optim),
        "weight_decay": args.weight_decay,
        "max_grad_norm": args.max_grad_norm,
        "gradient_checkpointing": args.gradient_checkpointing,
        "average_tokens_across_devices": args.average_tokens_across_devices,
        "lora_r": lora["r"],
        "lora_alpha": lora["alpha"],
        "lora_dropout": lora["dropout"],
        "target_modules": sorted(lora["target_modules"]),
    }


def lora_settings(r, alpha, dropout, target_modules) -> dict:
    return {"r": int(r), "alpha": alpha, "dropout": float(dropout), "target_modules": sorted(target_modules)}


def model_lora_settings(model) -> dict:
    """The LoRA shape of the PEFT model being trained (what get_peft_model really built, Unsloth's included);
    all None for full fine-tuning."""
    if not hasattr(model, "peft_config"):
        return {"r": None, "alpha": None, "dropout": None, "target_modules": []}
    peft_cfg = model.peft_config["default"]
    return lora_settings(peft_cfg.r, peft_cfg.lora_alpha, peft_cfg.lora_dropout, peft_cfg.target_modules)


def quantization_settings(quantization_config) -> dict | None:
    """4-bit settings from a BitsAndBytesConfig (object or dict); None for a 16-bit base.

    Kept apart from effective_settings: the *-lora and *-qlora systems differ here on purpose, while hf-qlora
    and unsloth-qlora must not.
    """
    if quantization_config is None:
        return None
    q = quantization_config if isinstance(quantization_config, dict) else quantization_config.to_dict()
    if not q.get("load_in_4bit"):
        return None
    return {
        "load_in_4bit": True,
        "quant_type": q.get("bnb_4bit_quant_type"),
        "double_quant": bool(q.get("bnb_4bit_use_double_quant")),
        "compute_dtype": _plain(q.get("bnb_4bit_compute_dtype")),
    }


def model_load_settings(model) -> dict:
    """Weights dtype and 4-bit quantization of the loaded base model, read from the model itself."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return {
        "dtype": _plain(base.config.dtype),
        "quantization": quantization_settings(getattr(base.config, "quantization_config", None)),
    }


def allocator_name() -> str:
    """Which malloc this process runs on (the launcher picks it: see trainers.launch.allocator_env)."""
    preload = os.environ.get("LD_PRELOAD", "")
    for name in ("tcmalloc", "jemalloc"):
        if name in preload:
            return name
    return "glibc (tuned)" if "MALLOC_MMAP_THRESHOLD_" in os.environ else "glibc"


def planned_runtime(cfg: ExperimentConfig, cuda: bool) -> dict:
    """The speed settings a system trains with, `auto` resolved for the device (what every HF system applies)."""
    t = cfg.train
    adapter = t.adapter_dtype if t.adapter_dtype != "auto" else ("bfloat16" if t.bf16 and not cuda else "float32")
    compiled = {"true": True, "false": False}.get(str(t.compile).lower(), not cuda)
    return {"adapter_dtype": adapter, "torch_compile": compiled, "allocator": allocator_name()}


def backbone(model):
    """The transformer stack under the LM head (inside the PEFT wrapper when there is one)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return base.model


def apply_runtime(model, runtime: dict):
    """Put the planned speed settings on a freshly built (PEFT) model; returns it."""
    if runtime["adapter_dtype"] == "bfloat16" and hasattr(model, "peft_config"):
        # PEFT keeps adapters in fp32 and casts every activation to fp32 and back around them; bf16 adapters
        # skip those copies (+30 % tokens/s on 2 cores; 30-step loss within 0.5 % of fp32 adapters).
        for p in model.parameters():
            if p.requires_grad:
                p.data = p.data.to(torch.bfloat16)
    if runtime["torch_compile"]:
        # Per decoder layer: the layers share one code object, so Dynamo traces once and reuses the graph (first
        # step 32 s, steady 842 tokens/s) where compiling the whole backbone traces all 30 (155 s, 971 tokens/s).
        # In place: parameter names and saved adapters stay as they are.
        stack = backbone(model)
        for layer in getattr(stack, "layers", None) or [stack]:
            layer.compile(dynamic=True)
    return model


def uncompile(model) -> None:
    """Back to eager for the validation pass. Under no_grad, bitsandbytes' CPU 4-bit layers take another path than
    the compiled training graph was traced for, and the compiled layer fails a size assert (a whole hf-qlora epoch
    was lost to it at validation); the pass is small, so eager costs little."""
    for module in model.modules():
        if getattr(module, "_compiled_call_impl", None) is not None:  # set by nn.Module.compile()
            module._compiled_call_impl = None


def runtime_settings(model, runtime: dict) -> dict:
    """The speed settings as the live model carries them (adapter dtype read from its trainable weights)."""
    trainable = next((p for p in model.parameters() if p.requires_grad), None)
    return {**runtime, "adapter_dtype": _plain(trainable.dtype) if trainable is not None else None}


class MemoryTimeline:
    """RSS (and its high-water mark) at the phases of a run and at every logging step: where a training process's
    memory goes, and whether it keeps growing after the largest batch has been seen."""

    def __init__(self):
        self.phases: dict[str, dict] = {}
        self.by_step: list[dict] = []

    @staticmethod
    def reading() -> dict:
        return {"rss_mib": round(rss_mib(), 1), "peak_rss_mib": round(peak_rss_mib(), 1)}

    def mark(self, phase: str) -> None:
        self.phases[phase] = self.reading()

    def mark_step(self, step: int) -> None:
        self.by_step.append({"step": step, **self.reading()})


class MeasuringCallback(TrainerCallback):
    """Wall time of each optimizer step, the Trainer's token count at its end, and the memory timeline."""

    def __init__(self, memory: MemoryTimeline | None = None):
        self.step_times: list[float] = []
        self.tokens_at_step: list[int] = []
        self.tokens_at_start = 0
        self._t0 = None
        self.memory = memory or MemoryTimeline()

    def on_train_begin(self, args, state, control, **kw):
        self.tokens_at_start = state.num_input_tokens_seen  # > 0 after a resume (restored from the checkpoint)
        self.memory.mark("train_begin")

    def on_step_begin(self, args, state, control, **kw):
        if args.device.type == "cuda":
            torch.cuda.synchronize()
        self._t0 = time.perf_counter()

    def on_step_end(self, args, state, control, **kw):
        if args.device.type == "cuda":
            torch.cuda.synchronize()
        self.step_times.append(time.perf_counter() - self._t0)
        self.tokens_at_step.append(state.num_input_tokens_seen)
        if state.global_step in (1, 3):  # after the first step (compile, allocator warm-up) and once warm
            self.memory.mark(f"after_step_{state.global_step}")
        if args.logging_steps and state.global_step % args.logging_steps == 0:
            self.memory.mark_step(state.global_step)


def loss_curve(state) -> list[dict]:
    """The logged training loss from the Trainer's own history (it survives a resume from a checkpoint)."""
    return [
        {
            "step": h["step"],
            "loss": float(h["loss"]),
            "tokens": h.get("num_input_tokens_seen"),
            "learning_rate": h.get("learning_rate"),
        }
        for h in state.log_history
        if "loss" in h and "step" in h
    ]


def fused_lm_head_available() -> bool:
    from trl.trainer import utils as trl_utils

    return trl_utils._ChunkedLogProbFunction is not None


LOSS_CHUNK_LOGITS = 50_000_000  # logits per LM-head chunk (200 MB in fp32): 1017 answer positions of SmolLM2's
# 49k vocabulary, 190 of Gemma 3's 262k


def _head_loss(head, hidden, labels):
    return torch.nn.functional.cross_entropy(head(hidden).float(), labels, reduction="sum")


def completion_only_loss(model, inputs, num_items_in_batch=None):
    """Next-token loss that projects only the answer positions through the LM head.

    What TRL's Triton fused head does on GPU, in plain torch for CPU: prompt positions (label -100) never
    reach the 49k-wide vocabulary projection, which on a 135M model is a large share of each step. The answer
    positions go through in chunks whose logits are recomputed in the backward pass (activation checkpointing),
    so a batch's full-vocabulary logits and their gradient (~1 GB at batch 8 x 512) are never held at once.
    """
    from torch.utils.checkpoint import checkpoint

    labels = inputs["labels"][:, 1:]
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    backbone_inputs = {k: v for k, v in inputs.items() if k not in ("labels", "completion_mask")}
    hidden = base.model(**backbone_inputs, use_cache=False).last_hidden_state[:, :-1]
    mask = labels != -100
    answers, targets = hidden[mask], labels[mask]
    chunk = max(1, LOSS_CHUNK_LOGITS // base.lm_head.out_features)
    if torch.is_grad_enabled() and len(answers) > chunk:
        loss = sum(
            checkpoint(_head_loss, base.lm_head, answers[i : i + chunk], targets[i : i + chunk], use_reentrant=False)
            for i in range(0, len(answers), chunk)
        )
    else:
        loss = _head_loss(base.lm_head, answers, targets)
    denominator = num_items_in_batch if num_items_in_batch is not None else mask.sum().clamp(min=1)
    return loss / denominator


def sft_trainer_class(base=SFTTrainer):
    """SFTTrainer whose loss, where TRL's Triton fused LM head is unavailable (CPU builds of torch have no
    Triton), projects only the answer positions through the LM head (same labels, same reduction)."""

    class AnswerOnlyTrainer(base):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            if fused_lm_head_available():
                return super().compute_loss(
                    model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch
                )
            if "labels" not in inputs or self.accelerator.num_processes > 1 or (return_outputs and model.training):
                # Under DDP/FSDP the forward must go through the wrapper (gradient sync, unsharding), so the
                # answer-only projection (which calls the backbone directly) is not used; Trainer's loss also
                # rescales by the number of ranks because num_items_in_batch counts the tokens of every rank.
                return Trainer.compute_loss(
                    self, model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch
                )
            loss = completion_only_loss(model, inputs, num_items_in_batch)
            # Evaluation asks for outputs but uses only the loss (prediction_loss_only): no full-vocabulary
            # logits for every position, which at batch 8 x 512 were the largest allocation of a run.
            return (loss, {}) if return_outputs else loss

    return AnswerOnlyTrainer


def count_params(model) -> tuple[int, int]:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total


def gather_across_ranks(trainer, local: dict) -> list[dict]:
    """Every rank's dict, in rank order (a list of one in a single process)."""
    if trainer.accelerator.num_processes == 1:
        return [local]
    from accelerate.utils import gather_object

    return gather_object([local])


def local_peak_memory(cuda: bool) -> dict:
    memory = {"peak_rss_mib": round(peak_rss_mib(), 1)}
    if cuda:
        memory["peak_vram_allocated_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        memory["peak_vram_reserved_mib"] = round(torch.cuda.max_memory_reserved() / 2**20, 1)
    return memory


def save_adapter(trainer, adapter_dir: Path, tokenizer) -> None:
    """Rank 0 writes the PEFT adapter; under FSDP every rank takes part in gathering its full state dict."""
    if trainer.is_fsdp_enabled:
        trainer.save_model(str(adapter_dir))  # collective; writes on rank 0 only
    elif trainer.is_world_process_zero():
        trainer.model.save_pretrained(str(adapter_dir))
    if trainer.is_world_process_zero():
        tokenizer.save_pretrained(str(adapter_dir))


def latest_checkpoint(output_dir: Path) -> str | None:
    """The newest complete checkpoint. The Trainer writes trainer_state.json last, so a folder without it is one
    the process died while writing (transformers' get_last_checkpoint would pick it and fail to resume)."""
    from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

    folders = sorted(
        (
            p
            for p in Path(output_dir).glob(f"{PREFIX_CHECKPOINT_DIR}-*")
            if p.is_dir() and p.name.split("-")[-1].isdigit()
        ),
        key=lambda p: int(p.name.split("-")[-1]),
    )
    for folder in reversed(folders):
        if (folder / "trainer_state.json").is_file():
            return str(folder)
        print(
            f"[resume] skipping {folder}: incomplete (no trainer_state.json; the run died while saving it)", flush=True
        )
    return None


def run_training(
    trainer, callback: MeasuringCallback, eval_dataset, adapter_dir: Path, tokenizer, resume: bool = False
) -> dict:
    """Train (from the newest checkpoint when `resume`), measure, save the adapter, compute validation loss.
    Returns the figures for the run record.

    Tokens are the Trainer's non-padding count, summed over ranks (tokens/s is global); memory is listed per rank
    and the top-level peak is the largest rank's; times are rank 0's (ranks wait for each other at every step).
    After a resume, times and tokens/s cover the resumed part only; the loss curve covers the whole run.
    """
    cuda = torch.cuda.is_available() and trainer.args.device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    checkpoint = latest_checkpoint(trainer.args.output_dir) if resume else None
    if resume and checkpoint is None:
        print(f"[resume] no checkpoint under {trainer.args.output_dir}: training from the start", flush=True)
    start = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=checkpoint)
    train_wall = time.perf_counter() - start
    callback.memory.mark("train_end")
    save_adapter(trainer, adapter_dir, tokenizer)
    validation_loss = None
    if eval_dataset is not None and len(eval_dataset):
        uncompile(trainer.model)
        validation_loss = float(trainer.evaluate(eval_dataset)["eval_loss"])
        callback.memory.mark("after_validation")
    ranks = gather_across_ranks(trainer, {"rank": trainer.args.process_index, **local_peak_memory(cuda)})
    tokens_at_step = callback.tokens_at_step
    run_tokens = trainer.state.num_input_tokens_seen - callback.tokens_at_start
    steady = callback.step_times[WARMUP_STEPS_EXCLUDED:]
    steady_tokens = (
        tokens_at_step[-1] - tokens_at_step[WARMUP_STEPS_EXCLUDED - 1]
        if len(tokens_at_step) > WARMUP_STEPS_EXCLUDED
        else 0
    )
    curve = loss_curve(trainer.state)
    figures = {
        "steps": trainer.state.global_step,
        "train_tokens": trainer.state.num_input_tokens_seen,
        "train_wall_s": round(train_wall, 3),
        "train_tokens_per_s": round(run_tokens / train_wall, 2) if train_wall else None,
        "steady_tokens_per_s": round(steady_tokens / sum(steady), 2) if steady and sum(steady) else None,
        "warmup_steps_excluded": WARMUP_STEPS_EXCLUDED,
        "step_time_p50_s": round(statistics.median(steady or callback.step_times), 4) if callback.step_times else None,
        "loss_curve": curve,
        "final_train_loss": curve[-1]["loss"] if curve else None,
        "mean_train_loss": float(result.training_loss)
        if result.training_loss is not None and math.isfinite(result.training_loss)
        else None,
        "per_rank": ranks,
        "memory_timeline": callback.memory.phases,
        "rss_by_step": callback.memory.by_step,
    }
    if checkpoint:
        figures["resumed_from"] = checkpoint
    for key in ("peak_rss_mib", "peak_vram_allocated_mib", "peak_vram_reserved_mib"):
        if key in ranks[0]:
            figures[key] = max(r[key] for r in ranks)
    if validation_loss is not None:
        figures["validation_loss"] = validation_loss
    return figures


def distributed_info(trainer, cfg: ExperimentConfig) -> dict:
    state = trainer.accelerator.state
    return {
        "launcher": cfg.distributed.launcher,
        "num_processes": state.num_processes,
        "distributed_type": str(getattr(state.distributed_type, "value", state.distributed_type)),
        "backend": state.backend,
        "fsdp": bool(trainer.is_fsdp_enabled),
    }


def fit(cfg: ExperimentConfig, model, tokenizer, out_dir: Path, use_cpu: bool, runtime: dict) -> dict:
    """The part every system shares after loading its model: data, SFTConfig, training, measurement."""
    memory = MemoryTimeline()
    memory.mark("model_loaded")
    train_ds, val_ds, data_info = load_splits(cfg)
    args = sft_config(cfg, out_dir / "trainer", use_cpu=use_cpu)
    callback = MeasuringCallback(memory)
    trainer = sft_trainer_class()(
        model=model, args=args, train_dataset=train_ds, processing_class=tokenizer, callbacks=[callback]
    )
    memory.mark("trainer_built")
    # Unsloth reads its own max_seq_length; TRL's max_length must not silently differ from the config.
    assert trainer.args.max_length == cfg.train.max_length, "TRL max_length diverged from the experiment's"
    trainable, total = count_params(model)
    # Read after the trainer is built: that is where Unsloth's patched SFTTrainer adjusts its args.
    settings = effective_settings(trainer.args, model_lora_settings(model), runtime_settings(model, runtime))
    load = model_load_settings(model)
    figures = run_training(trainer, callback, val_ds, out_dir / "adapter", tokenizer, resume=cfg.train.resume)
    return {
        "data": data_info,
        "trainable_params": trainable,
        "total_params": total,
        "effective_settings": settings,
        "model_loading": load,
        "distributed": distributed_info(trainer, cfg),
        **figures,
    }
