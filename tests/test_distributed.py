"""Multi-process training through accelerate: 2-rank DDP on CPU (gloo) against one process, same global batch.

The comparison runs in float32 on a tiny random Llama, 6 optimizer steps of a global batch of 8 (2 ranks x 4
vs 1 process x 8, the same rows in every step). What may differ between the two runs is only the order of
floating-point sums (gloo's all-reduce of the ranks' gradients vs one batch's reduction, per-rank vs joint
padding, the model's full-logits loss under DDP vs the answer-only projection in one process): measured, the
losses agree to ~1e-6 absolute (~1e-7 relative). The tolerance, 1e-4 relative per logged step, is ~1000x that
and still >50x smaller than what the 6 steps move the loss (asserted). What it catches: a loss not rescaled by
the number of ranks halves the logged loss; other rows per step change the per-step global token counts
(compared exactly) and, measured with another data seed, move the losses by 3e-4 to 1e-3 relative.
"""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from harness.cli import build_parser
from harness.cli.train import distributed_overrides
from harness.config import ConfigError, load_config
from harness.models import ResolvedModel
from harness.pipeline import train_system
from harness.registry import get_system
from tests.conftest import REPO, make_rows
from trainers.launch import free_port, worker_command

LOSS_RTOL = 1e-4


@pytest.fixture
def varied_dataset(tmp_path) -> Path:
    """make_rows with answers of different lengths, so that which rows share a step changes the loss."""
    rows = make_rows(60)
    for i, row in enumerate(rows):
        row["response"] += " Check it against a reference track at matched loudness." * (i % 7)
    path = tmp_path / "train.json"
    path.write_text(json.dumps(rows))
    return path


def train(tmp_path, model_dir, dataset, name, system="hf-lora", *extra):
    # 48 training rows = 6 steps of a global batch of 8: every step sees the same rows in both runs, no epoch wrap.
    overrides = [
        f"runs_dir={tmp_path / 'runs'}",
        f"name={name}",
        f"data.train_path={dataset}",
        "data.validation_fraction=0.1",
        "data.max_train_items=48",
        "train.max_steps=6",
        "train.logging_steps=1",
        "train.bf16=false",  # fp32 weights and adapters: the runs must agree to rounding, not to bf16 noise
        "train.compile=false",  # compiled kernels differ with the per-rank batch shape (4 vs 8 rows)
        "train.group_by_length=false",
        "train.learning_rate=0.001",
        "train.lr_scheduler=constant",
        "train.warmup_ratio=0",
        *extra,
    ]
    cfg = load_config(None, overrides)
    return train_system(cfg, None, overrides, system, ResolvedModel("tiny", str(model_dir), "0" * 64, {}))


def test_two_rank_ddp_matches_one_process_with_the_same_global_batch(tmp_path, tiny_model_dir, varied_dataset):
    single = train(tmp_path, tiny_model_dir, varied_dataset, "single", "hf-lora", "train.batch_size=8")
    ddp = train(
        tmp_path,
        tiny_model_dir,
        varied_dataset,
        "ddp",
        "hf-lora",
        "train.batch_size=4",
        "distributed.launcher=accelerate",
        "distributed.num_processes=2",
    )
    assert single["status"] == "ok", single.get("traceback")
    assert ddp["status"] == "ok", ddp.get("traceback")

    assert ddp["distributed"] == {
        "launcher": "accelerate",
        "num_processes": 2,
        "distributed_type": "MULTI_CPU",
        "backend": "gloo",
        "fsdp": False,
    }
    assert ddp["effective_settings"]["global_batch_size"] == single["effective_settings"]["global_batch_size"] == 8

    single_losses = [p["loss"] for p in single["loss_curve"]]
    ddp_losses = [p["loss"] for p in ddp["loss_curve"]]
    assert len(single_losses) == len(ddp_losses) == 6
    assert ddp_losses == pytest.approx(single_losses, rel=LOSS_RTOL)
    assert single_losses[0] - single_losses[-1] > 50 * LOSS_RTOL * single_losses[0]  # the tolerance is meaningful

    # The Trainer's token count is gathered across ranks: the same rows were trained on, so the global counts
    # match exactly; memory is measured per rank.
    assert [len(ddp["per_rank"]), [r["rank"] for r in ddp["per_rank"]]] == [2, [0, 1]]
    assert all(r["peak_rss_mib"] > 100 for r in ddp["per_rank"])
    assert ddp["train_tokens"] == single["train_tokens"] > 0
    assert [p["tokens"] for p in ddp["loss_curve"]] == [p["tokens"] for p in single["loss_curve"]]
    assert ddp["peak_rss_mib"] == max(r["peak_rss_mib"] for r in ddp["per_rank"])
    assert ddp["train_tokens_per_s"] == pytest.approx(ddp["train_tokens"] / ddp["train_wall_s"], rel=0.01)
    assert math.isfinite(ddp["validation_loss"])

    # Rank 0 alone wrote one record and one adapter, and the adapter equals the one-process adapter.
    system_dir = tmp_path / "runs" / "ddp" / "hf-lora"
    assert sorted(p.name for p in system_dir.iterdir()) == ["adapter", "run.json", "trainer"]
    assert not any((system_dir / "trainer").iterdir())
    assert json.loads((system_dir / "run.json").read_text())["per_rank"] == ddp["per_rank"]
    from safetensors.torch import load_file

    a = load_file(system_dir / "adapter" / "adapter_model.safetensors")
    b = load_file(tmp_path / "runs" / "single" / "hf-lora" / "adapter" / "adapter_model.safetensors")
    assert a.keys() == b.keys() and len(a) > 0
    for key in a:
        assert (a[key] - b[key]).abs().max().item() <= 1e-4 * max(1.0, b[key].abs().max().item()), key


def test_unsloth_is_skipped_with_more_than_one_process(tmp_path, tiny_model_dir, tiny_dataset):
    record = train(
        tmp_path,
        tiny_model_dir,
        tiny_dataset,
        "u",
        "unsloth-lora",
        "distributed.launcher=accelerate",
        "distributed.num_processes=2",
    )
    assert record["status"] == "skipped"
    assert "single GPU" in record["reason"] and "num_processes=2" in record["reason"]
    assert "train_tokens_per_s" not in record


def test_launch_command_and_config_keys(tmp_path):
    ns = build_parser().parse_args(["train", "hf-lora", "--launcher", "accelerate", "--num-processes", "2"])
    overrides = distributed_overrides(ns)
    assert overrides == ["distributed.launcher=accelerate", "distributed.num_processes=2"]
    after = build_parser().parse_args(
        ["train", "hf-lora", "train.max_steps=3", "--launcher", "accelerate", "--num-processes", "2"]
    )  # flags before SYSTEM or after the key=values
    assert after.args == ["train.max_steps=3"] and distributed_overrides(after) == overrides
    cfg = load_config(None, overrides)
    command = worker_command(cfg, get_system("hf-lora"), "spec.json")
    assert command[:3] == [sys.executable, "-m", "accelerate.commands.launch"]
    assert command[command.index("--num_processes") + 1] == "2"
    assert Path(command[command.index("--config_file") + 1]).name in ("ddp.yaml", "ddp-cpu.yaml")
    assert command[-3:] == ["-m", "trainers.worker", "spec.json"]
    # Unsloth never goes through accelerate; a plain process writes its skip record.
    assert worker_command(cfg, get_system("unsloth-lora"), "spec.json") == [
        sys.executable,
        "-m",
        "trainers.worker",
        "spec.json",
    ]
    fsdp = load_config(None, [*overrides, f"distributed.accelerate_config={REPO / 'configs/accelerate/fsdp.yaml'}"])
    assert "fsdp.yaml" in worker_command(fsdp, get_system("hf-lora"), "s.json")[4]

    with pytest.raises(ConfigError, match="needs distributed.launcher=accelerate"):
        load_config(None, ["distributed.num_processes=2"])
    with pytest.raises(ConfigError, match="distributed.launcher"):
        load_config(None, ["distributed.launcher=torchrun"])
    with pytest.raises(ConfigError, match="distributed.num_processes"):
        load_config(None, ["distributed.launcher=accelerate", "distributed.num_processes=0"])
    with pytest.raises(ConfigError, match="no such file"):
        load_config(None, [f"distributed.accelerate_config={tmp_path / 'missing.yaml'}"])
    yaml_path = tmp_path / "exp.yaml"
    yaml_path.write_text("distributed:\n  launcher: accelerate\n  num_processes: 4\n")
    assert load_config(yaml_path).distributed.num_processes == 4


def test_lm_eval_under_accelerate_on_cpu_runs_every_item_on_every_rank(tmp_path, tiny_model_dir):
    """`accelerate launch -m lm_eval` with 2 CPU ranks: lm-eval runs, but does not split the data.

    lm-eval's HFLM turns on data parallelism only when it counts more than one accelerator device
    (torch.cuda/npu/xpu/hpu.device_count() > 1); on CPU that count is 0, so each rank keeps rank 0 of a world
    of 1 and evaluates every item. This test pins that behaviour: if lm-eval starts sharding on CPU, it fails
    and the README's "Beyond one machine" section should say so.
    """
    command = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        str(REPO / "configs/accelerate/ddp-cpu.yaml"),
        "--num_processes",
        "2",
        "--main_process_port",
        str(free_port()),
        "-m",
        "lm_eval",
        "--model",
        "hf",
        "--model_args",
        f"pretrained={tiny_model_dir},dtype=float32",
        "--include_path",
        str(REPO / "benchmarks"),
        "--tasks",
        "musicprod_mc",
        "--limit",
        "4",
        "--batch_size",
        "4",
        "--output_path",
        str(tmp_path / "out"),
    ]
    proc = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-3000:]
    assert log.count("Building contexts for musicprod_mc on rank 0") == 2, log[-3000:]
    assert "on rank 1" not in log
    results = json.loads(next((tmp_path / "out").rglob("results_*.json")).read_text())
    assert results["n-samples"]["musicprod_mc"]["effective"] == 4
    assert 0 <= results["results"]["musicprod_mc"]["acc,none"] <= 1
