"""The model worker in-process: batching, left padding, one thread inside generate, and where models may come from."""

from __future__ import annotations

import json
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from server.engine import Engine, Request, SamplingParams
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


def _request(prompt_ids, **params) -> Request:
    return Request(prompt_ids, SamplingParams(**params), time.monotonic() + 60)


def _logprobs(req: Request) -> list[dict]:
    events = [req.events.get_nowait() for _ in range(req.events.qsize())]
    assert events[-1].kind == "done", events[-1]
    return [entry for ev in events for entry in ev.logprobs or []]


def test_left_padding_does_not_change_outputs(engine):
    """A short prompt batched with longer ones (so it is left-padded) gives the same greedy tokens and logprobs
    as on its own. One generate call makes the batch (no timing), and tokens are compared only while the top two
    candidates are 1e-3 apart: padding moves logits by ~1e-6, so a nearer tie may legitimately break the other
    way, after which the two continuations need not agree."""
    short = engine.encode_prompt("Kick")
    longer = [
        engine.encode_prompt("A much longer prompt about mixing the low end of a dance track " * k) for k in (1, 2, 3)
    ]
    params = dict(max_new_tokens=8, temperature=0, logprobs=True, top_logprobs=2, ignore_eos=True)
    alone = _request(short, **params)
    engine.generate([alone])
    batch = [_request(ids, **params) for ids in [short, *longer]]
    engine.generate(batch)
    # this fixture's margins are far above 1e-3: the comparison is not vacuous
    assert _comparable_steps(_logprobs(alone), _logprobs(batch[0])) >= 4


def _comparable_steps(alone: list[dict], joined: list[dict]) -> int:
    """Logprobs agree within 1e-4 and tokens agree while the top two candidates are 1e-3 apart (see above)."""
    compared = 0
    for a, b in zip(alone, joined, strict=True):
        assert b["logprob"] == pytest.approx(a["logprob"], abs=1e-4)
        top1, top2 = a["top_logprobs"]
        if top1["logprob"] - top2["logprob"] < 1e-3:
            break
        assert b["token"] == a["token"]
        compared += 1
    return compared


@pytest.fixture(scope="module")
def bare_engine(engine):
    """The module's model without a worker thread, so a test alone decides what is in the queue and when."""
    eng = Engine(max_queue=64, max_batch=8, batch_window_ms=0)
    eng.loaded, eng.eos_ids = engine.loaded, engine.eos_ids
    return eng


def test_requests_join_a_running_batch_with_the_same_outputs(bare_engine):
    """Continuous batching: requests queued while a batch decodes join it between steps (one batch in all) and
    give the tokens and logprobs they give alone: a longer prompt than the running rows' width (the running rows
    get left-padded), a shorter one, and rows that finish before the others (their columns are cut)."""
    eng = bare_engine
    params = dict(temperature=0, logprobs=True, top_logprobs=2, ignore_eos=True)
    first = (eng.encode_prompt("Kick"), 12)
    late = {  # decoding step at which it is queued -> (prompt, max_new_tokens)
        2: (eng.encode_prompt("A much longer prompt about mixing the low end of a dance track " * 2), 10),
        5: (eng.encode_prompt("Snare"), 3),
        7: (eng.encode_prompt("Reverb on vocals?"), 9),
    }
    alone = {}
    for key, (ids, n) in [("first", first), *late.items()]:
        alone[key] = _request(ids, max_new_tokens=n, **params)
        eng.generate([alone[key]])

    model, original, calls = eng.loaded.model, eng.loaded.model.forward, [0]
    queued = {}

    def forward_that_queues(*args, **kwargs):  # the real forward; between steps, late requests arrive
        calls[0] += 1
        if calls[0] in late:
            ids, n = late[calls[0]]
            queued[calls[0]] = _request(ids, max_new_tokens=n, **params)
            eng._queue.put_nowait(queued[calls[0]])
        return original(*args, **kwargs)

    model.forward = forward_that_queues
    try:
        batches_before = eng.batches_run
        running = _request(first[0], max_new_tokens=first[1], **params)
        eng.generate([running])
    finally:
        model.forward = original
    assert eng.batches_run == batches_before + 1 and eng._queue.empty()  # all joined the one batch
    assert _comparable_steps(_logprobs(alone["first"]), _logprobs(running)) >= 4
    for step, req in queued.items():
        assert req.completion_tokens == late[step][1]
        assert _comparable_steps(_logprobs(alone[step]), _logprobs(req)) >= min(3, late[step][1])


def test_a_failure_after_a_join_reaches_the_joined_request_too(bare_engine):
    eng = bare_engine
    model, original, calls = eng.loaded.model, eng.loaded.model.forward, [0]
    late = _request(eng.encode_prompt("Snare"), max_new_tokens=8)

    def forward_that_fails(*args, **kwargs):  # queues a request at the first step, breaks two steps after it joined
        calls[0] += 1
        if calls[0] == 2:
            eng._queue.put_nowait(late)
        if calls[0] == 5:
            raise RuntimeError("simulated out of memory")
        return original(*args, **kwargs)

    model.forward = forward_that_fails
    try:
        eng._run_batch([_request(eng.encode_prompt("Kick"), max_new_tokens=8)])
    finally:
        model.forward = original
    events = [late.events.get_nowait() for _ in range(late.events.qsize())]
    assert events[0].kind == "delta" and events[-1].kind == "error" and events[-1].error == "failed"


def test_static_batching_leaves_late_requests_waiting(bare_engine):
    eng = bare_engine
    eng.continuous = False
    try:
        late = _request(eng.encode_prompt("Snare"), max_new_tokens=2)
        eng._queue.put_nowait(late)
        eng.generate([_request(eng.encode_prompt("Kick"), max_new_tokens=3)])
        assert eng._queue.get_nowait() is late and late.events.empty()
    finally:
        eng.continuous = True


def test_token_budget_keeps_a_long_request_out_of_a_short_batch():
    """rows x (longest prompt + largest max_new_tokens) <= max_batch_tokens; the request that does not fit goes
    first into the next batch (not skipped over), and a cancelled one takes no room."""
    engine = Engine(max_batch=8, batch_window_ms=0, max_batch_tokens=100)  # the policy alone: no model, no worker
    shorts = [_request([1] * 10, max_new_tokens=10) for _ in range(4)]
    long = _request([1] * 60, max_new_tokens=20)
    cancelled = _request([1] * 10, max_new_tokens=10)
    cancelled.cancel()
    for req in (shorts[0], long, cancelled, shorts[1], shorts[2], shorts[3]):
        engine._queue.put_nowait(req)
    assert engine._collect_batch() == [shorts[0]]  # 2 x (60 + 20) = 160 > 100
    assert engine.queue_depth() == 5  # the held request still counts as waiting
    assert engine._collect_batch() == [long]  # alone over the budget is allowed: the context length bounds it
    assert cancelled.events.get_nowait().error == "timeout"
    assert engine._collect_batch() == shorts[1:]  # 3 x 20 = 60
    assert engine.queue_depth() == 0


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
            outs = list(
                pool.map(
                    lambda i: _run(engine, engine.encode_prompt(f"q{i}"), max_new_tokens=4 + i % 4, seed=i), range(32)
                )
            )
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


def test_symlinked_files_out_of_allowed_folders_are_refused(fake_root, tiny_model_dir, tmp_path):
    """The folder is inside the runs dir, but one of its files (or subfolders) leads out of every allowed root."""
    cache = "~/.cache/musicprod/models"
    roots = make_roots(fake_root / "runs", [str(tiny_model_dir)], cache)
    adapter = fake_root / "runs" / "fake" / "hf-lora" / "adapter"
    outside = tmp_path / "outside"
    outside.mkdir()
    shutil.copy(adapter / "adapter_model.safetensors", outside / "weights.safetensors")
    for name, link_to in (("file-link", outside / "weights.safetensors"), ("dir-link", outside)):
        evil = fake_root / "runs" / "fake" / name / "adapter"
        shutil.copytree(adapter, evil)
        if name == "file-link":
            (evil / "adapter_model.safetensors").unlink()
            (evil / "adapter_model.safetensors").symlink_to(link_to)
        else:
            (evil / "extra").symlink_to(link_to, target_is_directory=True)
        with pytest.raises(ServeError, match=r"file in --adapter .* outside the allowed directories"):
            from_adapter(str(evil), roots, cache, str(tiny_model_dir))
        shutil.rmtree(evil.parent)
    inside = fake_root / "runs" / "fake" / "inside-link" / "adapter"  # a link that stays inside is fine
    shutil.copytree(adapter, inside)
    (inside / "adapter_model.safetensors").unlink()
    (inside / "adapter_model.safetensors").symlink_to(adapter / "adapter_model.safetensors")
    try:
        assert from_adapter(str(inside), roots, cache, str(tiny_model_dir)).adapter_path == str(inside)
    finally:
        shutil.rmtree(inside.parent)
