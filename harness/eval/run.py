"""`musicprod eval`: run the lm-eval tasks in benchmarks/ on the base model and every adapter of an experiment.

lm-eval does generation, scoring and its own aggregates; this module adds what it lacks for comparing
systems: per-item files, 95 % bootstrap CIs per metric and slice (language, topic, key-fact coverage), paired
tests over the same items, the lookup reference, checkpoints as targets, a dev split and a cached base model.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
import time
from pathlib import Path

from harness import set_offline_env
from harness.config import EvalSettings, experiment_config
from harness.data.check import load_mc, load_qa
from harness.data.load import experiment_rows
from harness.eval.coverage import COVERAGE_SLICES, fact_coverage, recall_over
from harness.eval.metrics import QA_METRICS, qa_scores
from harness.eval.stats import mean_ci, paired_delta
from harness.io import atomic_dir, cache_dir, now_iso, read_jsonl, sha256_file, write_json_atomic
from harness.io import write_jsonl as io_write_jsonl
from harness.layout import (
    BASE_TARGET,
    GENERATIONS_FILE,
    LOOKUP_TARGET,
    MC_ITEMS_FILE,
    RESULTS_FILE,
    checkpoint_dir,
    eval_summary_path,
    is_system_target,
    run_record_paths,
    split_target,
    target_dir,
)
from harness.models import load_for_inference, prepare
from harness.registry import get_base_model

REPO_ROOT = Path(__file__).resolve().parents[2]
BENCHMARKS_DIR = REPO_ROOT / "benchmarks"
DATA_DIR = BENCHMARKS_DIR / "musicprod" / "data"
TASK_KIND = {"musicprod_qa": "qa", "musicprod_mc": "mc"}
KIND_METRICS = {"qa": QA_METRICS, "mc": ("acc", "acc_norm")}
SLICES = ("lang", "topic")


def question_files(split: str) -> tuple[Path, Path]:
    """(qa.json, mc.json) of a split. The held-out honours MUSICPROD_QA_PATH / MUSICPROD_MC_PATH (a private
    question set, same schema); dev is always the repo's."""
    if split == "dev":
        return DATA_DIR / "dev" / "qa.json", DATA_DIR / "dev" / "mc.json"
    return (
        Path(os.environ.get("MUSICPROD_QA_PATH") or DATA_DIR / "qa.json"),
        Path(os.environ.get("MUSICPROD_MC_PATH") or DATA_DIR / "mc.json"),
    )


class EvalError(RuntimeError):
    """An experiment that cannot be evaluated; the message says what is missing."""


def task_manager(split: str = "heldout"):
    from lm_eval.tasks import TaskManager

    qa_path, mc_path = question_files(split)
    # include_defaults=False: indexing lm-eval's ~14k built-in task YAMLs costs ~10 s and we use none of them.
    return TaskManager(
        include_path=str(BENCHMARKS_DIR),
        include_defaults=False,
        metadata={"qa_path": str(qa_path), "mc_path": str(mc_path)},
    )


def _single_token_ids(tokenizer, texts) -> set[int] | None:
    ids = [tokenizer.encode(t, add_special_tokens=False) for t in texts]
    return {i[0] for i in ids} if all(len(i) == 1 for i in ids) else None


def hflm_class():
    """lm-eval's HFLM whose greedy generation drops finished rows (harness.eval.generation); anything else
    (sampling, a stop string that is not one token) goes to HFLM's own `generate` path."""
    import torch
    from lm_eval.models.huggingface import HFLM

    from harness.eval.generation import greedy_generate

    class DroppingHFLM(HFLM):
        def _model_generate(self, context, max_length, stop, **generation_kwargs):
            stop_ids = _single_token_ids(self.tokenizer, stop)
            greedy = not generation_kwargs.get("do_sample") and not generation_kwargs.get("temperature")
            mask = generation_kwargs.get("attention_mask")
            if not (greedy and stop_ids and mask is not None):
                return super()._model_generate(context, max_length, stop, **generation_kwargs)
            with torch.autocast(
                device_type=self.device.type,
                dtype=self.mixed_precision_dtype,
                enabled=self.mixed_precision_dtype is not None,
            ):
                return greedy_generate(
                    self.model,
                    context,
                    mask,
                    max_length - context.shape[1],
                    stop_ids,
                    fill_id=min(stop_ids),
                    repetition_penalty=generation_kwargs.get("repetition_penalty", 1.0),
                    no_repeat_ngram_size=generation_kwargs.get("no_repeat_ngram_size", 0),
                )

    return DroppingHFLM


def gen_kwargs(decoding) -> dict:
    """lm-eval generation kwargs for a DecodingSettings (they override the task YAML's greedy defaults)."""
    kwargs = {
        "max_gen_toks": decoding.max_new_tokens,
        "do_sample": decoding.do_sample,
        "temperature": decoding.temperature if decoding.do_sample else 0.0,
    }
    if decoding.do_sample:
        kwargs["top_p"] = decoding.top_p
    if decoding.repetition_penalty != 1.0:
        kwargs["repetition_penalty"] = decoding.repetition_penalty
    if decoding.no_repeat_ngram_size:
        kwargs["no_repeat_ngram_size"] = decoding.no_repeat_ngram_size
    return kwargs


def run_lm_eval(model, tokenizer, settings: EvalSettings) -> dict:
    from lm_eval import simple_evaluate

    lm = hflm_class()(pretrained=model, tokenizer=tokenizer, batch_size=settings.batch_size)
    return simple_evaluate(
        model=lm,
        tasks=list(settings.tasks),
        task_manager=task_manager(settings.split),
        apply_chat_template=True,
        log_samples=True,
        limit=settings.limit or None,
        gen_kwargs=gen_kwargs(settings.decoding),
        bootstrap_iters=0,
        random_seed=0,
        numpy_random_seed=0,
        torch_random_seed=0,
        fewshot_random_seed=0,
    )


def item_rows(task: str, samples: list[dict]) -> list[dict]:
    """lm-eval's logged samples -> our flat per-item rows (generations.jsonl / mc.jsonl)."""
    rows = []
    for s in sorted(samples, key=lambda s: s["doc_id"]):
        doc = s["doc"]
        base = {"id": doc["id"], "lang": doc["lang"], "topic": doc["topic"]}
        if TASK_KIND.get(task) == "qa":
            answer = s["filtered_resps"][0] if isinstance(s["filtered_resps"], list) else s["filtered_resps"]
            rows.append(
                {
                    **base,
                    "difficulty": doc.get("difficulty"),
                    "question": doc["question"],
                    "reference": doc["reference"],
                    "key_facts": doc["key_facts"],
                    "answer": answer.strip(),
                    "metrics": {m: s[m] for m in QA_METRICS},
                }
            )
        else:
            rows.append({**base, "acc": s["acc"], "acc_norm": s["acc_norm"], **length_baselines(doc)})
    return rows


def length_baselines(doc: dict) -> dict:
    """Whether always picking the longest / the shortest option (first on ties) would be right, and chance:
    the floor an MC accuracy must clear before it says anything about knowledge."""
    lens = [len(c) for c in doc["choices"]]
    return {
        "pick_longest": float(lens.index(max(lens)) == doc["answer"]),
        "pick_shortest": float(lens.index(min(lens)) == doc["answer"]),
        "chance": 1.0 / len(lens),
    }


def mc_baselines(rows: list[dict], resamples: int) -> dict | None:
    """Length-only baselines over the evaluated MC items (rows written before they existed have none)."""
    if not rows or "pick_longest" not in rows[0]:
        return None
    return {k: mean_ci([r[k] for r in rows], resamples) for k in ("chance", "pick_longest", "pick_shortest")}


def write_jsonl(path: Path, rows: list[dict]) -> None:
    from lm_eval.utils import handle_non_serializable  # lm-eval's samples hold numpy and other non-JSON values

    io_write_jsonl(path, rows, default=handle_non_serializable)


def write_target(out: Path, results: dict, extra: dict) -> None:
    """results.json in lm-eval's format, its per-sample logs, and our per-item rows, all in one rename."""
    from lm_eval.utils import handle_non_serializable

    samples = results.pop("samples", {})
    with atomic_dir(out) as tmp:
        (tmp / RESULTS_FILE).write_text(
            json.dumps({**results, "musicprod": extra}, indent=2, default=handle_non_serializable, ensure_ascii=False)
        )
        for task, task_samples in samples.items():
            write_jsonl(tmp / f"samples_{task}.jsonl", task_samples)
            kind = TASK_KIND.get(task)
            if kind:
                write_jsonl(tmp / (GENERATIONS_FILE if kind == "qa" else MC_ITEMS_FILE), item_rows(task, task_samples))


def generated_tokens(tokenizer, qa_samples: list[dict]) -> int:
    answers = [row["answer"] for row in item_rows("musicprod_qa", qa_samples)]
    return sum(len(ids) for ids in tokenizer(answers, add_special_tokens=False)["input_ids"]) if answers else 0


def evaluate_target(
    experiment_dir: Path, target: str, base_path: str, adapter_path: str | None, settings: EvalSettings
) -> dict:
    print(
        f"\n=== evaluating {target} ({'base model' if adapter_path is None else adapter_path}) "
        f"on the {settings.split} set ===",
        flush=True,
    )
    out = target_dir(experiment_dir, target, settings.split)
    cached = base_cache_path(base_path, settings) if target == BASE_TARGET and settings.cache_base else None
    if cached and (cached / RESULTS_FILE).exists():
        print(f"[eval] base model: reusing {cached} (same weights, questions and settings)", flush=True)
        with atomic_dir(out) as tmp:
            shutil.copytree(cached, tmp, dirs_exist_ok=True)
        return {**json.loads((out / RESULTS_FILE).read_text())["musicprod"], "reused_from": str(cached)}
    t0 = time.perf_counter()
    model, tokenizer = load_for_inference(base_path, adapter_path, settings.dtype, settings.merge_adapter)
    load_s = time.perf_counter() - t0
    results = run_lm_eval(model, tokenizer, settings)
    wall = time.perf_counter() - t0
    n_items = {TASK_KIND.get(t, t): len(v) for t, v in results.get("samples", {}).items()}
    extra = {
        "target": target,
        "base_model_path": base_path,
        "adapter_path": adapter_path,
        "merged": bool(adapter_path) and settings.merge_adapter,
        "dtype": settings.dtype,
        "split": settings.split,
        "decoding": dataclasses.asdict(settings.decoding),
        "load_s": round(load_s, 2),
        "wall_s": round(wall, 2),
        "n_items": n_items,
        "finished_at": now_iso(),
        "generated_tokens": generated_tokens(tokenizer, results.get("samples", {}).get("musicprod_qa", [])),
    }
    extra["items_per_s"] = round(sum(n_items.values()) / wall, 3)
    extra["generated_tokens_per_s"] = round(extra["generated_tokens"] / wall, 2)
    write_target(out, results, extra)
    if cached:
        with atomic_dir(cached) as tmp:
            shutil.copytree(out, tmp, dirs_exist_ok=True)
    return extra


def _folder_digest(path: Path) -> str:
    """sha256 over every file of a model folder (weights, config, tokenizer, chat template)."""
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        h.update(f.relative_to(path).as_posix().encode())
        h.update(sha256_file(f).encode())
    return h.hexdigest()


def base_cache_path(base_path: str, settings: EvalSettings) -> Path | None:
    """Where the base model's evaluation under these settings is kept: keyed by the base folder's contents, the
    question files and every setting that changes an answer or a score. None for a hub id (no local files)."""
    import importlib.metadata

    if not Path(base_path).is_dir():
        return None
    qa_path, mc_path = question_files(settings.split)
    key = {
        "base": _folder_digest(Path(base_path)),
        "qa": sha256_file(qa_path),
        "mc": sha256_file(mc_path),
        "decoding": dataclasses.asdict(settings.decoding),
        "dtype": settings.dtype,
        "batch_size": settings.batch_size,
        "limit": settings.limit,
        "tasks": list(settings.tasks),
        "lm_eval": importlib.metadata.version("lm_eval"),
        "transformers": importlib.metadata.version("transformers"),
        "generation": sha256_file(Path(__file__).with_name("generation.py")),
        "task_code": sha256_file(BENCHMARKS_DIR / "musicprod" / "utils.py"),
    }
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]
    return cache_dir("eval-cache") / digest


def evaluate_lookup(experiment_dir: Path, train: list[dict], settings: EvalSettings) -> dict:
    """The lookup reference as a target: same per-item files and metrics as a model, no generation."""
    from harness.eval.lookup import lookup_answers, lookup_choices

    print(f"\n=== evaluating {LOOKUP_TARGET} (nearest training answer) on the {settings.split} set ===", flush=True)
    t0 = time.perf_counter()
    qa_path, mc_path = question_files(settings.split)
    qa, mc = load_qa(qa_path), load_mc(mc_path)
    if settings.limit:
        qa, mc = qa[: settings.limit], mc[: settings.limit]
    qa_rows = [
        {
            "id": r["id"],
            "lang": r["lang"],
            "topic": r["topic"],
            "difficulty": r.get("difficulty"),
            "question": r["question"],
            "reference": r["reference"],
            "key_facts": r["key_facts"],
            "answer": a,
            "metrics": qa_scores(a, r),
        }
        for r, a in zip(qa, lookup_answers(train, qa))
    ]
    mc_rows = [
        {
            "id": r["id"],
            "lang": r["lang"],
            "topic": r["topic"],
            "acc": float(pick == r["answer"]),
            "acc_norm": float(pick == r["answer"]),
            **length_baselines(r),
        }
        for r, pick in zip(mc, lookup_choices(train, mc))
    ]
    extra = {
        "target": LOOKUP_TARGET,
        "reference": True,
        "split": settings.split,
        "training_items": len(train),
        "n_items": {"qa": len(qa_rows), "mc": len(mc_rows)},
        "finished_at": now_iso(),
        "wall_s": round(time.perf_counter() - t0, 2),
    }
    with atomic_dir(target_dir(experiment_dir, LOOKUP_TARGET, settings.split)) as tmp:
        (tmp / RESULTS_FILE).write_text(json.dumps({"musicprod": extra}, indent=2))
        write_jsonl(tmp / GENERATIONS_FILE, qa_rows)
        write_jsonl(tmp / MC_ITEMS_FILE, mc_rows)
    return extra


# ---------- aggregation over per-item files ----------


def read_items(experiment_dir: Path, target: str, split: str = "heldout") -> dict[str, list[dict]]:
    out = target_dir(experiment_dir, target, split)
    items = {}
    for kind, name in (("qa", GENERATIONS_FILE), ("mc", MC_ITEMS_FILE)):
        path = out / name
        if path.exists():
            items[kind] = read_jsonl(path, ("id",), EvalError)
    return items


def _score(row: dict, kind: str, metric: str) -> float:
    return row["metrics"][metric] if kind == "qa" else row[metric]


def coverage_slices(rows: list[dict], coverage: dict, resamples: int) -> dict:
    """Key-fact recall over only the facts the training data states (or not), per item, with CIs."""
    out = {}
    for name, (which, flag) in COVERAGE_SLICES.items():
        values = [v for v in (recall_over(r, coverage, which, flag) for r in rows) if v is not None]
        out[name] = {"key_fact_recall": mean_ci(values, resamples)}
    return out


def target_summary(items: dict[str, list[dict]], resamples: int, coverage: dict | None = None) -> dict:
    metrics, slices = {}, {f"by_{s}": {} for s in SLICES}
    for kind, rows in items.items():
        metrics[kind] = {m: mean_ci([_score(r, kind, m) for r in rows], resamples) for m in KIND_METRICS[kind]}
        for s in SLICES:
            groups = sorted({r[s] for r in rows})
            slices[f"by_{s}"][kind] = {
                g: {m: mean_ci([_score(r, kind, m) for r in rows if r[s] == g], resamples) for m in KIND_METRICS[kind]}
                for g in groups
            }
    if coverage and items.get("qa"):
        slices["by_coverage"] = {"qa": coverage_slices(items["qa"], coverage, resamples)}
    return {"metrics": metrics, **slices}


def paired_rows(items_a: dict, items_b: dict, a: str, b: str, resamples: int) -> list[dict]:
    rows = []
    for kind in sorted(set(items_a) & set(items_b)):
        by_id_b = {r["id"]: r for r in items_b[kind]}
        common = [(r, by_id_b[r["id"]]) for r in items_a[kind] if r["id"] in by_id_b]
        for metric in KIND_METRICS[kind]:
            d = paired_delta(
                [_score(x, kind, metric) for x, _ in common], [_score(y, kind, metric) for _, y in common], resamples
            )
            rows.append({"task": kind, "metric": metric, "a": a, "b": b, **d})
    return rows


def summarize(
    experiment_dir: Path, targets: dict[str, dict], settings: EvalSettings, name: str, coverage: dict | None = None
) -> dict:
    items = {t: read_items(experiment_dir, t, settings.split) for t in targets}
    first = next(iter(items.values()), {})  # every target answers the same items
    summary = {
        "experiment": name,
        "created_at": now_iso(),
        "split": settings.split,
        "question_files": [str(p) for p in question_files(settings.split)],
        "decoding": {
            **dataclasses.asdict(settings.decoding),
            "batch_size": settings.batch_size,
            "apply_chat_template": True,
            "dtype": settings.dtype,
            "merge_adapter": settings.merge_adapter,
        },
        "limit": settings.limit or None,
        "n_items": {k: len(v) for k, v in first.items()},
        "targets": {},
        "paired": [],
        "mc_baselines": mc_baselines(first.get("mc", []), settings.bootstrap_resamples),
    }
    for t, meta in targets.items():
        summary["targets"][t] = {
            "status": "ok",
            "adapter_path": meta.get("adapter_path"),
            "reference": t == LOOKUP_TARGET,
            "reused_from": meta.get("reused_from"),
            "wall_s": meta.get("wall_s"),
            "items_per_s": meta.get("items_per_s"),
            "generated_tokens_per_s": meta.get("generated_tokens_per_s"),
            **target_summary(items[t], settings.bootstrap_resamples, coverage),
        }
    models = [t for t in targets if t not in (BASE_TARGET, LOOKUP_TARGET)]
    if BASE_TARGET in targets:
        for s in models:  # every model, checkpoints included, against the base model
            summary["paired"] += paired_rows(items[s], items[BASE_TARGET], s, BASE_TARGET, settings.bootstrap_resamples)
    systems = [t for t in models if is_system_target(t)]
    for i, a in enumerate(systems):
        for b in systems[i + 1 :]:
            summary["paired"] += paired_rows(items[a], items[b], a, b, settings.bootstrap_resamples)
    return summary


# ---------- the experiment ----------


def _existing(path: str | None) -> str | None:
    """Run records store adapter paths relative to the repo root: resolve them from any working directory."""
    if path and not Path(path).exists() and (REPO_ROOT / path).exists():
        return str(REPO_ROOT / path)
    return path


def experiment_targets(
    experiment_dir: Path, include_base: bool, only: list[str] | None = None
) -> tuple[str, dict[str, str | None], dict[str, str]]:
    """(base model path, {target: adapter/weights path or None}, {system: reason skipped}) from the run records;
    `SYSTEM@STEP` names in `only` add that system's checkpoint as a target."""
    records = {p.parent.name: json.loads(p.read_text()) for p in run_record_paths(experiment_dir)}
    if not records:
        raise EvalError(f"{experiment_dir}: no run records (*/run.json); train first (musicprod run)")
    targets: dict[str, str | None] = {BASE_TARGET: None} if include_base else {}
    skipped, base = {}, {}
    for system, r in records.items():
        base = base or (r.get("base_model") or {})
        adapter = _existing(r.get("adapter_path"))
        if r.get("status") != "ok":
            skipped[system] = f"{r.get('status')}: {r.get('reason')}"
        elif not adapter or not _weights_folder(Path(adapter)):
            skipped[system] = f"adapter missing at {adapter}"
        else:
            targets[system] = adapter
    for target in only or []:
        system, step = split_target(target)
        if step is None:
            continue
        folder = checkpoint_dir(experiment_dir, system, step)
        if not _weights_folder(folder):
            known = sorted(p.name for p in folder.parent.glob("checkpoint-*")) if folder.parent.is_dir() else []
            raise EvalError(
                f"{target}: no checkpoint at {folder} (saved: {', '.join(known) or 'none'}; "
                f"train with train.save_steps=N)"
            )
        targets[target] = str(folder)
    return _local_base_path(base, experiment_dir), targets, skipped


def _weights_folder(folder: Path) -> bool:
    """An adapter (adapter_config.json) or a full model (config.json, e.g. hf-full) to evaluate."""
    return (folder / "adapter_config.json").exists() or (folder / "config.json").exists()


def _local_base_path(base: dict, experiment_dir: Path) -> str:
    """The recorded base folder, or, for records made on another machine (the GPU machine's cache), the same
    registry model prepared here: its GGUF sha256 must match the recorded one, else it is another model."""
    path, name = base.get("path"), base.get("name")
    if path and Path(path).exists():
        return path
    if name and get_base_model(name) is not None:
        local = prepare(name)
        recorded = base.get("source_sha256")
        if recorded and local.source_sha256 != recorded:
            raise EvalError(
                f"{experiment_dir}: base model {name!r} prepared here has source sha256 "
                f"{local.source_sha256}, the run records say {recorded}: not the model it was trained on"
            )
        return local.path
    raise EvalError(
        f"{experiment_dir}: base model folder {path!r} from the run records is missing and "
        f"{name!r} is not a registry model; run `musicprod model prepare` for it"
    )


def training_rows(experiment_dir: Path) -> list[dict]:
    """What the experiment trained on (seed split + augmentations), from its recorded config."""
    cfg = experiment_config(experiment_dir)
    data = dataclasses.replace(
        cfg.data,
        train_path=str(_existing(cfg.data.train_path)),
        augmented_path=str(_existing(cfg.data.augmented_path) or ""),
    )
    return experiment_rows(data, cfg.train.seed)[0]


def run_eval(experiment_dir: str | Path, settings: EvalSettings, only: list[str] | None = None) -> dict:
    set_offline_env()
    logging.getLogger("lm_eval").setLevel(logging.WARNING)
    experiment_dir = Path(experiment_dir)
    base_path, targets, skipped = experiment_targets(experiment_dir, settings.include_base, only)
    to_run = {t: a for t, a in targets.items() if not only or t in only}
    t0 = time.perf_counter()
    train = training_rows(experiment_dir)
    done = {t: evaluate_target(experiment_dir, t, base_path, a, settings) for t, a in to_run.items()}
    if settings.lookup and (not only or LOOKUP_TARGET in only):
        done[LOOKUP_TARGET] = evaluate_lookup(experiment_dir, train, settings)
    # Targets evaluated by an earlier `--only` run of this experiment still belong in the summary.
    for t in [*targets, LOOKUP_TARGET]:
        earlier = target_dir(experiment_dir, t, settings.split) / RESULTS_FILE
        if t not in done and earlier.exists():
            done[t] = json.loads(earlier.read_text()).get("musicprod", {})
    qa_path, _ = question_files(settings.split)
    qa = load_qa(qa_path)
    coverage = fact_coverage(train, qa[: settings.limit] if settings.limit else qa)
    summary = summarize(experiment_dir, done, settings, experiment_dir.name, coverage)
    summary["skipped"] = skipped
    summary["wall_s"] = round(time.perf_counter() - t0, 2)
    write_json_atomic(eval_summary_path(experiment_dir, settings.split), summary)
    return summary


def format_summary(summary: dict) -> str:
    lines = [
        f"{'target':14s} {'key-fact recall':>22s} {'ROUGE-L':>8s} {'chrF':>6s} {'SemScore':>9s} {'MC acc':>20s} {'wall s':>7s}"
    ]
    for t, s in summary["targets"].items():
        qa, mc = s["metrics"].get("qa", {}), s["metrics"].get("mc", {})

        def ci(m, scale=1.0):
            return (
                f"{m['mean'] * scale:.3f} [{m['ci_low'] * scale:.3f}, {m['ci_high'] * scale:.3f}]"
                if m and m.get("ci_low") is not None
                else "-"
            )

        def mean(m, digits):
            return f"{m['mean']:.{digits}f}" if m and m.get("mean") is not None else "-"

        lines.append(
            f"{t:14s} {ci(qa.get('key_fact_recall')):>22s} {mean(qa.get('rougeL'), 3):>8s} "
            f"{mean(qa.get('chrf'), 1):>6s} {mean(qa.get('semscore'), 3):>9s} "
            f"{ci(mc.get('acc')):>20s} {s.get('wall_s') or 0:7.0f}"
        )
    for t, s in summary["targets"].items():
        slices = (s.get("by_coverage") or {}).get("qa") or {}
        if slices:
            lines.append(
                f"  {t} key-fact recall by coverage: "
                + ", ".join(
                    f"{name} {v['key_fact_recall']['mean']:.3f} (n={v['key_fact_recall']['n']})"
                    for name, v in slices.items()
                    if v["key_fact_recall"]["mean"] is not None
                )
            )
    if summary.get("mc_baselines"):
        lines.append(
            "  MC baselines on these items: "
            + ", ".join(f"{k.replace('_', ' ')} {v['mean']:.3f}" for k, v in summary["mc_baselines"].items())
        )
    for p in summary["paired"]:
        if p["metric"] in ("key_fact_recall", "acc") and p.get("ci_low") is not None:
            lines.append(
                f"  {p['a']} - {p['b']} {p['task']}.{p['metric']}: {p['delta']:+.3f} "
                f"[{p['ci_low']:+.3f}, {p['ci_high']:+.3f}] p={p['p_value']:.3g} (n={p['n']})"
            )
    for s, why in summary.get("skipped", {}).items():
        lines.append(f"  {s}: not evaluated ({why})")
    return "\n".join(lines)
