"""Pure figures of the GPU benchmark: the Unsloth/HF pairs, speed-up and VRAM-saving ratios, FLOPs per token and
MFU. No side effects and no heavy imports, so the report (reports/gpu.py) can import it without the benchmark.
"""

from __future__ import annotations

from harness.registry import SYSTEMS

# (label, Hugging Face system, its Unsloth counterpart): the comparisons the benchmark exists for, from the registry.
PAIRS = [
    ("QLoRA" if s.quantized else "LoRA", s.name, s.counterpart)
    for s in SYSTEMS
    if s.framework == "hf" and s.counterpart
]
# Dense bf16 peak TFLOP/s (no sparsity), vendor datasheets. Matched on torch.cuda.get_device_name(); else null.
PEAK_BF16_TFLOPS = [("H100 PCIe", 756.0), ("H100", 989.4), ("H200", 989.4), ("A100", 312.0), ("L4", 121.0)]


def peak_bf16_tflops(gpu_name: str | None) -> float | None:
    if not gpu_name:
        return None
    return next((tflops for key, tflops in PEAK_BF16_TFLOPS if key.lower() in gpu_name.lower()), None)


def flops_per_token(n_params: int, n_layers: int, hidden: int, seq_len: float) -> float:
    """Training FLOPs per token: 6N (forward + backward matmuls) + 12 L d T (attention scores and values)."""
    return 6.0 * n_params + 12.0 * n_layers * hidden * seq_len


def mfu(tokens_per_s: float | None, fpt: float, gpu_name: str | None) -> float | None:
    peak = peak_bf16_tflops(gpu_name)
    if not tokens_per_s or peak is None:
        return None
    return round(tokens_per_s * fpt / (peak * 1e12), 4)


def _ratio(a, b) -> float | None:
    return round(a / b, 3) if a and b else None


def _saving(unsloth, hf) -> float | None:
    return round(1.0 - unsloth / hf, 3) if unsloth and hf else None


def _diff(a, b) -> float | None:
    return round(a - b, 4) if a is not None and b is not None else None


def pair_ratios(rows: list[dict]) -> list[dict]:
    """Unsloth relative to HF, per experiment and pair: speed-up of steady tokens/s, VRAM saving (1 - unsloth/hf)
    of peak allocated and reserved memory, and loss differences. A pair with a system that did not finish ok gets
    no figures, only the reason."""
    by_key = {(r["experiment"], r["system"]): r for r in rows}
    out = []
    for experiment in dict.fromkeys(r["experiment"] for r in rows):
        for label, hf_name, unsloth_name in PAIRS:
            hf, un = by_key.get((experiment, hf_name)), by_key.get((experiment, unsloth_name))
            if hf is None and un is None:
                continue
            entry = {
                "experiment": experiment,
                "pair": label,
                "hf": hf_name,
                "unsloth": unsloth_name,
                "synthetic": bool((hf or un).get("synthetic")),
                "max_length": (hf or un).get("max_length"),
            }
            missing = [
                f"{name}: {(r or {}).get('status', 'not run')}" + (f" ({r['reason']})" if r and r.get("reason") else "")
                for name, r in ((hf_name, hf), (unsloth_name, un))
                if not r or r.get("status") != "ok"
            ]
            if missing:
                out.append({**entry, "reason": "; ".join(missing)})
                continue
            out.append(
                {
                    **entry,
                    "reason": None,
                    "speedup": _ratio(un["steady_tokens_per_s"], hf["steady_tokens_per_s"]),
                    "step_time_ratio": _ratio(un["step_time_p50_s"], hf["step_time_p50_s"]),
                    "vram_allocated_saving": _saving(un["peak_vram_allocated_mib"], hf["peak_vram_allocated_mib"]),
                    "vram_reserved_saving": _saving(un["peak_vram_reserved_mib"], hf["peak_vram_reserved_mib"]),
                    "final_train_loss_diff": _diff(un["final_train_loss"], hf["final_train_loss"]),
                    "validation_loss_diff": _diff(un["validation_loss"], hf["validation_loss"]),
                }
            )
    return out
