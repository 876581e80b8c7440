"""Fixture experiments for the report tests: run records modelled on a real one, per-item eval files, and the
eval summary aggregated by the real harness.eval.run.summarize (so the report reads what evaluation writes)."""

from __future__ import annotations

import json
from pathlib import Path

from harness.config import EvalSettings
from harness.io import write_json_atomic

N_ITEMS = 24
TOPICS = ("mixing", "mastering", "ableton")
FACTS = [
    {"fact": "threshold", "any_of": ["threshold"]},
    {"fact": "ratio", "any_of": ["ratio"]},
    {"fact": "attack time", "any_of": [r"attack"]},
]
BASE_MODEL = {"name": "smollm2-135m-instruct", "path": "/models/smollm2-135m-instruct", "source_sha256": "ab" * 32}


def loss_curve(start: float, steps: int = 60, every: int = 5, tokens_per_step: int = 1900) -> list[dict]:
    points = [1] + list(range(every, steps + 1, every))
    return [
        {
            "step": s,
            "loss": round(start - 0.5 * s / steps + 0.04 * (s // every % 2), 4),
            "tokens": s * tokens_per_step,
            "learning_rate": 2e-4 * (1 - s / steps),
        }
        for s in points
    ]


def run_record(
    experiment_dir: Path,
    system: str,
    status: str = "ok",
    reason: str | None = None,
    *,
    tokens_per_s: float = 150.0,
    train_wall_s: float = 700.0,
    peak_rss_mib: float = 8000.0,
    loss_start: float = 4.2,
    gpu: str | None = None,
) -> dict:
    device = {"cpu": "AMD EPYC", "cpu_count": 2, "platform": "Linux-x86_64", "torch_threads": 2}
    record = {
        "system": system,
        "status": status,
        "reason": reason,
        "git_sha": "0123abcd" * 5,
        "versions": {"python": "3.11.7", "torch": "2.13.0+cpu", "transformers": "5.17.0", "unsloth": None},
        "device": device,
        "base_model": BASE_MODEL,
        "adapter_path": None,
        "started_at": "2026-11-24T12:20:18+00:00",
        "finished_at": "2026-11-24T12:33:27+00:00",
    }
    if status == "ok":
        if gpu:
            device.update(gpu=gpu, gpu_count=1, cuda="12.8", gpu_memory_gib=79.1)
        curve = loss_curve(loss_start)
        record.update(
            {
                "adapter_path": f"{experiment_dir}/{system}/adapter",
                "data": {"path": "data/train.json", "sha256": "cd" * 32, "train_items": 1472, "validation_items": 78},
                "trainable_params": 4_884_480,
                "total_params": 139_399_488,
                "effective_settings": {
                    "learning_rate": 2e-4,
                    "batch_size": 8,
                    "max_steps": 60,
                    "lora_r": 16,
                    "target_modules": ["q_proj", "v_proj"],
                },
                "steps": 60,
                "train_tokens": 114_000,
                "train_wall_s": train_wall_s,
                "train_tokens_per_s": tokens_per_s,
                "steady_tokens_per_s": tokens_per_s * 1.01,
                "step_time_p50_s": 9.25,
                "loss_curve": curve,
                "final_train_loss": curve[-1]["loss"],
                "mean_train_loss": loss_start - 0.2,
                "validation_loss": loss_start - 0.6,
                "wall_s": train_wall_s + 40,
                "peak_rss_mib": peak_rss_mib,
            }
        )
        if gpu:
            record.update(peak_vram_allocated_mib=5321.0, peak_vram_reserved_mib=6144.0)
    write_json_atomic(experiment_dir / system / "run.json", record)
    return record


def answer_text(target: str, i: int, recall: float) -> str:
    hits = round(recall * len(FACTS))
    words = ["Set the threshold low.", "Use a 4:1 ratio.", "Keep the attack slow."][:hits]
    return f"[{target} answer {i}] " + (" ".join(words) or "Just turn it up until it sounds good.")


def write_items(experiment_dir: Path, target: str, recall: list[float], acc: list[float]) -> None:
    out = experiment_dir / "eval" / target
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "generations.jsonl", "w", encoding="utf-8") as f:
        for i, r in enumerate(recall):
            row = {
                "id": f"qa-{i:03d}",
                "lang": "de" if i % 4 == 0 else "en",
                "topic": TOPICS[i % 3],
                "difficulty": "beginner",
                "question": f"Question {i}: how do I set up a compressor on a bass?",
                "reference": f"Reference {i}: set the threshold, a ratio of 4:1 and a slow attack.",
                "key_facts": FACTS,
                "answer": answer_text(target, i, r),
                "metrics": {
                    "rougeL": 0.1 + 0.3 * r,
                    "bleu": 2.0 + 10 * r,
                    "chrf": 20.0 + 20 * r,
                    "key_fact_recall": round(r * 3) / 3,
                    "semscore": 0.4 + 0.4 * r,
                },
            }
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    with open(out / "mc.jsonl", "w", encoding="utf-8") as f:
        for i, a in enumerate(acc):
            f.write(
                json.dumps(
                    {
                        "id": f"mc-{i:03d}",
                        "lang": "de" if i % 4 == 0 else "en",
                        "topic": TOPICS[i % 3],
                        "acc": a,
                        "acc_norm": a,
                        "chance": 0.25,
                        "pick_longest": float(i % 2 == 0),
                        "pick_shortest": float(i % 5 == 0),
                    }
                )
                + "\n"
            )


def cycle(pattern: list[float], n: int = N_ITEMS) -> list[float]:
    return [pattern[i % len(pattern)] for i in range(n)]


def write_eval(
    experiment_dir: Path,
    scores: dict[str, tuple[list[float], list[float]]],
    skipped: dict[str, str] | None = None,
    limit: int | None = None,
) -> dict:
    """scores: target -> (per-item key-fact recall, per-item MC acc). Aggregated by harness.eval.run."""
    from harness.eval.run import summarize

    for target, (recall, acc) in scores.items():
        write_items(experiment_dir, target, recall, acc)
    targets = {
        t: {"adapter_path": None if t == "base" else f"{experiment_dir}/{t}/adapter", "wall_s": 30.0 + i}
        for i, t in enumerate(scores)
    }
    summary = summarize(
        experiment_dir, targets, EvalSettings(bootstrap_resamples=1000, limit=limit or 0), experiment_dir.name
    )
    summary.update(skipped=skipped or {}, wall_s=95.0)
    write_json_atomic(experiment_dir / "eval" / "summary.json", summary)
    return summary


def stats(mean: float, half: float, n: int = 24) -> dict:
    return {"mean": mean, "stderr": half / 2, "ci_low": mean - half, "ci_high": mean + half, "n": n}


def write_judge(experiment_dir: Path, name: str, reliable: bool, correctness: dict[str, float]) -> dict:
    """A judge summary exactly as CONTRACTS.md specifies (harness.judge.run is another stage's code)."""
    summary = {
        "judge": name,
        "backend": "hf",
        "created_at": "2026-11-24T15:00:00+00:00",
        "reliable": reliable,
        "reliability": {
            "sanity_pass_rate": 0.95 if reliable else 0.55,
            "sanity_n": 40,
            "spearman_key_fact": {"rho": 0.62 if reliable else 0.1, "p_value": 0.001, "n": 72},
            "self_consistency": 0.9,
            "spearman_human": None,
            "bar": "prefers the reference over an off-topic answer in >= 90 % of sanity cases",
        },
        "targets": {
            t: {"correctness": stats(c, 0.2), "relevance": stats(c + 0.1, 0.2), "helpfulness": stats(c - 0.1, 0.2)}
            for t, c in correctness.items()
        },
        "pairwise": [
            {"a": "hf-lora", "b": "base", "wins": 15, "ties": 3, "losses": 6, "position_consistency": 0.75, "n": 24}
        ],
    }
    write_json_atomic(experiment_dir / "judge" / name / "summary.json", summary)
    return summary


def write_human_ratings(experiment_dir: Path, targets: tuple[str, ...], items: int = 8) -> None:
    """Real ratings through harness.ratings' store: two raters, the first `items` answers of each target."""
    from harness.ratings import RatingStore, sync_queue

    store = RatingStore.for_experiment(experiment_dir)
    sync_queue(experiment_dir, store)
    for t_index, target in enumerate(targets):
        for i in range(items):
            uid = store.resolve_uid(target, f"qa-{i:03d}")
            for rater, bump in (("ann", 0), ("bob", i % 2)):
                score = min(5, 2 + t_index + bump)
                store.save_rating(rater, uid, {"correctness": score, "relevance": score, "helpfulness": score})


def full_experiment(root: Path) -> Path:
    """Two trained systems (one on a GPU), one skipped, eval + a reliable judge + human ratings."""
    exp = root / "full"
    run_record(exp, "hf-lora", tokens_per_s=154.0, train_wall_s=742.7, peak_rss_mib=8715.4)
    run_record(
        exp,
        "hf-qlora",
        tokens_per_s=263.1,
        train_wall_s=430.0,
        peak_rss_mib=8570.0,
        loss_start=4.4,
        gpu="NVIDIA H100 80GB HBM3",
    )
    run_record(exp, "unsloth-lora", "skipped", "unsloth is not installed (pip install -e '.[gpu]' on a CUDA machine)")
    write_eval(
        exp,
        {
            "base": (cycle([0, 0, 1 / 3, 0]), cycle([0, 1, 0, 0])),
            "hf-lora": (cycle([2 / 3, 1, 1 / 3, 2 / 3]), cycle([1, 1, 0, 1])),
            "hf-qlora": (cycle([1 / 3, 2 / 3, 1 / 3, 1 / 3]), cycle([1, 0, 0, 1])),
        },
        skipped={"unsloth-lora": "skipped: unsloth is not installed"},
    )
    write_judge(exp, "smollm2-135m-instruct", True, {"base": 1.8, "hf-lora": 3.4, "hf-qlora": 2.9})
    write_human_ratings(exp, ("base", "hf-lora", "hf-qlora"))
    return exp


def plain_experiment(root: Path) -> Path:
    """One trained system beating base, one skipped; eval present; no judge, no human ratings."""
    exp = root / "plain"
    run_record(exp, "hf-lora", tokens_per_s=154.0, train_wall_s=742.7)
    run_record(exp, "unsloth-qlora", "skipped", "unsloth needs CUDA; this machine has none")
    write_eval(
        exp,
        {
            "base": (cycle([0, 0, 1 / 3, 0]), cycle([0, 1, 0, 0])),
            "hf-lora": (cycle([2 / 3, 1, 1 / 3, 2 / 3]), cycle([1, 1, 0, 1])),
        },
        skipped={"unsloth-qlora": "skipped: unsloth needs CUDA"},
    )
    return exp
