"""The llama.cpp serving backend: the exported GGUF of the tiny experiment behind the same Flask API.

Tests that load llama.cpp skip when llama-cpp-python is not installed (it is the optional `llamacpp` extra and
compiles llama.cpp); backend selection and its errors are tested either way."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.export_helpers import PROMPTS, gguf_converter, make_export_experiment, quiet  # noqa: F401

try:
    import llama_cpp  # noqa: F401

    HAVE_LLAMA = True
except ImportError:
    HAVE_LLAMA = False
needs_llama = pytest.mark.skipif(
    not HAVE_LLAMA, reason="llama-cpp-python is not installed (pip install -e '.[llamacpp]', compiles llama.cpp)"
)
N = 12


@pytest.fixture(scope="module")
def exported(tmp_path_factory, tiny_model_dir, gguf_converter):  # noqa: F811 (pytest fixture)
    from export import run_export

    root = tmp_path_factory.mktemp("llamacpp")
    exp = make_export_experiment(root, tiny_model_dir)
    run_export(exp, formats="merged,gguf", converter=str(gguf_converter), log=quiet)
    return root, exp, tiny_model_dir


def _roots(root: Path, base_dir: Path):
    """The runs folder and the tiny base model's folder (the champion's base) are the allowed folders."""
    from server.loading import make_roots

    return make_roots(root / "runs", [str(base_dir)], "~/.cache/musicprod/models")


def _target(root: Path, exp: Path, base_dir: Path):
    from server.loading import from_champion

    return from_champion("fake", _roots(root, base_dir), "~/.cache/musicprod/models")


@pytest.fixture(scope="module")
def served(exported):
    """LlamaCppEngine on the exported f16 GGUF inside the real Flask app (in-process)."""
    if not HAVE_LLAMA:
        pytest.skip("llama-cpp-python is not installed (pip install -e '.[llamacpp]', compiles llama.cpp)")
    from server.app import ServeSettings, create_app
    from server.llamacpp import LlamaCppEngine, load_gguf

    root, exp, base_dir = exported
    target = _target(root, exp, base_dir)
    gguf = exp / "export" / "hf-lora" / "gguf" / "fake-hf-lora-f16.gguf"
    engine = LlamaCppEngine(max_batch=4, batch_window_ms=300)
    engine.load(lambda: load_gguf(target, gguf, max_batch=4, n_threads=1, context_length=256))
    assert engine.ready, engine.load_error
    app = create_app(engine, ServeSettings(max_new_tokens_cap=200))
    yield engine, app.test_client(), gguf
    engine.stop()


def _ids_hf(tok, prompt):
    text = tok.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True)
    return tok(text, add_special_tokens=False)["input_ids"]


@needs_llama
def test_gguf_tokenizer_and_template_match_the_evaluated_ones(served, exported):
    """Prompt ids from the GGUF's own tokenizer + chat template == those of the HF tokenizer that was evaluated."""
    from transformers import AutoTokenizer

    engine, _, _ = served
    _, exp, _ = exported
    tok = AutoTokenizer.from_pretrained(exp / "export" / "hf-lora" / "merged")
    for prompt in PROMPTS:
        assert engine.encode_prompt(messages=[{"role": "user", "content": prompt}]) == _ids_hf(tok, prompt), prompt
        raw = f"Q: {prompt}\nA:"
        assert engine.encode_prompt(prompt=raw) == tok(raw)["input_ids"]
        ids = tok(prompt, add_special_tokens=False)["input_ids"]
        assert engine.loaded.tokenizer.decode(ids, skip_special_tokens=True) == prompt
    assert 2 in engine.eos_ids  # <|im_end|> ends a turn


def _reference_greedy(gguf: Path, prompt_ids: list[int], n: int) -> list[int]:
    """llama-cpp-python's own single-sequence path: eval + argmax, n tokens."""
    import numpy as np
    from llama_cpp import Llama

    llm = Llama(model_path=str(gguf), n_ctx=256, n_threads=1, logits_all=True, verbose=False)
    llm.eval(prompt_ids)
    out = []
    for _ in range(n):
        token = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        out.append(token)
        llm.eval([token])
    return out


def _collect(req):
    parts = []
    while True:
        ev = req.events.get(timeout=120)
        assert ev.kind != "error", ev.error
        parts.append(ev.text)
        if ev.kind == "done":
            return "".join(parts), ev.finish_reason


@needs_llama
def test_batched_greedy_equals_single_sequence_llama(served):
    """Four requests decoded together (one KV sequence each) give what llama.cpp's own one-at-a-time loop gives."""
    from server.engine import SamplingParams

    engine, _, gguf = served
    prompts = [engine.encode_prompt(messages=[{"role": "user", "content": p}]) for p in PROMPTS[:4]]
    before = engine.batches_run
    reqs = [engine.submit(ids, SamplingParams(max_new_tokens=N, ignore_eos=True), 120) for ids in prompts]
    texts = [_collect(r)[0] for r in reqs]
    assert engine.batches_run == before + 1, "the four requests did not share one batch"
    tok = engine.loaded.tokenizer
    for ids, text in zip(prompts, texts):
        expected = tok.decode(_reference_greedy(gguf, ids, N), skip_special_tokens=True)
        assert text == expected


@needs_llama
def test_api_generate_stream_stop_limits_metrics(served):
    engine, client, _ = served
    messages = [{"role": "user", "content": PROMPTS[0]}]
    r = client.post("/generate", json={"messages": messages, "max_new_tokens": N, "ignore_eos": True})
    assert r.status_code == 200, r.get_json()
    body = r.get_json()
    assert body["model"] == "fake/hf-lora" and body["usage"]["completion_tokens"] == N and body["text"]

    chat = {"model": "fake/hf-lora", "messages": messages, "max_tokens": N, "temperature": 0}
    plain = client.post("/v1/chat/completions", json=chat).get_json()["choices"][0]["message"]["content"]
    stream = client.post("/v1/chat/completions", json={**chat, "stream": True})
    assert stream.status_code == 200 and stream.mimetype == "text/event-stream"
    events = [line[6:] for line in stream.get_data(as_text=True).splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    streamed = "".join((json.loads(e)["choices"][0]["delta"].get("content") or "") for e in events[:-1])
    assert streamed == plain

    full = client.post("/generate", json={"messages": messages, "max_new_tokens": N, "ignore_eos": True}).get_json()
    stop = full["text"][len(full["text"]) // 2 :][:3]
    if stop.strip():
        cut = client.post(
            "/generate", json={"messages": messages, "max_new_tokens": N, "ignore_eos": True, "stop": [stop]}
        ).get_json()
        assert cut["finish_reason"] == "stop" and cut["text"] == full["text"][: full["text"].find(stop)]

    lp = client.post("/v1/chat/completions", json={**chat, "logprobs": True, "top_logprobs": 2}).get_json()
    content = lp["choices"][0]["logprobs"]["content"]
    assert len(content) == N and all(len(t["top_logprobs"]) == 2 and t["logprob"] <= 0 for t in content)

    assert client.post("/generate", json={"messages": messages, "max_new_tokens": "x"}).status_code == 400
    too_long = client.post("/generate", json={"prompt": "word " * 300, "max_new_tokens": 8})
    assert too_long.status_code == 400 and too_long.get_json()["error"]["code"] == "context_length_exceeded"
    metrics = client.get("/metrics").get_data(as_text=True)
    generated = [
        float(line.split()[-1]) for line in metrics.splitlines() if line.startswith("musicprod_generated_tokens_total ")
    ]
    assert generated and generated[0] >= 3 * N
    ready = client.get("/ready").get_json()
    assert ready["ready"] is True


@needs_llama
def test_cancelled_request_leaves_the_batch(served, monkeypatch):
    """A client that goes away mid-generation stops costing tokens; the other rows finish normally.
    The cancel arrives at the long request's 5th token (inside the engine's step), not after a sleep: the tiny
    model decodes 150 tokens faster than any timer."""
    from server.engine import SamplingParams

    engine, _, _ = served
    step_row, requests = engine._step_row, {}

    def step_then_cancel(row, logits):
        token = step_row(row, logits)
        if row.req is requests.get("long") and len(row.tokens) == 5:
            row.req.cancel()
        return token

    monkeypatch.setattr(engine, "_step_row", step_then_cancel)
    ids = engine.encode_prompt(messages=[{"role": "user", "content": PROMPTS[1]}])
    requests["long"] = long = engine.submit(ids, SamplingParams(max_new_tokens=150, ignore_eos=True), 120)
    short = engine.submit(ids, SamplingParams(max_new_tokens=N, ignore_eos=True), 120)
    assert _collect(short)[1] == "length" and short.completion_tokens == N
    end = time.monotonic() + 60
    while time.monotonic() < end and engine.active_rows:
        time.sleep(0.05)
    assert 5 <= long.completion_tokens <= 6  # stopped at the step after the cancel


def test_backend_choice_and_errors(exported, monkeypatch):
    """auto picks llama.cpp only when it is installed and an export exists; explicit requests fail clearly."""
    import server.llamacpp as lc
    from server.loading import ServeError

    root, exp, base_dir = exported
    target = _target(root, exp, base_dir)
    assert lc.exported_gguf(target).name == "fake-hf-lora-q8_0.gguf"  # half the bytes; f16 when no q8_0 exists
    assert lc.choose_backend("torch", target, None)[0] == "torch"
    monkeypatch.setattr(lc, "available", lambda: False)
    assert lc.choose_backend("auto", target, None) == ("torch", "auto: llama-cpp-python is not installed")
    with pytest.raises(ServeError, match="llama-cpp-python is not installed"):
        lc.choose_backend("llamacpp", target, None)
    monkeypatch.setattr(lc, "available", lambda: True)
    assert lc.choose_backend("auto", target, None)[0] == "llamacpp"
    roots = _roots(root, base_dir)
    with pytest.raises(ServeError, match="--gguf folder '/nowhere' resolves to /nowhere, outside the allowed"):
        lc.resolve_gguf(target, "/nowhere/x.gguf", roots)
    missing = root / "runs" / "x.gguf"
    with pytest.raises(ServeError, match=f"--gguf '{missing}': no such file"):
        lc.resolve_gguf(target, str(missing), roots)
    moved = exp / "export" / "hf-lora" / "gguf"
    moved.rename(moved.with_name("gguf-away"))
    try:
        assert lc.choose_backend("auto", target, None)[0] == "torch"
        with pytest.raises(ServeError, match=r"no exported GGUF .*musicprod export fake --format gguf"):
            lc.resolve_gguf(target, None, roots)
    finally:
        moved.with_name("gguf-away").rename(moved)


@needs_llama
def test_q8_0_serves_with_extra_buffer_types_off(exported):
    """The q8_0 export is what the backend picks; it loads with llama.cpp's extra CPU buffer types off (with them
    every q8_0 crashed llama_decode on our AMX CPUs), and the switch is scoped to the load."""
    import llama_cpp

    from server.engine import SamplingParams
    from server.llamacpp import LlamaCppEngine, load_gguf, model_params

    lib = llama_cpp.llama_cpp  # the bindings module llama_cpp.Llama builds its model parameters from
    default = lib.llama_model_default_params().use_extra_bufts
    with model_params(use_extra_bufts=not default):
        assert lib.llama_model_default_params().use_extra_bufts is (not default)
    assert lib.llama_model_default_params().use_extra_bufts is default

    root, exp, base_dir = exported
    target = _target(root, exp, base_dir)
    gguf = exp / "export" / "hf-lora" / "gguf" / "fake-hf-lora-q8_0.gguf"
    engine = LlamaCppEngine(max_batch=2, batch_window_ms=50)
    engine.load(lambda: load_gguf(target, gguf, max_batch=2, n_threads=1, context_length=128))
    try:
        assert engine.ready, engine.load_error
        assert engine.loaded.load_info["extra_buffer_types"] is False
        assert engine.loaded.load_info["gguf"].endswith("q8_0.gguf")
        request = engine.submit([1, 2, 3], SamplingParams(max_new_tokens=6, ignore_eos=True), 60)
        assert _collect(request)[1] == "length" and request.completion_tokens == 6
    finally:
        engine.stop()
