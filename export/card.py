"""The model card (README.md) of an exported model: where it came from and how well it did, from the records.

Every figure comes from a file an earlier stage wrote (run.json, eval/summary.json, champion.json); nothing is
re-measured here, and a missing record says so instead of leaving a blank.
"""

from __future__ import annotations

import json

from export.source import ExportSource

# Licence of the weights = the base model's. Only registry models are known here; anything else says so.
BASE_LICENCES = {
    "smollm2-135m-instruct": ("apache-2.0", "Apache-2.0 (SmolLM2 by Hugging Face)"),
    "gemma3-270m": ("gemma", "Gemma Terms of Use (Gemma 3 by Google)"),
}
DATA_LICENCE = "CC BY 4.0 (musicprod training data, data/README.md)"
METRIC_LABELS = {
    ("qa", "key_fact_recall"): "key-fact recall",
    ("qa", "rougeL"): "ROUGE-L",
    ("qa", "bleu"): "BLEU",
    ("qa", "chrf"): "chrF",
    ("qa", "semscore"): "SemScore",
    ("mc", "acc"): "MC accuracy",
    ("mc", "acc_norm"): "MC accuracy (length-normalised)",
}
RECIPE_KEYS = (
    "learning_rate",
    "lr_scheduler",
    "warmup",
    "batch_size",
    "grad_accum",
    "global_batch_size",
    "epochs",
    "max_steps",
    "max_length",
    "lora_r",
    "lora_alpha",
    "lora_dropout",
    "target_modules",
    "adapter_dtype",
    "bf16",
    "seed",
)


def _fmt(v) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _ci(stat: dict | None) -> str:
    if not stat or stat.get("mean") is None:
        return "–"
    if stat.get("ci_low") is None:
        return f"{stat['mean']:.4f} (n={stat.get('n')})"
    return f"{stat['mean']:.4f} [{stat['ci_low']:.4f}, {stat['ci_high']:.4f}] (n={stat.get('n')})"


def _delta(row: dict | None) -> str:
    if not row or row.get("delta") is None:
        return "–"
    ci = f" [{row['ci_low']:+.4f}, {row['ci_high']:+.4f}]" if row.get("ci_low") is not None else ""
    p = f", p = {row['p_value']:.3g}" if row.get("p_value") is not None else ""
    return f"{row['delta']:+.4f}{ci}{p}"


def metrics_table(src: ExportSource) -> list[str]:
    summary = src.summary
    target = ((summary or {}).get("targets") or {}).get(src.system)
    if not target:
        where = f"{src.experiment_dir}/eval/summary.json"
        return [f"No held-out evaluation of `{src.system}` in `{where}` (run `musicprod eval {src.experiment}`)."]
    paired = {
        (r.get("task"), r.get("metric")): r
        for r in summary.get("paired", [])
        if r.get("a") == src.system and r.get("b") == "base"
    }
    lines = [
        f"Held-out set ({summary.get('split', 'heldout')}; {json.dumps(summary.get('n_items'))} items), "
        "mean with 95 % bootstrap CI"
        + (
            "; difference to the base model on the same items with its 95 % CI and sign-flip permutation p"
            if paired
            else ""
        )
        + ":",
        "",
        "| metric | this model | vs base |",
        "| --- | --- | --- |",
    ]
    for (task, metric), label in METRIC_LABELS.items():
        stat = ((target.get("metrics") or {}).get(task) or {}).get(metric)
        if stat:
            lines.append(f"| {label} | {_ci(stat)} | {_delta(paired.get((task, metric)))} |")
    if summary.get("limit"):
        lines += ["", f"**Warning:** the evaluation used eval.limit={summary['limit']} (not the full held-out set)."]
    return lines


def recipe_lines(src: ExportSource, adapter_config: dict | None) -> list[str]:
    rec = src.record or {}
    settings = rec.get("effective_settings") or {}
    lines = [
        f"- system `{src.system}` ({'the champion' if src.is_champion else 'not the champion'} of experiment "
        f"`{src.experiment}`)"
    ]
    if src.adapter_path is None:
        lines.append(
            "- no adapter: the base model itself"
            + (" (no fine-tuned system beat it on the held-out set)" if src.is_champion else "")
        )
    recipe = {k: settings[k] for k in RECIPE_KEYS if k in settings}
    if adapter_config:  # the adapter's own config is the authority on its shape
        names = {
            "r": "lora_r",
            "lora_alpha": "lora_alpha",
            "lora_dropout": "lora_dropout",
            "target_modules": "target_modules",
            "use_dora": "use_dora",
        }
        recipe.update({label: adapter_config[k] for k, label in names.items() if adapter_config.get(k) is not None})
    if recipe:
        lines.append(
            "- recipe: "
            + ", ".join(
                f"{k} {_fmt(v) if not isinstance(v, list) else '/'.join(map(str, v))}" for k, v in recipe.items()
            )
        )
    for key, label in (
        ("steps", "steps"),
        ("train_tokens", "training tokens"),
        ("final_train_loss", "final train loss"),
        ("validation_loss", "validation loss"),
        ("train_wall_s", "training wall time (s)"),
    ):
        if rec.get(key) is not None:
            lines.append(f"- {label}: {_fmt(rec[key])}")
    if rec.get("device"):
        dev = rec["device"]
        lines.append(f"- trained on: {dev.get('gpu') or dev.get('cpu')} ({rec.get('versions', {}).get('torch')})")
    if rec.get("git_sha"):
        lines.append(f"- musicprod commit: `{rec['git_sha']}`")
    return lines


def decoding_lines(decoding: dict) -> list[str]:
    if not decoding:
        return ["Not recorded (no champion.json / eval summary decoding block); greedy decoding is the default."]
    keys = ("do_sample", "temperature", "top_p", "repetition_penalty", "no_repeat_ngram_size", "max_new_tokens")
    return [
        "The answers above were generated with: "
        + ", ".join(f"{k} = {_fmt(decoding.get(k))}" for k in keys if k in decoding)
        + ". `repetition_penalty` divides the logits of tokens already in the answer (not the prompt)."
    ]


def model_card(src: ExportSource, *, dtype: str, adapter_config: dict | None, files: list[str]) -> str:
    spdx, licence_text = BASE_LICENCES.get(src.base_model, ("other", f"that of the base model `{src.base_model}`"))
    data = (src.record or {}).get("data") or {}
    front = [
        "---",
        f"license: {spdx}",
        "library_name: transformers",
        "pipeline_tag: text-generation",
        "language: [en, de]",
        "tags: [musicprod, music-production, " + ("lora, merged" if src.adapter_path else "base") + "]",
        "---",
        "",
    ]
    body = [
        f"# {src.name}",
        "",
        "A music-production assistant (Ableton Live, mixing, mastering, sound design; English and German) "
        f"exported by `musicprod export` from experiment `{src.experiment}`"
        + (": the LoRA adapter merged into the base model's weights." if src.adapter_path else "."),
        "",
        "## Base model",
        "",
        f"- `{src.base_model}`"
        + (f", prepared from a file with sha256 `{src.base_source_sha256}`" if src.base_source_sha256 else ""),
        f"- weights saved in {dtype} (safetensors) with the tokenizer and chat template the model was evaluated with",
        "",
        "## Training data",
        "",
    ]
    if data:
        body += [
            f"- `{data.get('path')}`, sha256 `{data.get('sha256')}`",
            f"- {data.get('train_items')} training items, {data.get('validation_items')} validation items",
        ]
    else:
        body += ["- none: no fine-tuning" if src.adapter_path is None else "- not recorded in the run record"]
    body += [
        "",
        "## Recipe",
        "",
        *recipe_lines(src, adapter_config),
        "",
        "## Held-out results",
        "",
        *metrics_table(src),
        "",
        "## Decoding",
        "",
        *decoding_lines(src.decoding),
        "",
        "## Use",
        "",
        "```python",
        "from transformers import AutoModelForCausalLM, AutoTokenizer",
        "tok = AutoTokenizer.from_pretrained(PATH)",
        "model = AutoModelForCausalLM.from_pretrained(PATH)",
        "ids = tok.apply_chat_template([{'role': 'user', 'content': 'What does a limiter do?'}],",
        "                              add_generation_prompt=True, return_tensors='pt')",
        "print(tok.decode(model.generate(ids, max_new_tokens=128)[0, ids.shape[1]:], skip_special_tokens=True))",
        "```",
        "",
        "## Licence",
        "",
        f"- weights: {licence_text}; fine-tuned on {DATA_LICENCE}"
        if src.adapter_path
        else f"- weights: {licence_text}",
        "- musicprod code: Apache-2.0",
        "",
        "## Files",
        "",
        *[f"- `{f}`" for f in files],
        "",
    ]
    return "\n".join(front + body)
