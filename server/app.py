"""Flask application factory: `/generate`, OpenAI-compatible `/v1/chat/completions` + `/v1/models`,
`/health`, `/ready`, `/info`, `/metrics`, `/openapi.json`.

All generation goes through the Engine's bounded queue and single model worker; request threads only
validate, tokenize, enqueue and wait.

With a key set, every route but the probes (/health, /ready) needs it. Error bodies never carry exception text
(it names files and memory figures); the log has the details, under the request id.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import time
from dataclasses import dataclass, field
from pathlib import Path

from flask import Flask, Response, g, jsonify, request, stream_with_context
from pydantic import ValidationError
from werkzeug.exceptions import HTTPException

from server import schemas
from server.engine import Engine, Event, NotReady, QueueFull, Request, SamplingParams
from server.metrics import Metrics
from server.security import bearer_token, host_allowed, same_secret

log = logging.getLogger("musicprod.server")

API_KEY_ENV = "MUSICPROD_API_KEY"
DEFAULT_SAMPLING = {"temperature": 0.0, "top_p": 1.0, "repetition_penalty": 1.0, "no_repeat_ngram_size": 0}


def sampling_from_decoding(decoding: dict | None) -> tuple[dict, int | None]:
    """(default sampling, default max new tokens) from an evaluation's decoding block (champion.json)."""
    if not decoding:
        return dict(DEFAULT_SAMPLING), None
    sampled = bool(decoding.get("do_sample"))
    return (
        {
            "temperature": float(decoding.get("temperature", 0.0)) if sampled else 0.0,
            "top_p": float(decoding.get("top_p", 1.0)) if sampled else 1.0,
            "repetition_penalty": float(decoding.get("repetition_penalty", 1.0)),
            "no_repeat_ngram_size": int(decoding.get("no_repeat_ngram_size", 0)),
        },
        decoding.get("max_new_tokens") or decoding.get("max_gen_toks"),
    )


OPEN_PATHS = ("/health", "/ready")  # probes: container health checks and load balancers send no key
DISCONNECT_POLL_S = 0.1  # how often a waiting request thread checks whether its client is still there


@dataclass
class ServeSettings:
    max_new_tokens_cap: int = 1024  # hard cap: larger max_new_tokens / max_tokens -> 400
    default_max_new_tokens: int = 256
    # Decoding a request gets unless it says otherwise: the champion's evaluated settings (champion.json
    # "decoding"), else the evaluation's defaults (greedy). Keys: temperature, top_p, repetition_penalty,
    # no_repeat_ngram_size.
    default_sampling: dict = field(default_factory=lambda: dict(DEFAULT_SAMPLING))
    request_timeout_s: float = 120.0  # queue wait + generation; past it -> 504
    max_body_bytes: int = 1 << 20  # larger bodies -> 413
    api_key: str | None = None  # bearer key; None = open
    retry_after_s: int = 1
    allowed_hosts: tuple[str, ...] | None = None  # Host header names served (server.security.allowed_hosts)

    @classmethod
    def from_env(cls, **overrides) -> "ServeSettings":
        return cls(api_key=os.environ.get(API_KEY_ENV) or None, **overrides)


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        type_: str | None = None,
        param: str | None = None,
        code: str | None = None,
        headers: dict | None = None,
    ):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code
        self.type = type_ or ERROR_TYPES.get(status, "server_error")
        self.headers = headers or {}


ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    429: "rate_limit_error",
    499: "client_closed_request",
    503: "server_unavailable",
    504: "timeout_error",
}


def _error_response(status: int, message: str, type_: str | None = None, param=None, code=None, headers=None):
    body = {
        "error": {
            "message": message,
            "type": type_ or ERROR_TYPES.get(status, "server_error"),
            "param": param,
            "code": code,
        }
    }
    resp = jsonify(body)
    resp.status_code = status
    for k, v in (headers or {}).items():
        resp.headers[k] = v
    return resp


def _parse(model_cls):
    raw = request.get_data(cache=True)  # werkzeug raises 413 past MAX_CONTENT_LENGTH
    try:
        obj = json.loads(raw)
    except (ValueError, RecursionError) as e:
        raise ApiError(400, f"request body is not valid JSON: {str(e)[:200]}", code="invalid_json") from None
    if not isinstance(obj, dict):
        raise ApiError(400, "request body must be a JSON object", code="invalid_json")
    try:
        return model_cls.model_validate(obj)
    except ValidationError as e:
        # the deepest location is the most specific: for a union field (stop: str | list) it is the member
        # that got furthest ("stop.1: at most 256 characters", not "stop: Input should be a valid string")
        first = max(e.errors(include_url=False), key=lambda err: len(err["loc"]))
        param = schemas.parse_error_param(first)
        n = e.error_count()
        more = f" (and {n - 1} more)" if n > 1 else ""
        raise ApiError(400, f"{param or 'body'}: {first['msg']}{more}", param=param, code="invalid_value") from None


def create_app(
    engine: Engine, settings: ServeSettings | None = None, metrics: Metrics | None = None, blueprints=()
) -> Flask:
    settings = settings or ServeSettings.from_env()
    metrics = metrics or engine.metrics or Metrics()
    engine.metrics = metrics
    metrics.bind_engine(engine)
    # No static folder, and a root inside the package: Flask's default root is the cwd, whose static/ it would
    # serve to anyone, key or not.
    app = Flask("musicprod-server", static_folder=None, root_path=str(Path(__file__).resolve().parent))
    app.config.update(
        MAX_CONTENT_LENGTH=settings.max_body_bytes, DEBUG=False, PROPAGATE_EXCEPTIONS=False, JSON_SORT_KEYS=False
    )
    app.extensions["musicprod"] = {"engine": engine, "settings": settings, "metrics": metrics}
    created = int(time.time())

    # ---- cross-cutting: auth, metrics, errors --------------------------------------------------------------
    @app.before_request
    def _start():
        g.t0 = time.perf_counter()
        g.streaming = False
        if not host_allowed(request.host, settings.allowed_hosts):
            raise ApiError(
                400,
                f"Host {request.host!r} is not a name this server answers to (a DNS rebinding "
                "page?); start it with --allowed-host NAME to add one",
                code="untrusted_host",
            )
        if request.blueprint is None:  # blueprints (the rating UI) check their own tokens
            _check_key()
            _check_json_body()

    def _check_key() -> None:
        if (
            settings.api_key
            and request.path not in OPEN_PATHS
            and not same_secret(bearer_token(request.headers.get("Authorization")), settings.api_key)
        ):
            raise ApiError(
                401,
                "missing or invalid API key (Authorization: Bearer <key>)",
                code="invalid_api_key",
                headers={"WWW-Authenticate": "Bearer"},
            )

    def _check_json_body() -> None:
        # A browser sends text/plain and form bodies cross-site without asking (no CORS preflight); JSON it does not.
        if request.method == "POST" and request.mimetype != "application/json":
            raise ApiError(
                415,
                f"Content-Type must be application/json, got {request.mimetype or 'none'!r}",
                param="Content-Type",
                code="unsupported_media_type",
            )

    def _endpoint_label() -> str:
        return request.url_rule.rule if request.url_rule else "unmatched"

    @app.after_request
    def _record(resp):
        if not g.get("streaming"):
            metrics.requests.labels(_endpoint_label(), str(resp.status_code)).inc()
            metrics.latency.labels(_endpoint_label()).observe(time.perf_counter() - g.get("t0", time.perf_counter()))
        resp.headers.setdefault("X-Content-Type-Options", "nosniff")
        return resp

    @app.errorhandler(ApiError)
    def _api_error(e: ApiError):
        return _error_response(e.status, e.message, e.type, e.param, e.code, e.headers)

    @app.errorhandler(HTTPException)
    def _http_error(e: HTTPException):
        msg = {413: f"request body larger than {settings.max_body_bytes} bytes"}.get(e.code, e.description)
        return _error_response(e.code or 500, msg, headers=dict(e.get_headers()) if e.code == 405 else None)

    @app.errorhandler(Exception)
    def _unexpected(e: Exception):
        log.exception("unhandled error")
        return _error_response(500, "internal server error", "server_error")

    # ---- shared generation path ----------------------------------------------------------------------------
    def _submit(prompt: str | None, messages: list | None, max_new: int, sampling: dict, param: str) -> Request:
        if max_new > settings.max_new_tokens_cap:
            raise ApiError(
                400,
                f"{param} = {max_new} exceeds this server's cap of {settings.max_new_tokens_cap}",
                param=param,
                code="invalid_value",
            )
        try:
            ids = engine.encode_prompt(prompt, messages)
        except NotReady as e:
            raise ApiError(503, f"model not ready ({e})", headers={"Retry-After": "5"}) from None
        if not ids:
            raise ApiError(400, "prompt is empty after tokenization", param="prompt", code="invalid_value")
        if len(ids) + max_new > engine.context_length:
            raise ApiError(
                400,
                f"prompt ({len(ids)} tokens) + {param} ({max_new}) exceeds the context length {engine.context_length}",
                param="messages" if messages else "prompt",
                code="context_length_exceeded",
            )
        metrics.prompt_tokens.inc(len(ids))
        params = SamplingParams(max_new_tokens=max_new, **sampling)
        try:
            return engine.submit(ids, params, settings.request_timeout_s)
        except QueueFull as e:
            raise ApiError(
                429, f"{e}; retry later", code="queue_full", headers={"Retry-After": str(settings.retry_after_s)}
            ) from None
        except NotReady as e:
            raise ApiError(503, f"model not ready ({e})", headers={"Retry-After": "5"}) from None

    def _client_gone() -> bool:
        check = request.environ.get("waitress.client_disconnected")  # see channel_request_lookahead in main
        return bool(check and check())

    def _wait_event(req: Request) -> Event:
        """The request's next event. Checks the client before each event and waits in short slices: a client
        that hung up must not keep the model busy (nothing else tells the worker before the answer is complete)."""
        while True:
            if _client_gone():
                req.cancel()
                metrics.cancelled.inc()
                raise ApiError(499, "client closed the connection", code="client_closed_request")
            left = req.deadline - time.monotonic() + 0.05  # past the deadline the worker reports it first
            try:
                return req.events.get(timeout=max(0.0, min(DISCONNECT_POLL_S, left)))
            except queue.Empty:
                if left <= DISCONNECT_POLL_S:
                    return Event("error", error="timeout")

    def _next_event(req: Request) -> Event:
        ev = _wait_event(req)
        if ev.kind == "error":
            req.cancel()
            if ev.error == "timeout":
                raise ApiError(
                    504,
                    f"generation did not finish within {settings.request_timeout_s} s",
                    "timeout_error",
                    code="timeout",
                )
            raise ApiError(500, f"generation failed (request {req.id}; the server log has the details)", "server_error")
        return ev

    def _collect(req: Request) -> tuple[str, list, str]:
        parts, logprobs = [], []
        while True:
            ev = _next_event(req)
            parts.append(ev.text)
            logprobs.extend(ev.logprobs or [])
            if ev.kind == "done":
                return "".join(parts), logprobs, ev.finish_reason

    def _stops(stop) -> list[str]:
        return [stop] if isinstance(stop, str) else list(stop or [])

    def _sampling(body) -> dict:
        """The request's decoding knobs, each falling back to the served model's evaluated setting."""
        return {
            k: default if getattr(body, k) is None else getattr(body, k)
            for k, default in settings.default_sampling.items()
        }

    # ---- endpoints -----------------------------------------------------------------------------------------
    @app.get("/health")
    def health():
        return jsonify({"status": "ok"})

    @app.get("/ready")
    def ready():
        return jsonify({"ready": engine.ready, "model": engine.model_id if engine.loaded else None}), (
            200 if engine.ready else 503
        )

    @app.get("/info")
    def info():
        """What /ready leaves out for unauthenticated callers: folders, load settings and timings, the load error."""
        return jsonify(
            {
                "ready": engine.ready,
                "model": engine.model_id if engine.loaded else None,
                "error": engine.load_error,
                "load_info": engine.loaded.load_info if engine.loaded else None,
            }
        )

    @app.get("/metrics")
    def prometheus():
        return Response(
            metrics.render(),
            mimetype=metrics.content_type.split(";")[0],
            headers={"Content-Type": metrics.content_type},
        )

    @app.get("/openapi.json")
    def openapi():
        from server.openapi import build_spec

        return jsonify(build_spec(settings, engine.model_id if engine.loaded else None))

    @app.post("/generate")
    def generate():
        t0 = time.perf_counter()
        body = _parse(schemas.GenerateRequest)
        messages = [m.model_dump(exclude_none=True) for m in body.messages] if body.messages else None
        sampling = dict(**_sampling(body), stop=_stops(body.stop), seed=body.seed, ignore_eos=body.ignore_eos)
        max_new = body.max_new_tokens if "max_new_tokens" in body.model_fields_set else settings.default_max_new_tokens
        req = _submit(body.prompt, messages, max_new, sampling, "max_new_tokens")
        text, _, finish = _collect(req)
        return jsonify(
            {
                "text": text,
                "model": engine.model_id,
                "finish_reason": finish,
                "usage": {
                    "prompt_tokens": len(req.prompt_ids),
                    "completion_tokens": req.completion_tokens,
                    "total_tokens": len(req.prompt_ids) + req.completion_tokens,
                },
                "latency_ms": round((time.perf_counter() - t0) * 1000, 1),
            }
        )

    @app.get("/v1/models")
    def models():
        if not engine.loaded:
            raise ApiError(503, "model not ready", headers={"Retry-After": "5"})
        return jsonify(
            {
                "object": "list",
                "data": [{"id": engine.model_id, "object": "model", "created": created, "owned_by": "musicprod"}],
            }
        )

    @app.post("/v1/chat/completions")
    def chat_completions():
        body = _parse(schemas.ChatCompletionRequest)
        if engine.loaded and body.model != engine.model_id:
            raise ApiError(
                404,
                f"model {body.model!r} does not exist; this server serves {engine.model_id!r}",
                "invalid_request_error",
                param="model",
                code="model_not_found",
            )
        max_new = body.max_completion_tokens or body.max_tokens or settings.default_max_new_tokens
        param = "max_completion_tokens" if body.max_completion_tokens else "max_tokens"
        sampling = dict(
            **_sampling(body),
            stop=_stops(body.stop),
            seed=body.seed,
            logprobs=body.logprobs,
            top_logprobs=body.top_logprobs or 0,
        )
        messages = [m.model_dump(exclude_none=True) for m in body.messages]
        req = _submit(None, messages, max_new, sampling, param)
        completion_id = f"chatcmpl-{req.id}"
        if body.stream:
            include_usage = bool(body.stream_options and body.stream_options.include_usage)
            return _stream(req, completion_id, body.logprobs, include_usage)
        text, logprobs, finish = _collect(req)
        choice = {
            "index": 0,
            "message": {"role": "assistant", "content": text},
            "finish_reason": finish,
            "logprobs": {"content": logprobs} if body.logprobs else None,
        }
        return jsonify(
            {
                "id": completion_id,
                "object": "chat.completion",
                "created": int(time.time()),
                "model": engine.model_id,
                "choices": [choice],
                "usage": {
                    "prompt_tokens": len(req.prompt_ids),
                    "completion_tokens": req.completion_tokens,
                    "total_tokens": len(req.prompt_ids) + req.completion_tokens,
                },
            }
        )

    def _stream(req: Request, completion_id: str, want_logprobs: bool, include_usage: bool) -> Response:
        first = _next_event(req)  # a request that times out before its first token still gets a real 504
        g.streaming = True
        label, t0 = _endpoint_label(), g.t0
        base = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": engine.model_id,
        }

        def chunk(delta: dict, finish=None, logprobs=None) -> str:
            choice = {
                "index": 0,
                "delta": delta,
                "logprobs": {"content": logprobs} if want_logprobs and logprobs else None,
                "finish_reason": finish,
            }
            return f"data: {json.dumps({**base, 'choices': [choice]})}\n\n"

        def events():
            status = "200"
            try:
                yield chunk({"role": "assistant", "content": ""})
                ev = first
                while True:
                    if ev.text or ev.logprobs:
                        yield chunk({"content": ev.text}, logprobs=ev.logprobs)
                    if ev.kind == "done":
                        yield chunk({}, finish=ev.finish_reason)
                        break
                    try:
                        ev = _next_event(req)
                    except ApiError as e:  # headers are gone: report in-band like OpenAI does
                        status = str(e.status)
                        yield f"data: {json.dumps({'error': {'message': e.message, 'type': e.type, 'code': e.code}})}\n\n"
                        break
                if include_usage:
                    usage = {
                        "prompt_tokens": len(req.prompt_ids),
                        "completion_tokens": req.completion_tokens,
                        "total_tokens": len(req.prompt_ids) + req.completion_tokens,
                    }
                    yield f"data: {json.dumps({**base, 'choices': [], 'usage': usage})}\n\n"
                yield "data: [DONE]\n\n"
            finally:  # also runs when the client goes away: stop generating for it
                req.cancel()
                metrics.requests.labels(label, status).inc()
                metrics.latency.labels(label).observe(time.perf_counter() - t0)

        return Response(
            stream_with_context(events()),
            mimetype="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    for bp in blueprints:
        app.register_blueprint(bp)
    return app
