"""Request and response schemas (pydantic): validation for every endpoint and the source of /openapi.json.

Strict mode: JSON types are not coerced ("5" is not an int, true is not a number), so wrong types are 400s.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, model_validator

MAX_MESSAGES = 512  # ~35k empty messages fit in 1 MiB; each costs template and tokenizer work
MAX_STOP_CHARS = 256  # the stream holds back len(stop) - 1 characters: a 1 MB stop string would hold back all


def _valid_unicode(value: str) -> str:
    """JSON can spell a lone surrogate ("\\ud800") that no tokenizer encodes: a 400 here, not a 500 there."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:
        raise ValueError(f"not valid Unicode (lone surrogate at character {e.start})") from None
    return value


def _integral_float(value):
    """JSON Schema calls 3.0 an integer; strict pydantic does not. Accept integral floats, nothing else."""
    return int(value) if isinstance(value, float) and value.is_integer() and abs(value) < 2**63 else value


Int = Annotated[int, BeforeValidator(_integral_float)]


def text(**limits):
    """A str field with length limits that must also be valid Unicode (limits first: their messages say
    "characters")."""
    return Annotated[str, Field(**limits), AfterValidator(_valid_unicode)]


_StopStr = text(min_length=1, max_length=MAX_STOP_CHARS)
StopField = _StopStr | Annotated[list[_StopStr], Field(max_length=4)] | None
_STOP = Field(
    None,
    description=f"Up to 4 strings of at most {MAX_STOP_CHARS} characters; generation stops before "
    "the first one (not included).",
)


class Message(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")
    role: Literal["system", "user", "assistant"]
    content: text(max_length=200_000)
    name: text(max_length=256) | None = None


def _check_stop(stop) -> list[str]:
    stops = [stop] if isinstance(stop, str) else list(stop or [])
    if len(stops) > 4 or any(not s for s in stops):
        raise ValueError("stop: at most 4 non-empty strings")
    return stops


class GenerateRequest(BaseModel):
    """`POST /generate`: exactly one of `prompt` (raw text, no chat template) or `messages` (chat template)."""

    model_config = ConfigDict(
        strict=True, extra="forbid", json_schema_extra={"oneOf": [{"required": ["prompt"]}, {"required": ["messages"]}]}
    )
    prompt: text(min_length=1, max_length=200_000) | None = Field(None, description="Raw prompt text.")
    messages: list[Message] | None = Field(
        None, min_length=1, max_length=MAX_MESSAGES, description="Chat messages (chat template applied)."
    )
    max_new_tokens: Int = Field(
        256,
        ge=1,
        description="Tokens to generate at most (server hard cap applies; "
        "default: the served model's evaluated setting).",
    )
    temperature: float | None = Field(None, ge=0, le=2, description="0 = greedy (default: as evaluated).")
    top_p: float | None = Field(None, gt=0, le=1, description="Default: as evaluated.")
    repetition_penalty: float | None = Field(None, gt=0, le=10, description="Default: as evaluated.")
    no_repeat_ngram_size: Int | None = Field(None, ge=0, le=64, description="Default: as evaluated.")
    stop: StopField = _STOP
    seed: Int | None = Field(None, ge=0, le=2**63 - 1)
    ignore_eos: bool = Field(False, description="Generate exactly max_new_tokens (benchmarks).")

    @model_validator(mode="after")
    def _one_input(self):
        if (self.prompt is None) == (self.messages is None):
            raise ValueError("give exactly one of 'prompt' or 'messages'")
        _check_stop(self.stop)
        return self


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int | None = None


class GenerateResponse(BaseModel):
    text: str
    model: str
    finish_reason: Literal["stop", "length"]
    usage: Usage
    latency_ms: float


class StreamOptions(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")
    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    """OpenAI `POST /v1/chat/completions`. Unknown fields are ignored like OpenAI-compatible servers do."""

    model_config = ConfigDict(strict=True, extra="ignore")
    model: text(min_length=1, max_length=256)
    messages: list[Message] = Field(min_length=1, max_length=MAX_MESSAGES)
    max_tokens: Int | None = Field(None, ge=1)
    max_completion_tokens: Int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2, description="Default: the served model's evaluated setting.")
    top_p: float | None = Field(None, gt=0, le=1, description="Default: as evaluated.")
    repetition_penalty: float | None = Field(None, gt=0, le=10, description="vLLM-style extra; default: as evaluated.")
    no_repeat_ngram_size: Int | None = Field(None, ge=0, le=64, description="Extra; default: as evaluated.")
    n: Literal[1] = Field(1, description="Only 1 choice is supported.")
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: StopField = _STOP
    seed: Int | None = Field(None, ge=0, le=2**63 - 1)
    logprobs: bool = False
    top_logprobs: Int | None = Field(None, ge=0, le=20)

    @model_validator(mode="after")
    def _checks(self):
        _check_stop(self.stop)
        if self.top_logprobs and not self.logprobs:
            raise ValueError("top_logprobs requires logprobs: true")
        return self


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorDetail


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class TopLogprob(BaseModel):
    token: str
    logprob: float
    bytes: list[int] | None


class TokenLogprob(TopLogprob):
    top_logprobs: list[TopLogprob]


class ChoiceLogprobs(BaseModel):
    content: list[TokenLogprob] | None


class ChatMessageOut(BaseModel):
    role: Literal["assistant"]
    content: str


class ChatChoice(BaseModel):
    index: int
    message: ChatMessageOut
    finish_reason: Literal["stop", "length"]
    logprobs: ChoiceLogprobs | None = None


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage


class Health(BaseModel):
    status: str


class Ready(BaseModel):
    ready: bool
    model: str | None = None


class Info(Ready):
    error: str | None = None
    load_info: dict | None = None


_TYPE_TAGS = {"str", "list", "int", "float", "bool", "dict"}


def parse_error_param(err: dict) -> str | None:
    """The field path of a validation error, without the union member tags pydantic inserts ('str',
    'function-after[...]'): "stop.0", not "stop.list[...].0"."""
    loc = [str(x) for x in err.get("loc", ()) if isinstance(x, int) or (str(x).isidentifier() and x not in _TYPE_TAGS)]
    return ".".join(loc) or None
