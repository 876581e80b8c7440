"""The Unsloth vs HF comparison (harness.bench.gpu.pair_ratios, reports.gpu) on fixture result folders.

The fixture figures below are inputs invented for the test, not measurements: the tests check that ratios,
repeat spreads, claim positions and the HTML follow from whatever a GPU run recorded.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.bench.gpu import pair_ratios, print_summary
from reports.gpu import build_gpu_report, claim_check, compare, find_result_dirs, load_run, system_table
from reports.load import ReportError
from tests.test_report import assert_valid_html, text_of

SYSTEMS = ["hf-lora", "hf-qlora", "unsloth-lora", "unsloth-qlora"]


def _row(experiment, system, tps, vram, status="ok", synthetic=False, max_length=512, loss=2.0):
    ok = status == "ok"
    return {
        "experiment": experiment,
        "system": system,
        "synthetic": synthetic,
        "max_length": max_length,
        "batch_size": 8,
        "status": status,
        "reason": None if ok else "unsloth is not installed",
        "steady_tokens_per_s": tps if ok else None,
        "step_time_p50_s": (4096 / tps) if ok else None,
        "peak_vram_allocated_mib": vram if ok else None,
        "peak_vram_reserved_mib": vram * 1.25 if ok else None,
        "final_train_loss": loss if ok else None,
        "validation_loss": loss + 0.1 if ok and not synthetic else None,
        "mfu": 0.2 if ok else None,
    }


def write_run(
    root: Path,
    name: str,
    gpu: str = "NVIDIA H100 80GB HBM3",
    scale: float = 1.0,
    unsloth_status: str = "ok",
    mismatch: str | None = None,
) -> Path:
    """A result folder shaped like `bench gpu` output: real + two synthetic parts, records with loss curves.
    Unsloth is 2x faster with 60 % less VRAM on the real part and 1.5x / 40 % on the synthetic parts, times
    `scale` for the speed-up (so repeats can differ)."""
    run = root / name
    parts = {
        "real": ("gpu-real", False, 512),
        "s512": ("gpu-synthetic-s512", True, 512),
        "s2048": ("gpu-synthetic-s2048", True, 2048),
    }
    for part, (experiment, synthetic, length) in parts.items():
        speed, saving = (2.0, 0.6) if not synthetic else (1.5, 0.4)
        rows = []
        for system in SYSTEMS:
            hf_tps, hf_vram = (1000.0, 4000.0) if "qlora" not in system else (800.0, 2500.0)
            if system.startswith("unsloth"):
                row = _row(
                    experiment,
                    system,
                    hf_tps * speed * scale,
                    hf_vram * (1 - saving),
                    status=unsloth_status,
                    synthetic=synthetic,
                    max_length=length,
                    loss=2.01,
                )
            else:
                row = _row(experiment, system, hf_tps, hf_vram, synthetic=synthetic, max_length=length)
            rows.append(row)
            if row["status"] == "ok":
                rec = {
                    "system": system,
                    "status": "ok",
                    "synthetic": synthetic,
                    "loss_curve": [{"step": s, "loss": 3.0 - 0.02 * s, "tokens": 100 * s} for s in range(1, 31, 5)],
                }
                path = run / part / "records" / experiment / f"{system}.json"
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(json.dumps(rec))
        summary = {
            "device": {"gpu": gpu, "gpu_memory_gib": 79.2, "cuda": "12.8"},
            "versions": {"torch": "2.13.0", "unsloth": "2026.10.9", "trl": "1.15.0"},
            "rows": rows,
            "settings_mismatches": {experiment: [mismatch] if mismatch and part == "real" else []},
        }
        (run / part).mkdir(parents=True, exist_ok=True)
        (run / part / "summary.json").write_text(json.dumps(summary))
    return run


def test_pair_ratios_are_unsloth_relative_to_hf():
    rows = [
        _row("gpu-real", "hf-lora", 1000.0, 4000.0),
        _row("gpu-real", "unsloth-lora", 1700.0, 3000.0),
        _row("gpu-real", "hf-qlora", 800.0, 2000.0),
        _row("gpu-real", "unsloth-qlora", 0, 0, status="skipped"),
    ]
    lora, qlora = pair_ratios(rows)
    assert (lora["pair"], lora["speedup"], lora["vram_allocated_saving"]) == ("LoRA", 1.7, 0.25)
    assert lora["step_time_ratio"] == pytest.approx(1000 / 1700, abs=1e-3)
    assert lora["final_train_loss_diff"] == 0.0 and lora["reason"] is None
    assert qlora["reason"].startswith("unsloth-qlora: skipped (unsloth is not installed)")
    assert "speedup" not in qlora  # no figure where a system did not run


def test_bench_gpu_summary_prints_the_ratios(capsys):
    rows = [
        _row("gpu-real", s, tps, vram)
        for s, tps, vram in [("hf-lora", 1000.0, 4000.0), ("unsloth-lora", 2500.0, 1000.0)]
    ]
    print_summary({"device": {"gpu": "X"}, "versions": {}, "rows": rows, "settings_mismatches": {}})
    line = next(text for text in capsys.readouterr().out.splitlines() if text.startswith("gpu-real") and "LoRA" in text)
    assert "2.50x" in line and "75.0 %" in line


def test_repeats_on_one_gpu_are_pooled_and_other_gpus_kept_apart(tmp_path):
    runs = [
        load_run(write_run(tmp_path, "a-h100", scale=1.0)),
        load_run(write_run(tmp_path, "b-h100", scale=1.1)),
        load_run(write_run(tmp_path, "c-a100", gpu="NVIDIA A100-SXM4-80GB")),
    ]
    rows = {(r["gpu"], r["experiment"], r["pair"]): r for r in compare(runs)}
    h100 = rows[("NVIDIA H100 80GB HBM3", "gpu-real", "LoRA")]
    assert h100["repeats"] == ["a-h100", "b-h100"]
    assert sorted(h100["speedup"]["values"]) == [2.0, 2.2] and h100["speedup"]["mean"] == pytest.approx(2.1)
    assert h100["vram_allocated_saving"]["mean"] == pytest.approx(0.6)
    assert rows[("NVIDIA A100-SXM4-80GB", "gpu-real", "LoRA")]["speedup"]["n"] == 1
    assert [r["experiment"] for r in compare(runs[:1])] == ["gpu-real"] * 2 + ["gpu-synthetic-s512"] * 2 + [
        "gpu-synthetic-s2048"
    ] * 2  # real part first, then by sequence length
    table = {(r["experiment"], r["system"]): r for r in system_table(runs[:2])}
    assert table[("gpu-real", "unsloth-lora")]["steady_tokens_per_s"]["min"] == 2000.0
    assert table[("gpu-real", "unsloth-lora")]["steady_tokens_per_s"]["max"] == pytest.approx(2200.0)


def test_claim_positions():
    claim = {"speedup": (1.6, 1.7), "vram_saving": (0.7, 0.8)}
    row = {"speedup": {"mean": 1.3}, "vram_allocated_saving": {"mean": 0.75}}
    assert (claim_check(claim, row)["speed_vs_claim"], claim_check(claim, row)["vram_vs_claim"]) == ("below", "within")
    assert claim_check(claim, {"speedup": {"mean": 2.5}, "vram_allocated_saving": None})["speed_vs_claim"] == "above"
    assert claim_check(claim, {"speedup": None, "vram_allocated_saving": None})["vram_vs_claim"] is None


def test_gpu_report_html_and_summary(tmp_path):
    results = tmp_path / "results"
    write_run(results, "2026-11-25-h100", mismatch="unsloth-lora differs from hf-lora: max_length=1024 vs 512")
    write_run(results, "2026-11-26-h100", scale=0.9)
    dirs = find_result_dirs(results)
    assert [d.name for d in dirs] == ["2026-11-25-h100", "2026-11-26-h100"]
    index = build_gpu_report(dirs, tmp_path / "out")
    html = index.read_text(encoding="utf-8")
    assert_valid_html(html, citation_links=True)
    text = text_of(html)
    assert "Effective settings differ between systems" in text and "max_length=1024 vs 512" in text
    assert "1.90×" in text and "range 1.80–2.00×, 2 runs" in text  # real LoRA: mean of 2.0 and 1.8
    assert "60.0 %" in text  # VRAM saving of the real part
    ids = {f'id="{i}"' for i in ("fig-gpu-ratios", "fig-gpu-loss", "fig-gpu-sweep")}
    assert all(i in html for i in ids)
    summary = json.loads((index.parent / "summary.json").read_text())
    assert {r["name"] for r in summary["runs"]} == {"2026-11-25-h100", "2026-11-26-h100"}
    real_lora = next(c for c in summary["comparison"] if c["experiment"] == "gpu-real" and c["pair"] == "LoRA")
    assert real_lora["speedup"]["values"] == [2.0, 1.8]
    assert {c["speed_vs_claim"] for c in real_lora["claims"]} <= {"below", "within", "above"}


def test_gpu_report_without_unsloth_says_why(tmp_path):
    index = build_gpu_report([write_run(tmp_path, "cpu-only", unsloth_status="skipped")], tmp_path / "out")
    text = text_of(index.read_text(encoding="utf-8"))
    assert "no comparison in cpu-only: unsloth-lora: skipped (unsloth is not installed)" in text
    assert "fig-gpu-ratios" not in index.read_text(encoding="utf-8")


def test_malformed_results_name_the_file(tmp_path):
    run = write_run(tmp_path, "bad")
    summary = json.loads((run / "real" / "summary.json").read_text())
    del summary["rows"][1]["system"]
    (run / "real" / "summary.json").write_text(json.dumps(summary))
    with pytest.raises(ReportError, match=r"bad/real/summary.json: rows\[1\] lacks field\(s\) system"):
        load_run(run)
    with pytest.raises(ReportError, match="no GPU results"):
        build_gpu_report([], tmp_path / "out")


def test_cli_gpu_report(tmp_path, capsys):
    from harness.cli import main

    run = write_run(tmp_path, "r1")
    assert main(["report", "--gpu", str(run), "--out", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "gpu" / "index.html").exists()
    assert "GPU report:" in capsys.readouterr().out
    assert main(["report", "--gpu", str(tmp_path / "empty"), "--out", str(tmp_path / "out")]) == 2
    assert "no <part>/summary.json" in capsys.readouterr().err


def test_cpu_rehearsal_runs_the_whole_benchmark_and_feeds_the_report(tmp_path, tiny_model_dir, tiny_dataset):
    """`bench gpu --cpu-rehearsal` walks run_all as a GPU run would (fresh process per system, real and
    synthetic parts, records, summary with pairs), on a tiny model; the GPU report reads what it wrote."""
    import os
    import subprocess
    import sys

    from harness import OFFLINE_ENV
    from tests.conftest import REPO

    out = tmp_path / "bench" / "rehearsal"
    cmd = [
        sys.executable,
        "-m",
        "harness.bench.gpu",
        "--cpu-rehearsal",
        "--systems",
        "hf-lora,unsloth-lora",
        "--seq-lens",
        "128",
        "--synthetic-steps",
        "2",
        "--synthetic-tokens-per-step",
        "256",
        "--synthetic-shape",
        "hidden_size=64,intermediate_size=128,num_hidden_layers=2,num_attention_heads=4,"
        "num_key_value_heads=2,head_dim=16",
        "--synthetic-dir",
        str(tmp_path / "synthetic"),
        "--out",
        str(out),
        f"runs_dir={tmp_path / 'runs'}",
        f"model.name={tiny_model_dir}",
        f"data.train_path={tiny_dataset}",
        "train.max_steps=2",
        "train.batch_size=2",
        "train.logging_steps=1",
        "data.validation_fraction=0.2",
    ]
    env = {**os.environ, **OFFLINE_ENV, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "CPU REHEARSAL" in proc.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["rehearsal"] is True
    rows = {(r["experiment"], r["system"]): r for r in summary["rows"]}
    assert set(rows) == {(e, s) for e in ("gpu-real", "gpu-synthetic-s128") for s in ("hf-lora", "unsloth-lora")}
    real, synthetic = rows[("gpu-real", "hf-lora")], rows[("gpu-synthetic-s128", "hf-lora")]
    assert real["status"] == "ok" and real["steps"] == 2 and real["train_tokens"] > 0
    assert synthetic["status"] == "ok" and synthetic["synthetic"] and synthetic["batch_size"] == 2
    assert rows[("gpu-real", "unsloth-lora")]["status"] == "skipped"
    assert all(p["reason"] and "unsloth-lora: skipped" in p["reason"] for p in summary["pairs"])
    record = json.loads((out / "records" / "gpu-synthetic-s128" / "hf-lora.json").read_text())
    assert record["synthetic"] is True and record["train_tokens"] == 2 * 2 * 128  # every sequence full length
    model_card = json.loads(
        (
            tmp_path / "synthetic-head_dim16-hidden_size64-intermediate_size128-num_attention_heads4-"
            "num_hidden_layers2-num_key_value_heads2" / "musicprod_model.json"
        ).read_text()
    )
    assert model_card["config"]["hidden_size"] == 64 and "overridden" in model_card["shape"]
    index = build_gpu_report([out.parent], tmp_path / "report")  # the run folder holds the part "rehearsal"
    text = text_of(index.read_text(encoding="utf-8"))
    assert "CPU rehearsal, not GPU figures:" in text, text[:2000]
    assert "no comparison in bench: unsloth-lora: skipped" in text
