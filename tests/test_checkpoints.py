"""Checkpoints: a training run killed with SIGKILL resumes from its newest checkpoint and ends with the loss curve
of an uninterrupted run; a checkpoint is an evaluation target (SYSTEM@STEP)."""

import json
import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

from tests.conftest import REPO

STEPS = 40


def _overrides(tmp_path, tiny_model_dir, tiny_dataset, name):
    # fp32 and a constant rate: the resumed run must repeat the uninterrupted one to rounding, not to bf16 noise
    return [
        f"runs_dir={tmp_path / 'runs'}",
        f"name={name}",
        f"model.name={tiny_model_dir}",
        f"data.train_path={tiny_dataset}",
        f"train.max_steps={STEPS}",
        "train.logging_steps=1",
        "train.batch_size=2",
        "train.save_steps=4",
        "train.bf16=false",
        "train.compile=false",
        "train.lr_scheduler=constant",
        "train.warmup_ratio=0",
        "data.validation_fraction=0.2",
    ]


def _train(args, **kw):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, "-m", "harness.cli", "train", "hf-lora", *args],
        cwd=REPO,
        env=env,
        stdout=open(os.environ.get("CKPT_LOG", os.devnull), "a"),
        stderr=subprocess.STDOUT,
        **kw,
    )


def _curve(tmp_path, name):
    record = json.loads((tmp_path / "runs" / name / "hf-lora" / "run.json").read_text())
    assert record["status"] == "ok", record.get("reason")
    return record, [(p["step"], p["loss"], p["tokens"]) for p in record["loss_curve"]]


def test_killed_run_resumes_with_the_uninterrupted_loss_curve(tmp_path, tiny_model_dir, tiny_dataset):
    assert _train(_overrides(tmp_path, tiny_model_dir, tiny_dataset, "whole")).wait(timeout=600) == 0
    _, whole = _curve(tmp_path, "whole")

    args = _overrides(tmp_path, tiny_model_dir, tiny_dataset, "killed")
    cli = _train(args)
    checkpoints = tmp_path / "runs" / "killed" / "hf-lora" / "trainer"
    deadline = time.monotonic() + 600
    while not (checkpoints / "checkpoint-8").is_dir():
        assert cli.poll() is None and time.monotonic() < deadline, "training ended before it could be killed"
        time.sleep(0.02)
    workers = psutil.Process(cli.pid).children(recursive=True)
    for w in workers:
        w.send_signal(signal.SIGKILL)  # the training process dies mid-run, as with kill -9
    cli.wait(timeout=60)
    killed = json.loads((tmp_path / "runs" / "killed" / "hf-lora" / "run.json").read_text())
    assert killed["status"] == "failed" and "without a record" in killed["reason"]
    # a checkpoint the kill cut short has no trainer_state.json (written last) and must be skipped
    saved = sorted(int(p.parent.name.split("-")[1]) for p in checkpoints.glob("checkpoint-*/trainer_state.json"))
    assert saved and saved[-1] < STEPS

    assert _train([*args, "--resume"]).wait(timeout=600) == 0
    record, resumed = _curve(tmp_path, "killed")
    assert record["resumed_from"].endswith(f"checkpoint-{saved[-1]}")
    assert [s for s, _, _ in resumed] == [s for s, _, _ in whole] == list(range(1, STEPS + 1))
    for (step, loss, tokens), (_, want_loss, want_tokens) in zip(resumed, whole):
        assert loss == pytest.approx(want_loss, rel=1e-4), step
        assert tokens == want_tokens, step  # the resumed run trained on the same batches, counted once
    assert record["train_tokens"] == whole[-1][2]


def test_a_checkpoint_is_an_evaluation_target(tmp_path, tiny_model_dir, tiny_dataset):
    from harness.config import experiment_config
    from harness.eval.run import EvalError, run_eval

    args = [*_overrides(tmp_path, tiny_model_dir, tiny_dataset, "ckpt"), "train.max_steps=8"]
    assert _train(args).wait(timeout=600) == 0
    exp = tmp_path / "runs" / "ckpt"
    settings = experiment_config(
        exp,
        [
            "eval.limit=2",
            "eval.decoding.max_new_tokens=3",
            "eval.batch_size=2",
            "eval.dtype=float32",
            "eval.split=dev",
            "eval.bootstrap_resamples=200",
        ],
    ).eval
    summary = run_eval(exp, settings, only=["base", "hf-lora@4"])
    assert summary["split"] == "dev" and set(summary["targets"]) >= {"base", "hf-lora@4"}
    assert (exp / "eval-dev" / "hf-lora@4" / "generations.jsonl").exists()
    assert any(p["a"] == "hf-lora@4" and p["b"] == "base" for p in summary["paired"])
    with pytest.raises(EvalError, match="checkpoint-5.*saved: checkpoint-4, checkpoint-8"):
        run_eval(exp, settings, only=["hf-lora@5"])
