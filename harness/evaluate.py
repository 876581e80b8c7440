"""`musicprod eval`: run the lm-eval tasks in benchmarks/ on the base model and every adapter of an experiment.

lm-eval does generation, scoring and its own aggregates; this module adds what it lacks for comparing
systems: per-item files, 95 % bootstrap CIs per metric and slice, and paired tests over the same items.
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from harness import set_offline_env
from harness.config import EvalSettings
from harness.io import atomic_dir, read_jsonl, write_json_atomic
from harness.layout import BASE_TARGET, eval_summary_path, target_dir
from harness.metrics import QA_METRICS
from harness.models import load_for_inference, prepare
from harness.registry import get_base_model
from harness.records import now_iso
from harness.stats import mean_ci, paired_delta

REPO_ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS_DIR = REPO_ROOT / "benchmarks"
TASK_KIND = {"musicprod_qa": "qa", "musicprod_mc": "mc"}
KIND_METRICS = {"qa": QA_METRICS, "mc": ("acc", "acc_norm")}
SLICES = ("lang", "topic")


class EvalError(RuntimeError):
    """An experiment that cannot be evaluated; the message says what is missing."""


def task_manager():
    from lm_eval.tasks import TaskManager
    # include_defaults=False: indexing lm-eval's ~14k built-in task YAMLs costs ~10 s and we use none of them.
    return TaskManager(include_path=str(BENCHMARKS_DIR), include_defaults=False)


def _single_token_ids(tokenizer, texts) -> set[int] | None:
    ids = [tokenizer.encode(t, add_special_tokens=False) for t in texts]
    return {i[0] for i in ids} if all(len(i) == 1 for i in ids) else None


def hflm_class():
    """lm-eval's HFLM whose greedy generation drops finished rows (harness.generation); anything else
    (sampling, a stop string that is not one token) goes to HFLM's own `generate` path."""
    import torch
    from lm_eval.models.huggingface import HFLM
    from harness.generation import greedy_generate

    class DroppingHFLM(HFLM):
        def _model_generate(self, context, max_length, stop, **generation_kwargs):
            stop_ids = _single_token_ids(self.tokenizer, stop)
            greedy = not generation_kwargs.get("do_sample") and not generation_kwargs.get("temperature")
            mask = generation_kwargs.get("attention_mask")
            if not (greedy and stop_ids and mask is not None):
                return super()._model_generate(context, max_length, stop, **generation_kwargs)
            with torch.autocast(device_type=self.device.type, dtype=self.mixed_precision_dtype,
                                enabled=self.mixed_precision_dtype is not None):
                return greedy_generate(self.model, context, mask, max_length - context.shape[1], stop_ids,
                                       fill_id=min(stop_ids))
    return DroppingHFLM


def run_lm_eval(model, tokenizer, settings: EvalSettings) -> dict:
    from lm_eval import simple_evaluate
    lm = hflm_class()(pretrained=model, tokenizer=tokenizer, batch_size=settings.batch_size)
    return simple_evaluate(model=lm, tasks=list(settings.tasks), task_manager=task_manager(),
                           apply_chat_template=True, log_samples=True, limit=settings.limit or None,
                           gen_kwargs={"max_gen_toks": settings.max_gen_toks}, bootstrap_iters=0,
                           random_seed=0, numpy_random_seed=0, torch_random_seed=0, fewshot_random_seed=0)


def item_rows(task: str, samples: list[dict]) -> list[dict]:
    """lm-eval's logged samples -> our flat per-item rows (generations.jsonl / mc.jsonl)."""
    rows = []
    for s in sorted(samples, key=lambda s: s["doc_id"]):
        doc = s["doc"]
        base = {"id": doc["id"], "lang": doc["lang"], "topic": doc["topic"]}
        if TASK_KIND.get(task) == "qa":
            answer = s["filtered_resps"][0] if isinstance(s["filtered_resps"], list) else s["filtered_resps"]
            rows.append({**base, "difficulty": doc.get("difficulty"), "question": doc["question"],
                         "reference": doc["reference"], "key_facts": doc["key_facts"], "answer": answer.strip(),
                         "metrics": {m: s[m] for m in QA_METRICS}})
        else:
            rows.append({**base, "acc": s["acc"], "acc_norm": s["acc_norm"], **length_baselines(doc)})
    return rows


def length_baselines(doc: dict) -> dict:
    """Whether always picking the longest / the shortest option (first on ties) would be right, and chance:
    the floor an MC accuracy must clear before it says anything about knowledge."""
    lens = [len(c) for c in doc["choices"]]
    return {"pick_longest": float(lens.index(max(lens)) == doc["answer"]),
            "pick_shortest": float(lens.index(min(lens)) == doc["answer"]), "chance": 1.0 / len(lens)}


def mc_baselines(rows: list[dict], resamples: int) -> dict | None:
    """Length-only baselines over the evaluated MC items (rows written before they existed have none)."""
    if not rows or "pick_longest" not in rows[0]:
        return None
    return {k: mean_ci([r[k] for r in rows], resamples) for k in ("chance", "pick_longest", "pick_shortest")}


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    from lm_eval.utils import handle_non_serializable
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False, default=handle_non_serializable) + "\n")


def write_target(out: Path, results: dict, extra: dict) -> None:
    """results.json in lm-eval's format, its per-sample logs, and our per-item rows, all in one rename."""
    from lm_eval.utils import handle_non_serializable
    samples = results.pop("samples", {})
    with atomic_dir(out) as tmp:
        (tmp / "results.json").write_text(json.dumps({**results, "musicprod": extra}, indent=2,
                                                     default=handle_non_serializable, ensure_ascii=False))
        for task, task_samples in samples.items():
            _write_jsonl(tmp / f"samples_{task}.jsonl", task_samples)
            kind = TASK_KIND.get(task)
            if kind:
                _write_jsonl(tmp / ("generations.jsonl" if kind == "qa" else "mc.jsonl"), item_rows(task, task_samples))


def generated_tokens(tokenizer, qa_samples: list[dict]) -> int:
    answers = [row["answer"] for row in item_rows("musicprod_qa", qa_samples)]
    return sum(len(ids) for ids in tokenizer(answers, add_special_tokens=False)["input_ids"]) if answers else 0


def evaluate_target(experiment_dir: Path, target: str, base_path: str, adapter_path: str | None,
                    settings: EvalSettings) -> dict:
    print(f"\n=== evaluating {target} ({'base model' if adapter_path is None else adapter_path}) ===", flush=True)
    t0 = time.perf_counter()
    model, tokenizer = load_for_inference(base_path, adapter_path, settings.dtype, settings.merge_adapter)
    load_s = time.perf_counter() - t0
    results = run_lm_eval(model, tokenizer, settings)
    wall = time.perf_counter() - t0
    n_items = {TASK_KIND.get(t, t): len(v) for t, v in results.get("samples", {}).items()}
    extra = {"target": target, "base_model_path": base_path, "adapter_path": adapter_path,
             "merged": bool(adapter_path) and settings.merge_adapter, "dtype": settings.dtype,
             "load_s": round(load_s, 2), "wall_s": round(wall, 2), "n_items": n_items, "finished_at": now_iso(),
             "generated_tokens": generated_tokens(tokenizer, results.get("samples", {}).get("musicprod_qa", []))}
    extra["items_per_s"] = round(sum(n_items.values()) / wall, 3)
    extra["generated_tokens_per_s"] = round(extra["generated_tokens"] / wall, 2)
    write_target(target_dir(experiment_dir, target), results, extra)
    return extra


# ---------- aggregation over per-item files ----------

def read_items(experiment_dir: Path, target: str) -> dict[str, list[dict]]:
    out = target_dir(experiment_dir, target)
    items = {}
    for kind, name in (("qa", "generations.jsonl"), ("mc", "mc.jsonl")):
        path = out / name
        if path.exists():
            items[kind] = read_jsonl(path, ("id",), EvalError)
    return items


def _score(row: dict, kind: str, metric: str) -> float:
    return row["metrics"][metric] if kind == "qa" else row[metric]


def target_summary(items: dict[str, list[dict]], resamples: int) -> dict:
    metrics, slices = {}, {f"by_{s}": {} for s in SLICES}
    for kind, rows in items.items():
        metrics[kind] = {m: mean_ci([_score(r, kind, m) for r in rows], resamples) for m in KIND_METRICS[kind]}
        for s in SLICES:
            groups = sorted({r[s] for r in rows})
            slices[f"by_{s}"][kind] = {g: {m: mean_ci([_score(r, kind, m) for r in rows if r[s] == g], resamples)
                                           for m in KIND_METRICS[kind]} for g in groups}
    return {"metrics": metrics, **slices}


def paired_rows(items_a: dict, items_b: dict, a: str, b: str, resamples: int) -> list[dict]:
    rows = []
    for kind in sorted(set(items_a) & set(items_b)):
        by_id_b = {r["id"]: r for r in items_b[kind]}
        common = [(r, by_id_b[r["id"]]) for r in items_a[kind] if r["id"] in by_id_b]
        for metric in KIND_METRICS[kind]:
            d = paired_delta([_score(x, kind, metric) for x, _ in common],
                             [_score(y, kind, metric) for _, y in common], resamples)
            rows.append({"task": kind, "metric": metric, "a": a, "b": b, **d})
    return rows


def summarize(experiment_dir: Path, targets: dict[str, dict], settings: EvalSettings, name: str) -> dict:
    items = {t: read_items(experiment_dir, t) for t in targets}
    first = next(iter(items.values()), {})  # every target answers the same items
    summary = {"experiment": name, "created_at": now_iso(),
               "decoding": {"max_gen_toks": settings.max_gen_toks, "do_sample": False, "batch_size": settings.batch_size,
                            "apply_chat_template": True, "dtype": settings.dtype, "merge_adapter": settings.merge_adapter},
               "limit": settings.limit or None,
               "n_items": {k: len(v) for k, v in first.items()},
               "targets": {}, "paired": [],
               "mc_baselines": mc_baselines(first.get("mc", []), settings.bootstrap_resamples)}
    for t, meta in targets.items():
        summary["targets"][t] = {"status": "ok", "adapter_path": meta.get("adapter_path"),
                                 "wall_s": meta.get("wall_s"), "items_per_s": meta.get("items_per_s"),
                                 "generated_tokens_per_s": meta.get("generated_tokens_per_s"),
                                 **target_summary(items[t], settings.bootstrap_resamples)}
    names = list(targets)
    systems = [t for t in names if t != BASE_TARGET]
    if BASE_TARGET in targets:
        for s in systems:
            summary["paired"] += paired_rows(items[s], items[BASE_TARGET], s, BASE_TARGET, settings.bootstrap_resamples)
    for i, a in enumerate(systems):
        for b in systems[i + 1:]:
            summary["paired"] += paired_rows(items[a], items[b], a, b, settings.bootstrap_resamples)
    return summary


# ---------- the experiment ----------

def _existing(path: str | None) -> str | None:
    """Run records store adapter paths relative to the repo root: resolve them from any working directory."""
    if path and not Path(path).exists() and (REPO_ROOT / path).exists():
        return str(REPO_ROOT / path)
    return path


def experiment_targets(experiment_dir: Path, include_base: bool) -> tuple[str, dict[str, str | None], dict[str, str]]:
    """(base model path, {target: adapter path or None}, {system: reason skipped}) from the run records."""
    records = {p.parent.name: json.loads(p.read_text()) for p in sorted(Path(experiment_dir).glob("*/run.json"))}
    if not records:
        raise EvalError(f"{experiment_dir}: no run records (*/run.json); train first (musicprod run)")
    targets: dict[str, str | None] = {BASE_TARGET: None} if include_base else {}
    skipped, base = {}, {}
    for system, r in records.items():
        base = base or (r.get("base_model") or {})
        adapter = _existing(r.get("adapter_path"))
        if r.get("status") != "ok":
            skipped[system] = f"{r.get('status')}: {r.get('reason')}"
        elif not adapter or not (Path(adapter) / "adapter_config.json").exists():
            skipped[system] = f"adapter missing at {adapter}"
        else:
            targets[system] = adapter
    return _local_base_path(base, experiment_dir), targets, skipped


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
            raise EvalError(f"{experiment_dir}: base model {name!r} prepared here has source sha256 "
                            f"{local.source_sha256}, the run records say {recorded}: not the model it was trained on")
        return local.path
    raise EvalError(f"{experiment_dir}: base model folder {path!r} from the run records is missing and "
                    f"{name!r} is not a registry model; run `musicprod model prepare` for it")


def run_eval(experiment_dir: str | Path, settings: EvalSettings, only: list[str] | None = None) -> dict:
    set_offline_env()
    logging.getLogger("lm_eval").setLevel(logging.WARNING)
    experiment_dir = Path(experiment_dir)
    base_path, targets, skipped = experiment_targets(experiment_dir, settings.include_base)
    to_run = {t: a for t, a in targets.items() if not only or t in only}
    t0 = time.perf_counter()
    done = {t: evaluate_target(experiment_dir, t, base_path, a, settings) for t, a in to_run.items()}
    # Targets evaluated by an earlier `--only` run of this experiment still belong in the summary.
    for t in targets:
        earlier = target_dir(experiment_dir, t) / "results.json"
        if t not in done and earlier.exists():
            done[t] = json.loads(earlier.read_text()).get("musicprod", {})
    summary = summarize(experiment_dir, done, settings, experiment_dir.name)
    summary["skipped"] = skipped
    summary["wall_s"] = round(time.perf_counter() - t0, 2)
    write_json_atomic(eval_summary_path(experiment_dir), summary)
    return summary


def format_summary(summary: dict) -> str:
    lines = [f"{'target':14s} {'key-fact recall':>22s} {'ROUGE-L':>8s} {'chrF':>6s} {'SemScore':>9s} {'MC acc':>20s} {'wall s':>7s}"]
    for t, s in summary["targets"].items():
        qa, mc = s["metrics"].get("qa", {}), s["metrics"].get("mc", {})

        def ci(m, scale=1.0):
            return f"{m['mean'] * scale:.3f} [{m['ci_low'] * scale:.3f}, {m['ci_high'] * scale:.3f}]" if m and m.get("ci_low") is not None else "-"
        def mean(m, digits):
            return f"{m['mean']:.{digits}f}" if m and m.get("mean") is not None else "-"
        lines.append(f"{t:14s} {ci(qa.get('key_fact_recall')):>22s} {mean(qa.get('rougeL'), 3):>8s} "
                     f"{mean(qa.get('chrf'), 1):>6s} {mean(qa.get('semscore'), 3):>9s} "
                     f"{ci(mc.get('acc')):>20s} {s.get('wall_s') or 0:7.0f}")
    if summary.get("mc_baselines"):
        lines.append("  MC baselines on these items: " + ", ".join(
            f"{k.replace('_', ' ')} {v['mean']:.3f}" for k, v in summary["mc_baselines"].items()))
    for p in summary["paired"]:
        if p["metric"] in ("key_fact_recall", "acc") and p.get("ci_low") is not None:
            lines.append(f"  {p['a']} - {p['b']} {p['task']}.{p['metric']}: {p['delta']:+.3f} "
                         f"[{p['ci_low']:+.3f}, {p['ci_high']:+.3f}] p={p['p_value']:.3g} (n={p['n']})")
    for s, why in summary.get("skipped", {}).items():
        lines.append(f"  {s}: not evaluated ({why})")
    return "\n".join(lines)
