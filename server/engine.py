"""The model worker: one thread owns the model, takes requests from a bounded queue and generates them in
continuous batches: requests that arrive within a few milliseconds of each other start together, left-padded, and
requests that arrive while a batch is decoding join it between two steps (their prompt is prefilled on its own,
then its KV cache is stacked onto the running one).

Why a hand-written decoding loop instead of `model.generate`: generate applies one sampling configuration
(temperature, top_p, seed, stop strings) to a whole batch and cannot stream rows separately; a server batch mixes
requests with different settings and streams each one as it goes. The loop is the usual KV-cached one: a
left-padded prefill, then one token per row per step, rows leaving the batch (and the cache) as they finish and
joining it when they arrive.

A batch is also bounded in tokens (`max_batch_tokens`): every row is padded to the longest prompt and may run to
the largest max_new_tokens, so one long request would make every row pay its prefill, and several long ones could
exhaust memory (on CPU the kernel kills the process). A request that does not fit waits for the next batch, first
in line.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import uuid
from dataclasses import dataclass, field

log = logging.getLogger("musicprod.server")


MIN_TEMPERATURE = 1e-4


class QueueFull(Exception):
    """The bounded request queue is full (-> 429)."""


class NotReady(Exception):
    """The model is still loading or failed to load (-> 503)."""


@dataclass
class SamplingParams:
    max_new_tokens: int = 256
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0
    repetition_penalty: float = 1.0  # over the answer so far (harness.eval.generation.penalize_repeats)
    no_repeat_ngram_size: int = 0
    stop: list[str] = field(default_factory=list)
    seed: int | None = None
    logprobs: bool = False
    top_logprobs: int = 0
    ignore_eos: bool = False  # benchmarks: always generate max_new_tokens


@dataclass
class Event:
    kind: str  # "delta" | "done" | "error"
    text: str = ""
    logprobs: list | None = None  # per token: {token, logprob, bytes, top_logprobs}
    finish_reason: str | None = None
    error: str | None = None


class Request:
    def __init__(self, prompt_ids: list[int], params: SamplingParams, deadline: float):
        self.id = uuid.uuid4().hex
        self.prompt_ids = prompt_ids
        self.params = params
        self.deadline = deadline
        self.events: queue.Queue[Event] = queue.Queue()
        self.cancelled = threading.Event()
        self.enqueued_at = time.monotonic()
        self.completion_tokens = 0

    def cancel(self) -> None:
        self.cancelled.set()


class _Row:
    """Decoding state of one request inside a running batch."""

    def __init__(self, req: Request, eos_ids: set[int]):
        import torch

        self.req = req
        self.p = req.params
        self.eos_ids = set() if self.p.ignore_eos else eos_ids
        self.tokens: list[int] = []
        self.emitted = 0  # characters of the decoded completion already sent
        self.pending_logprobs: list[dict] = []
        self.hold = max((len(s) for s in self.p.stop), default=1) - 1
        self.generator = torch.Generator().manual_seed(
            self.p.seed if self.p.seed is not None else int.from_bytes(uuid.uuid4().bytes[:6], "big")
        )


def kv_tokens(batch: list[Request]) -> int:
    """KV-cache positions a batch can reach: rows x (longest prompt + largest max_new_tokens)."""
    return len(batch) * (max(len(r.prompt_ids) for r in batch) + max(r.params.max_new_tokens for r in batch))


class _Running:
    """A batch being decoded: its rows, their KV cache, attention mask (1 = real token) and next positions.

    All rows are right-aligned: each row's newest token sits in the last column, earlier columns of shorter rows are
    padding. That alignment is what lets a newly prefilled batch merge in: both sides are left-padded to the same
    width and stacked. Hand-written because transformers' generate has no way to add rows to a running batch.
    """

    def __init__(self, rows: list[_Row], cache, attention, next_pos):
        self.rows, self.cache, self.attention, self.next_pos = rows, cache, attention, next_pos

    @property
    def joinable(self) -> bool:
        """Only plain full-attention cache layers can be padded and stacked exactly; a sliding-window layer (Gemma
        3) keeps a window whose columns would no longer line up. Such batches run to the end as before."""
        from transformers.cache_utils import DynamicLayer

        return all(type(layer) is DynamicLayer for layer in self.cache.layers)

    def select(self, keep: list[int]) -> None:
        import torch

        idx = torch.tensor(keep, dtype=torch.long)
        self.cache.batch_select_indices(idx)
        self.attention, self.next_pos = self.attention[idx], self.next_pos[idx]
        self.rows = [self.rows[i] for i in keep]
        if self.rows and self.joinable:
            self._drop_leading_padding()

    def _drop_leading_padding(self) -> None:
        """Columns that are padding in every remaining row (left by rows that finished) cost attention for nothing
        and would let the width outgrow the token budget: cut them."""
        first = int(self.attention.any(0).long().argmax())
        if first:
            self.attention = self.attention[:, first:]
            for layer in self.cache.layers:
                layer.keys, layer.values = layer.keys[..., first:, :], layer.values[..., first:, :]

    def merge(self, other: _Running) -> None:
        import torch
        import torch.nn.functional as F

        if not self.rows:
            self.rows, self.cache, self.attention, self.next_pos = (
                other.rows,
                other.cache,
                other.attention,
                other.next_pos,
            )
            return
        if not other.rows:
            return
        width = max(self.attention.shape[1], other.attention.shape[1])

        def pad(t, dim_from_end: int):  # left-pad the sequence dimension to `width`
            missing = width - t.shape[-dim_from_end]
            return F.pad(t, (0, 0) * (dim_from_end - 1) + (missing, 0)) if missing else t

        for mine, theirs in zip(self.cache.layers, other.cache.layers, strict=True):
            mine.keys = torch.cat([pad(mine.keys, 2), pad(theirs.keys, 2)])
            mine.values = torch.cat([pad(mine.values, 2), pad(theirs.values, 2)])
        self.attention = torch.cat([pad(self.attention, 1), pad(other.attention, 1)])
        self.next_pos = torch.cat([self.next_pos, other.next_pos])
        self.rows += other.rows


def _expired(req: Request) -> bool:
    return req.cancelled.is_set() or time.monotonic() > req.deadline


class Engine:
    def __init__(
        self,
        *,
        max_queue: int = 64,
        max_batch: int = 16,
        batch_window_ms: float = 5.0,
        max_batch_tokens: int = 16384,
        continuous: bool = True,
        metrics=None,
    ):
        self.max_queue = max_queue
        self.max_batch = max(1, max_batch)
        self.batch_window_s = batch_window_ms / 1000.0
        self.max_batch_tokens = max_batch_tokens
        self.continuous = continuous  # waiting requests join a running batch between decoding steps
        self.metrics = metrics
        self._queue: queue.Queue[Request] = queue.Queue(maxsize=max_queue)
        self._held: Request | None = None  # taken from the queue but over the token budget: next batch's first
        self._generate_lock = threading.Lock()  # documents and enforces: one thread inside generate
        self._tok_lock = threading.Lock()  # HF fast tokenizers are not safe for concurrent use
        self.loaded = None  # server.loading.LoadedModel once ready
        self.load_error: str | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.active_rows = 0
        self.batches_run = 0

    # ---- lifecycle -----------------------------------------------------------------------------------------
    def load(self, loader) -> None:
        """Run `loader()` -> LoadedModel (in the caller's thread), then start the worker."""
        try:
            self.loaded = loader()
            self.eos_ids = self._eos_ids()
        except Exception as e:  # reported by /ready and every generate call
            self.load_error = f"{type(e).__name__}: {e}"
            log.exception("model load failed")
            return
        self._thread = threading.Thread(target=self._worker, name="model-worker", daemon=True)
        self._thread.start()

    def load_in_background(self, loader) -> threading.Thread:
        t = threading.Thread(target=self.load, args=(loader,), name="model-loader", daemon=True)
        t.start()
        return t

    @property
    def ready(self) -> bool:
        return self.loaded is not None and self._thread is not None and self._thread.is_alive()

    def stop(self) -> None:
        self._stop.set()

    def queue_depth(self) -> int:
        return self._queue.qsize() + (self._held is not None)

    # ---- tokenizer helpers (request threads) -------------------------------------------------------------
    @property
    def model_id(self) -> str:
        return self.loaded.load_info["model_id"] if self.loaded else "loading"

    @property
    def context_length(self) -> int:
        return self.loaded.load_info["context_length"]

    def _not_ready(self) -> NotReady:
        # the load error itself (paths, exception text) is for /info and the log, not for every client
        return NotReady("the model failed to load" if self.load_error else "the model is loading")

    def encode_prompt(self, prompt: str | None = None, messages: list[dict] | None = None) -> list[int]:
        if not self.loaded:
            raise self._not_ready()
        tok = self.loaded.tokenizer
        with self._tok_lock:
            if messages is not None:
                text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            else:
                text = prompt
            return tok(text, add_special_tokens=messages is None)["input_ids"]

    def _eos_ids(self) -> set[int]:
        tok, model = self.loaded.tokenizer, self.loaded.model
        ids = {tok.eos_token_id}
        gen_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
        ids.update(gen_eos if isinstance(gen_eos, list) else [gen_eos])
        return {i for i in ids if i is not None}

    # ---- submission ----------------------------------------------------------------------------------------
    def submit(self, prompt_ids: list[int], params: SamplingParams, timeout_s: float) -> Request:
        if not self.ready:
            raise self._not_ready()
        req = Request(prompt_ids, params, time.monotonic() + timeout_s)
        try:
            self._queue.put_nowait(req)
        except queue.Full:
            raise QueueFull(f"request queue is full ({self.max_queue} waiting)") from None
        return req

    # ---- worker --------------------------------------------------------------------------------------------
    def _take(self, until: float) -> Request | None:
        """The next live request, waiting until `until` (monotonic) at most; the held-back one comes first.
        Expired and cancelled requests are answered here and skipped, so they take no room in a batch."""
        while True:
            if self._held is not None:
                req, self._held = self._held, None
            else:
                remaining = until - time.monotonic()
                try:
                    req = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
                except queue.Empty:
                    return None
            if not _expired(req):
                return req
            req.cancel()
            req.events.put(Event("error", error="timeout"))

    def _collect_batch(self) -> list[Request]:
        first = self._take(time.monotonic() + 0.2)
        if first is None:
            return []
        batch = [first]  # alone it may exceed the budget: the context length bounds it
        return batch + self._admit(batch, until=time.monotonic() + self.batch_window_s)

    def _admit(self, admitted: list[Request], until: float) -> list[Request]:
        """Requests taken from the queue (waiting until `until` at most) that fit beside `admitted`: at most
        max_batch rows in all, within the token budget. One batch's start and every join use this one rule."""
        new: list[Request] = []
        while len(admitted) + len(new) < self.max_batch:
            req = self._take(until)
            if req is None:
                break
            if kv_tokens([*admitted, *new, req]) > self.max_batch_tokens:
                self._held = req  # not skipped over: later short requests must not starve it
                break
            new.append(req)
        return new

    def _worker(self) -> None:
        while not self._stop.is_set():
            batch = self._collect_batch()
            if batch:
                self._run_batch(batch)

    def _run_batch(self, batch: list[Request]) -> None:
        if self.metrics:
            self.metrics.batch_size.observe(len(batch))
            for req in batch:
                self.metrics.queue_wait.observe(time.monotonic() - req.enqueued_at)
        try:
            self.generate(batch)  # appends the requests that join it to `batch`
        except Exception:  # a bug or OOM must not kill the worker: fail this batch, keep serving
            log.exception("generation failed for requests %s", [req.id for req in batch])
            for req in batch:
                req.events.put(Event("error", error="failed"))

    def generate(self, batch: list[Request]) -> None:
        if not self._generate_lock.acquire(blocking=False):
            raise RuntimeError("two threads inside Engine.generate")
        try:
            self.batches_run += 1
            self._generate(batch)
        finally:
            self.active_rows = 0
            self._generate_lock.release()

    def _generate(self, batch: list[Request]) -> None:
        """Decode `batch` to the end; with `continuous` on, requests that arrive meanwhile join it between steps
        (iteration-level scheduling, as in Orca / vLLM): a request need not wait for the whole running batch to
        finish, which is what made closed-loop clients fragment into small batches."""
        import torch

        model = self.loaded.model
        with torch.inference_mode():
            running, logits = self._prefill(batch)
            while True:
                tokens = self._advance(running, logits)
                if self.continuous and running.joinable:
                    newcomers = self._take_joiners([r.req for r in running.rows])
                    batch += newcomers  # so that a failure further on is reported to them too
                    if newcomers:
                        joined, new_logits = self._prefill(newcomers)
                        tokens += self._advance(joined, new_logits)
                        running.merge(joined)
                self.active_rows = len(running.rows)
                if not running.rows:
                    break
                running.attention = torch.cat(
                    [running.attention, torch.ones((len(running.rows), 1), dtype=torch.long)], dim=1
                )
                out = model(
                    input_ids=torch.tensor(tokens).unsqueeze(1),
                    attention_mask=running.attention,
                    position_ids=running.next_pos,
                    past_key_values=running.cache,
                    use_cache=True,
                )
                running.next_pos = running.next_pos + 1
                logits = out.logits[:, -1, :].float()

    def _prefill(self, batch: list[Request]) -> tuple[_Running, object]:
        """Left-padded prefill of `batch`: every row's last prompt token sits in the last column."""
        import torch

        from harness.eval.generation import prefill

        pad = self.loaded.tokenizer.pad_token_id
        rows = [_Row(r, self.eos_ids) for r in batch]
        width = max(len(r.req.prompt_ids) for r in rows)
        input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
        attention = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            n = len(r.req.prompt_ids)
            input_ids[i, width - n :] = torch.tensor(r.req.prompt_ids)
            attention[i, width - n :] = 1
        self.active_rows += len(rows)
        cache, logits, next_pos = prefill(self.loaded.model, input_ids, attention)
        return _Running(rows, cache, attention, next_pos), logits.float()

    def _advance(self, running: _Running, logits) -> list[int]:
        """One token for every row from its logits; finished rows leave the batch. Returns the live rows' tokens."""
        step_tokens = [self._step_row(r, logits[i]) for i, r in enumerate(running.rows)]
        keep = [i for i, r in enumerate(running.rows) if not self._finish_if_done(r)]
        if len(keep) < len(running.rows):
            running.select(keep)
        return [step_tokens[i] for i in keep]

    def _take_joiners(self, running: list[Request]) -> list[Request]:
        """Requests already waiting that fit beside the running ones; never waits."""
        joiners = self._admit(running, until=time.monotonic())
        if self.metrics:
            for req in joiners:
                self.metrics.joined.inc()
                self.metrics.queue_wait.observe(time.monotonic() - req.enqueued_at)
        return joiners

    def _step_row(self, row: _Row, logits) -> int:
        """Pick the next token of one row (greedy or temperature + top-p with the row's own generator)."""
        import torch

        from harness.eval.generation import penalize_repeats

        p = row.p
        if row.tokens and (p.repetition_penalty != 1.0 or p.no_repeat_ngram_size):
            # the evaluation's own repetition control, so served answers are the measured ones
            logits = penalize_repeats(
                logits.unsqueeze(0), torch.tensor([row.tokens]), p.repetition_penalty, p.no_repeat_ngram_size
            )[0]
        # Extreme but valid request values (a repetition penalty near 0 or huge, a tiny temperature) can push logits
        # to +-inf; +inf would make softmax NaN, so overflow is clamped to the largest finite value.
        logits = torch.nan_to_num(logits.float(), nan=float("-inf"), posinf=torch.finfo(torch.float32).max)
        scaled = (logits / p.temperature).clamp(max=torch.finfo(torch.float32).max) if p.temperature else logits
        if p.temperature < MIN_TEMPERATURE or not torch.isfinite(scaled).any():  # greedy (also: nothing finite)
            token = int(torch.argmax(logits))
        else:
            probs = torch.softmax(scaled, dim=-1)
            if p.top_p < 1.0:
                sorted_p, order = torch.sort(probs, descending=True)
                outside = sorted_p.cumsum(-1) - sorted_p > p.top_p  # keep the smallest set reaching top_p
                sorted_p[outside] = 0
                token = int(order[torch.multinomial(sorted_p, 1, generator=row.generator)])
            else:
                token = int(torch.multinomial(probs, 1, generator=row.generator))
        row.tokens.append(token)
        if p.logprobs:
            row.pending_logprobs.append(self._logprob_entry(logits, token, p.top_logprobs))
        return token

    def _token_entry(self, token_id: int, logprob: float) -> dict:
        text = self.loaded.tokenizer.decode([token_id])
        return {"token": text, "logprob": logprob, "bytes": list(text.encode("utf-8"))}

    def _logprob_entry(self, logits, token: int, top_n: int) -> dict:
        import torch

        logp = torch.log_softmax(logits, dim=-1)  # the model's own distribution, before temperature/top-p
        entry = self._token_entry(token, float(logp[token]))
        entry["top_logprobs"] = []
        if top_n:
            values, ids = torch.topk(logp, top_n)
            entry["top_logprobs"] = [self._token_entry(int(i), float(v)) for v, i in zip(values, ids)]
        return entry

    def _finish_if_done(self, row: _Row) -> bool:
        """Emit the row's new text; True when the row is finished (eos, stop string, length, cancelled)."""
        req, p = row.req, row.p
        req.completion_tokens = len(row.tokens)
        if self.metrics:
            self.metrics.tokens_generated.inc()
        if req.cancelled.is_set() or time.monotonic() > req.deadline:
            req.cancel()
            req.events.put(Event("error", error="timeout"))
            return True
        hit_eos = row.tokens[-1] in row.eos_ids
        ids = row.tokens[:-1] if hit_eos else row.tokens
        text = self.loaded.tokenizer.decode(ids, skip_special_tokens=True)
        finish = "stop" if hit_eos else ("length" if len(row.tokens) >= p.max_new_tokens else None)
        cut = self._find_stop(text, row)
        if cut is not None:
            text, finish = text[:cut], "stop"
        if finish:
            self._emit(row, text[row.emitted :])
            req.events.put(Event("done", finish_reason=finish))
            return True
        # Hold back what could be the start of a stop string or half of a multi-byte character.
        safe = len(text) - row.hold
        if text.endswith("\ufffd"):
            safe = min(safe, len(text) - 1)
        if safe > row.emitted:
            self._emit(row, text[row.emitted : safe])
            row.emitted = safe
        return False

    @staticmethod
    def _find_stop(text: str, row: _Row) -> int | None:
        start = max(0, row.emitted - row.hold)
        hits = [i for i in (text.find(s, start) for s in row.p.stop) if i >= 0]
        return min(hits) if hits else None

    @staticmethod
    def _emit(row: _Row, text: str) -> None:
        if text or row.pending_logprobs:
            row.req.events.put(Event("delta", text=text, logprobs=row.pending_logprobs or None))
            row.pending_logprobs = []
