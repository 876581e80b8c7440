"""Shared set-up for the server tests: a fake experiment around the tiny model with a real LoRA adapter."""

from __future__ import annotations

import json
from pathlib import Path


def make_adapter(base_dir: Path, out: Path, nonzero: bool = True) -> Path:
    """A real PEFT LoRA adapter for the model at base_dir (random B when nonzero, so it changes outputs)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(1)
    model = AutoModelForCausalLM.from_pretrained(base_dir)
    config = LoraConfig(
        r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM", init_lora_weights=not nonzero
    )
    peft_model = get_peft_model(model, config)
    peft_model.save_pretrained(out)
    return out


def make_experiment(
    root: Path, base_dir: Path, name: str = "fake", system: str = "hf-lora", nonzero: bool = True
) -> Path:
    """root/runs/<name>/<system>/adapter + root/runs/<name>/champion.json (contract of CONTRACTS.md)."""
    exp = root / "runs" / name
    adapter = make_adapter(base_dir, exp / system / "adapter", nonzero)
    champion = {
        "experiment": name,
        "system": system,
        "base_model": "tiny-llama",
        "base_model_path": str(base_dir),
        "adapter_path": f"runs/{name}/{system}/adapter",
        "scores": {},
        "rule": "test fixture",
        "created_at": "2026-11-24T00:00:00+00:00",
    }
    (exp / "champion.json").write_text(json.dumps(champion))
    assert adapter.is_dir()
    return exp


def long_context_copy(base_dir: Path, out: Path, positions: int = 4096) -> Path:
    """The same tiny model with room for `positions` tokens (Llama's rotary positions have no weights), so a
    request can ask for thousands of tokens: a generation that lasts seconds on any machine."""
    import shutil

    shutil.copytree(base_dir, out)
    config = json.loads((out / "config.json").read_text())
    (out / "config.json").write_text(json.dumps({**config, "max_position_embeddings": positions}))
    return out


def send_request(url: str, path: str, body: dict, headers: dict | None = None):
    """A POST over a raw socket whose answer is never read: the request is held until the socket is closed
    (which is how a client that gives up looks to the server)."""
    import socket
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    data = json.dumps(body).encode()
    head = "".join(
        f"{k}: {v}\r\n"
        for k, v in {
            "Host": parts.netloc,
            "Content-Type": "application/json",
            "Content-Length": str(len(data)),
            **(headers or {}),
        }.items()
    )
    sock = socket.create_connection((parts.hostname, parts.port), timeout=30)
    sock.sendall(f"POST {path} HTTP/1.1\r\n{head}\r\n".encode() + data)
    return sock


def metric(url: str, name: str, headers: dict | None = None) -> float:
    """One unlabelled sample of the server's /metrics."""
    import requests

    text = requests.get(f"{url}/metrics", headers=headers, timeout=30).text
    values = [float(line.split()[-1]) for line in text.splitlines() if line.split(" ")[0] == name]
    assert values, f"{name} not in /metrics"
    return values[0]


def wait_until(condition, timeout_s: float, what: str, poll_s: float = 0.1):
    """Poll `condition()` until it is truthy; fail naming `what` after timeout_s."""
    import time

    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        value = condition()
        if value:
            return value
        time.sleep(poll_s)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


def serve_args(root, tiny_model_dir, *extra) -> list[str]:
    """`musicprod serve` options for the fake experiment under root (make_experiment), one torch thread."""
    return [
        "--runs-dir",
        str(root / "runs"),
        "--experiment",
        "fake",
        "--model-dir",
        str(tiny_model_dir),
        "--torch-threads",
        "1",
        *extra,
    ]
