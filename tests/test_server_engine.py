"""The model worker in-process: batching, left padding, one thread inside generate, and where models may come from."""
from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from server.engine import Engine, SamplingParams
from server.loading import ServeError, from_adapter, from_champion, load_model, make_roots
from tests.server_helpers import make_experiment


@pytest.fixture(scope="module")
def fake_root(tmp_path_factory, tiny_model_dir):
    root = tmp_path_factory.mktemp("engine")
    make_experiment(root, tiny_model_dir)
    return root


@pytest.fixture(scope="module")
def engine(fake_root, tiny_model_dir):
    roots = make_roots(fake_root / "runs", [str(tiny_model_dir)], "~/.cache/musicprod/models")
    target = from_champion("fake", roots, "~/.cache/musicprod/models")
    eng = Engine(max_queue=64, max_batch=8, batch_window_ms=20)
    eng.load(lambda: load_model(target, dtype="float32", merge="yes"))
    assert eng.ready, eng.load_error
    yield eng
    eng.stop()


def _run(engine, prompt_ids, **params):
    req = engine.submit(prompt_ids, SamplingParams(**params), timeout_s=60)
    parts, logprobs = [], []
    while True:
        ev = req.events.get(timeout=60)
        assert ev.kind != "error", ev.error
        parts.append(ev.text)
        logprobs += ev.logprobs or []
        if ev.kind == "done":
            return "".join(parts), logprobs, req


def test_left_padding_does_not_change_outputs(engine):
    """A short prompt batched with longer ones (so it is left-padded) gives the same greedy tokens and logprobs
    as on its own."""
    short = engine.encode_prompt("Kick")
    longer = [engine.encode_prompt("A much longer prompt about mixing the low end of a dance track " * k)
              for k in (1, 2, 3)]
    alone_text, alone_lp, _ = _run(engine, short, max_new_tokens=8, temperature=0, logprobs=True, ignore_eos=True)
    batches_before = engine.batches_run
    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(_run, engine, ids, max_new_tokens=8, temperature=0, logprobs=True, ignore_eos=True)
                   for ids in [short, *longer]]
        batched_text, batched_lp, _ = futures[0].result()
        [f.result() for f in futures[1:]]
    assert engine.batches_run - batches_before < 4  # they really shared a batch
    assert batched_text == alone_text
    assert [e["logprob"] for e in batched_lp] == pytest.approx([e["logprob"] for e in alone_lp], abs=1e-4)


def test_never_two_threads_inside_the_model(engine):
    model = engine.loaded.model
    inside, peak, lock = [0], [0], threading.Lock()
    original = model.forward

    def counting_forward(*args, **kwargs):  # the real forward, with an occupancy counter around it
        with lock:
            inside[0] += 1
            peak[0] = max(peak[0], inside[0])
        try:
            return original(*args, **kwargs)
        finally:
            with lock:
                inside[0] -= 1

    model.forward = counting_forward
    try:
        with ThreadPoolExecutor(16) as pool:
            outs = list(pool.map(lambda i: _run(engine, engine.encode_prompt(f"q{i}"), max_new_tokens=4 + i % 4,
                                                seed=i), range(32)))
    finally:
        model.forward = original
    assert peak[0] == 1
    assert all(req.completion_tokens <= 4 + i % 4 for i, (_, _, req) in enumerate(outs))


def test_paths_outside_roots_are_refused(fake_root, tiny_model_dir, tmp_path):
    cache = "~/.cache/musicprod/models"
    roots = make_roots(fake_root / "runs", [str(tiny_model_dir)], cache)
    with pytest.raises(ServeError, match="experiment name"):
        from_champion("../fake", roots, cache)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    with pytest.raises(ServeError, match="outside the allowed"):
        from_adapter(str(outside), roots, cache)
    with pytest.raises(ServeError, match="outside the allowed"):  # '..' out of the runs dir
        from_adapter(str(fake_root / "runs" / ".." / ".." / tmp_path.name / "elsewhere"), roots, cache)
    champ_file = fake_root / "runs" / "fake" / "champion.json"
    good = champ_file.read_text()
    try:
        champ_file.write_text(json.dumps({**json.loads(good), "adapter_path": "runs/fake/../../../etc"}))
        with pytest.raises(ServeError, match="adapter_path"):
            from_champion("fake", roots, cache)
        champ_file.write_text(json.dumps({**json.loads(good), "base_model_path": str(outside)}))
        with pytest.raises(ServeError, match="base_model_path"):
            from_champion("fake", roots, cache)
    finally:
        champ_file.write_text(good)
