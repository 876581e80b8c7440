"""Judge backends behind deepeval's `DeepEvalBaseLLM` interface (import through harness.judge.make_judge).

G-Eval (deepeval 2.9.3, metrics/g_eval/g_eval.py) first calls `model.generate_raw_response(prompt,
top_logprobs=k)`, expects `(ChatCompletion, cost)`, parses the JSON in `choices[0].message.content`, then weights
the score by the `top_logprobs` of the first generated token equal to `str(score)` (utils.
calculate_weighted_summed_score). When that method raises AttributeError it falls back to
`model.generate(prompt, schema=ReasonScore)` and uses the integer score: our path for endpoints without logprobs.

    hf      HFJudge: a local HF model via harness.judge.hf_engine (constrained JSON, logprobs from its own softmax)
    openai  OpenAIJudge: any OpenAI-compatible /v1/chat/completions (openai client; response_format json_schema)
"""

from __future__ import annotations

import os
import warnings

from harness.judge.config import JudgeSettings
from harness.judge.offline import import_deepeval

import_deepeval()  # a no-op when harness.judge.run already imported it offline into the experiment's cache dir

from deepeval.metrics.utils import trimAndLoadJson  # noqa: E402
from deepeval.models import DeepEvalBaseLLM  # noqa: E402
from openai.types.chat import ChatCompletion  # noqa: E402

SCORE_MIN, SCORE_MAX = 1, 5
# The score comes first: it must not depend on the reason that follows. 1..5 keeps every level one token wide.
SCORE_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["score", "reason"],
    "properties": {
        "score": {"type": "integer", "enum": list(range(SCORE_MIN, SCORE_MAX + 1))},
        "reason": {"type": "string"},
    },
}


def json_schema_of(schema) -> dict:
    """A pydantic class -> the JSON schema we send; deepeval's ReasonScore (float score) maps to SCORE_SCHEMA."""
    if schema is None:
        return None
    if getattr(schema, "__name__", "") == "ReasonScore":
        return SCORE_SCHEMA
    from harness.judge.hf_engine import resolve_refs

    out = resolve_refs(schema.model_json_schema())
    out.pop("title", None)
    for spec in out.get("properties", {}).values():
        spec.pop("title", None)
    out["additionalProperties"] = False
    out["required"] = list(out.get("properties", {}))
    return out


class JudgeLLM(DeepEvalBaseLLM):
    """Shared plumbing: the generate/a_generate pair deepeval wants, plus what the last call looked like."""

    backend = "?"

    def __init__(self, settings: JudgeSettings):
        self.settings = settings
        self.last_call: dict = {}
        super().__init__(model_name=settings.model)

    def get_model_name(self) -> str:
        return f"{self.backend}:{self.settings.model}"

    def max_tokens(self) -> int:
        return self.settings.reason_tokens + 24  # JSON punctuation + score + reason

    def chat(self, prompt: str, schema: dict | None, logprobs: bool, top_logprobs: int) -> ChatCompletion:
        raise NotImplementedError

    def generate_raw_response(self, prompt: str, top_logprobs: int = 5):
        if not self.settings.logprobs:
            raise AttributeError("logprobs switched off (settings.logprobs=false): deepeval uses generate(schema=...)")
        self.last_prompt = prompt  # kept for debugging and for the test that recomputes the weighted score
        res = self.chat(
            prompt,
            SCORE_SCHEMA if self.settings.json_schema else None,
            True,
            min(top_logprobs, self.settings.top_logprobs),
        )
        has_logprobs = bool(res.choices[0].logprobs and res.choices[0].logprobs.content)
        self.last_call["weighted"] = has_logprobs
        if not has_logprobs and not getattr(self, "_warned", False):
            self._warned = True
            warnings.warn(
                f"{self.get_model_name()}: the endpoint returned no logprobs; scores are the integer "
                "levels, not G-Eval's probability-weighted score"
            )
        return res, 0.0

    async def a_generate_raw_response(self, prompt: str, top_logprobs: int = 5):
        return self.generate_raw_response(prompt, top_logprobs)

    def generate(self, prompt: str, schema=None):
        js = json_schema_of(schema) if self.settings.json_schema else None
        res = self.chat(prompt, js, False, 1)
        content = res.choices[0].message.content or ""
        self.last_call["weighted"] = False
        if schema is None:
            return content
        data = trimAndLoadJson(content)
        return schema.model_validate(data)

    async def a_generate(self, prompt: str, schema=None):
        return self.generate(prompt, schema)


class HFJudge(JudgeLLM):
    backend = "hf"

    def load_model(self):
        from harness.judge.hf_engine import HFChatEngine
        from harness.models import prepare

        resolved = prepare(self.settings.model, self.settings.model_cache_dir, progress=False)
        self.model_path = resolved.path
        return HFChatEngine(resolved.path, dtype=self.settings.dtype, model_name=self.settings.model)

    def chat(self, prompt, schema, logprobs, top_logprobs) -> ChatCompletion:
        raw = self.model.complete(
            [{"role": "user", "content": prompt}],
            schema=schema,
            max_tokens=self.settings.reason_tokens if schema is not None else self.max_tokens(),
            logprobs=logprobs,
            top_logprobs=top_logprobs,
        )
        self.last_call = {"diagnostics": raw.get("musicprod_diagnostics", {})}
        return ChatCompletion.model_validate(raw)


class OpenAIJudge(JudgeLLM):
    backend = "openai"

    def load_model(self):
        from openai import OpenAI

        key = os.environ.get(self.settings.api_key_env, "") if self.settings.api_key_env else ""
        # Local servers (Ollama, vLLM, llama.cpp, musicprod serve) ignore the key; the client insists on one.
        return OpenAI(
            base_url=self.settings.base_url, api_key=key or "not-needed", timeout=self.settings.timeout_s, max_retries=1
        )

    def chat(self, prompt, schema, logprobs, top_logprobs) -> ChatCompletion:
        kwargs = {
            "model": self.settings.model,
            "messages": [{"role": "user", "content": prompt}],
            "temperature": 0.0,
            "max_tokens": self.max_tokens(),
        }
        if schema is not None:
            kwargs["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "judgement", "schema": schema, "strict": True},
            }
        if logprobs:
            kwargs.update(logprobs=True, top_logprobs=top_logprobs)
        res = self.model.chat.completions.create(**kwargs)
        self.last_call = {"diagnostics": {}}
        return normalise_score_tokens(res)


def normalise_score_tokens(res: ChatCompletion) -> ChatCompletion:
    """Strip whitespace from logprob tokens: tokenizers that glue the space to the digit (" 3") would otherwise never
    match deepeval's `token == str(score)` and silently lose the probability weighting."""
    lp = res.choices[0].logprobs if res.choices else None
    if lp and lp.content:
        for entry in lp.content:
            entry.token = entry.token.strip() or entry.token
            for alt in entry.top_logprobs or []:
                alt.token = alt.token.strip() or alt.token
    return res


def make_backend(settings: JudgeSettings) -> JudgeLLM:
    return {"hf": HFJudge, "openai": OpenAIJudge}[settings.backend](settings)
