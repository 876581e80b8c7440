"""A local HF causal LM answering OpenAI-shaped chat completions, with JSON-schema-constrained decoding.

Why by hand: deepeval's G-Eval reads `choices[0].logprobs.content[i].top_logprobs` of an OpenAI ChatCompletion to
weight the score tokens; transformers' generate() gives scores but no OpenAI shape and no JSON constraint, and the
constrained-decoding libraries (outlines, lm-format-enforcer) are not in the pinned set. The subset implemented is
what a judge needs: a flat JSON object whose fields are enums (ints or strings; e.g. the score 1..5), integers with
minimum/maximum, or free strings, emitted in the schema's order.

Logprobs: a forced token (JSON punctuation, field names) has probability 1 under the constrained sampler, so logprob
0; an enum choice reports the model's distribution *renormalised over the legal options* (the distribution the
constrained sampler draws from; greedy = its argmax); free-string tokens report the full-vocabulary log-softmax.
`score_mass` (in `musicprod_diagnostics`) keeps how much of the unconstrained probability fell on the legal options.
"""

from __future__ import annotations

import copy
import json
import math
import time
import uuid
from pathlib import Path

import torch


class EngineError(ValueError):
    """A schema or request the engine cannot serve; the message names the field."""


def enum_options(spec: dict, where: str) -> list | None:
    """The legal values of an enum / bounded-integer field, or None for a free string."""
    if "enum" in spec:
        return list(spec["enum"])
    if "const" in spec:
        return [spec["const"]]
    kind = spec.get("type")
    if kind == "integer" and "minimum" in spec and "maximum" in spec:
        lo, hi = int(spec["minimum"]), int(spec["maximum"])
        if hi - lo > 100:
            raise EngineError(f"{where}: integer range {lo}..{hi} too wide to enumerate")
        return list(range(lo, hi + 1))
    if kind == "string":
        return None
    raise EngineError(
        f"{where}: unsupported schema {spec!r} (supported: enum, const, integer with minimum/maximum, string)"
    )


def resolve_refs(schema: dict) -> dict:
    """Inline local $defs references (pydantic puts Literal/Enum types there)."""
    defs = schema.get("$defs", {})

    def walk(node):
        if isinstance(node, dict):
            if "$ref" in node:
                return walk(defs[node["$ref"].split("/")[-1]])
            if "allOf" in node and len(node["allOf"]) == 1:
                return walk(node["allOf"][0])
            return {k: walk(v) for k, v in node.items() if k != "$defs"}
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    return walk(schema)


def _entry(token: str, logprob: float, top: list[tuple[str, float]] | None = None) -> dict:
    return {
        "token": token,
        "logprob": float(logprob),
        "bytes": list(token.encode("utf-8")),
        "top_logprobs": [{"token": t, "logprob": float(lp), "bytes": list(t.encode("utf-8"))} for t, lp in (top or [])],
    }


class HFChatEngine:
    """Greedy, deterministic chat completions from a local HF folder (or HF id), optionally schema-constrained."""

    def __init__(self, model_path: str | Path, dtype: str = "float32", model_name: str | None = None):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.model_path = str(model_path)
        self.model_name = model_name or Path(self.model_path).name
        self.tokenizer = AutoTokenizer.from_pretrained(self.model_path)
        self.model = AutoModelForCausalLM.from_pretrained(self.model_path, dtype=getattr(torch, dtype))
        self.model.eval()
        self.stop_ids = {i for i in (self.tokenizer.eos_token_id, self.tokenizer.pad_token_id) if i is not None}
        self.stop_ids |= set(self.tokenizer.all_special_ids)
        # Prompt-prefix KV caches of recent calls: every G-Eval call of one metric shares its long header (steps,
        # rubric), so a new call only pre-fills from where it differs (about half of each prompt).
        self._prefixes: list[tuple[list[int], object]] = []
        self.max_prefixes = 6
        self.min_prefix = 32

    def _remember(self, ids: list[int], cache) -> None:
        self._prefixes = [p for p in self._prefixes if p[0] != ids][-(self.max_prefixes - 1) :]
        self._prefixes.append((list(ids), copy.deepcopy(cache)))

    def _start(self, ids: list[int]) -> "HFChatEngine._State":
        state = self._State(self, ids)
        best_n, best_cache = 0, None
        for stored, cache in self._prefixes:
            n = 0
            for a, b in zip(stored, ids):
                if a != b:
                    break
                n += 1
            if n > best_n:
                best_n, best_cache = n, cache
        best_n = min(best_n, len(ids) - 1)  # feed at least one token to get the next distribution
        if best_cache is not None and best_n >= self.min_prefix:
            cache = copy.deepcopy(best_cache)
            surplus = cache.get_seq_length() - best_n
            if surplus > 0:
                cache.crop(-surplus)
            state.cache, state.fed = cache, best_n
        return state

    # -- tokens -------------------------------------------------------------------------------------------
    def _encode(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def _text(self, token_id: int) -> str:
        return self.tokenizer.decode([token_id])

    def prompt_ids(self, messages: list[dict]) -> list[int]:
        for i, m in enumerate(messages):
            if not isinstance(m, dict) or "content" not in m or "role" not in m:
                raise EngineError(f"messages[{i}]: expected {{role, content}}")
        if self.tokenizer.chat_template:
            text = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        else:  # a base model without a template: the plain text of the conversation
            text = "\n\n".join(str(m["content"]) for m in messages) + "\n\n"
        return self._encode(text)

    # -- decoding state -----------------------------------------------------------------------------------
    class _State:
        def __init__(self, engine: "HFChatEngine", ids: list[int]):
            self.engine, self.ids, self.cache, self.fed, self.first = engine, list(ids), None, 0, True

        @torch.inference_mode()
        def next_logprobs(self) -> torch.Tensor:
            new = self.ids[self.fed :] if self.cache is not None else self.ids
            out = self.engine.model(
                input_ids=torch.tensor([new]), past_key_values=self.cache, use_cache=True, logits_to_keep=1
            )
            self.cache, self.fed = out.past_key_values, len(self.ids)
            if self.first:
                self.first = False
                self.engine._remember(self.ids, self.cache)
            return torch.log_softmax(out.logits[0, -1].float(), dim=-1)

        @torch.inference_mode()
        def sequence_logprob(self, continuation: list[int]) -> float:
            """Sum of log p(continuation | ids), one full forward without the cache (multi-token options)."""
            ids = self.ids + continuation
            logits = self.engine.model(input_ids=torch.tensor([ids])).logits[0].float()
            lps = torch.log_softmax(logits[len(self.ids) - 1 : len(ids) - 1], dim=-1)
            return float(lps[torch.arange(len(continuation)), torch.tensor(continuation)].sum())

        def extend(self, ids: list[int], reset: bool = False) -> None:
            self.ids += ids
            if reset:
                self.cache, self.fed = None, 0

    # -- schema-constrained JSON ------------------------------------------------------------------------
    def _choose(self, state: "_State", options: list, top_k: int) -> tuple[object, dict, float]:
        texts = [str(o) for o in options]
        token_ids = [self._encode(t) for t in texts]
        if any(len(t) == 0 for t in token_ids):
            raise EngineError(f"enum option {texts!r}: an option tokenizes to nothing")
        if all(len(t) == 1 for t in token_ids):
            lp = state.next_logprobs()
            scores = [float(lp[t[0]]) for t in token_ids]
            reset = False
        else:
            scores = [state.sequence_logprob(t) for t in token_ids]
            reset = True
        total = torch.logsumexp(torch.tensor(scores), dim=0).item()
        norm = [s - total for s in scores]
        best = max(range(len(options)), key=lambda i: norm[i])
        state.extend(token_ids[best], reset=reset)
        ranked = sorted(zip(texts, norm), key=lambda x: -x[1])[:top_k]
        return options[best], _entry(texts[best], norm[best], ranked), math.exp(total)

    def _free_string(self, state: "_State", max_tokens: int, top_k: int) -> tuple[str, list[dict]]:
        """Greedy text until a quote, a stop token or max_tokens; the quote is not part of the value."""
        pieces, entries = [], []
        for _ in range(max_tokens):
            lp = state.next_logprobs()
            token = int(torch.argmax(lp))
            if token in self.stop_ids:
                break
            text = self._text(token)
            if '"' in text:
                head = text.split('"', 1)[0]
                if head:
                    pieces.append(head)
                break
            values, ids = torch.topk(lp, top_k)
            entries.append(
                _entry(text, float(lp[token]), [(self._text(int(i)), float(v)) for v, i in zip(values, ids)])
            )
            pieces.append(text)
            state.extend([token])
        return "".join(pieces).strip(), entries

    def _json(self, state: "_State", schema: dict, max_tokens: int, top_k: int) -> tuple[str, list[dict], dict]:
        schema = resolve_refs(schema)
        props = schema.get("properties")
        if schema.get("type", "object") != "object" or not isinstance(props, dict) or not props:
            raise EngineError("response_format.json_schema.schema: expected a flat object with properties")
        content, entries, diagnostics, value = "", [], {}, {}

        def force(text: str) -> None:
            nonlocal content
            state.extend(self._encode(text))
            content += text
            entries.append(_entry(text, 0.0))

        for i, (key, spec) in enumerate(props.items()):
            where = f"schema.properties.{key}"
            options = enum_options(spec, where)
            force(
                ("{" if i == 0 else ", ")
                + json.dumps(key)
                + ": "
                + ('"' if options is None or all(isinstance(o, str) for o in options) else "")
            )
            if options is not None:
                choice, entry, mass = self._choose(state, options, top_k)
                content += entry["token"]
                entries.append(entry)
                diagnostics.setdefault("score_mass", {})[key] = mass
                value[key] = choice
                if isinstance(choice, str):
                    force('"')
            else:
                text, text_entries = self._free_string(state, max_tokens, top_k)
                escaped = json.dumps(text, ensure_ascii=False)[1:-1]
                content += escaped
                entries.extend(text_entries)
                value[key] = text
                force('"')
        force("}")
        json.loads(content)  # the constraint guarantees valid JSON; fail loudly if it did not
        return content, entries, diagnostics

    def _free(self, state: "_State", max_tokens: int, top_k: int) -> tuple[str, list[dict]]:
        out, entries = [], []
        for _ in range(max_tokens):
            lp = state.next_logprobs()
            token = int(torch.argmax(lp))
            if token in self.stop_ids:
                break
            values, ids = torch.topk(lp, top_k)
            entries.append(
                _entry(
                    self._text(token), float(lp[token]), [(self._text(int(i)), float(v)) for v, i in zip(values, ids)]
                )
            )
            out.append(token)
            state.extend([token])
        return self.tokenizer.decode(out), entries

    def complete(
        self,
        messages: list[dict],
        schema: dict | None = None,
        max_tokens: int = 64,
        logprobs: bool = True,
        top_logprobs: int = 5,
    ) -> dict:
        """An OpenAI `chat.completion` object (as a dict). `schema`: a JSON schema the content must follow."""
        prompt = self.prompt_ids(messages)
        state = self._start(prompt)
        top_k = max(1, int(top_logprobs or 1))
        diagnostics = {}
        if schema is not None:
            content, entries, diagnostics = self._json(state, schema, max_tokens, top_k)
        else:
            content, entries = self._free(state, max_tokens, top_k)
        completion_tokens = len(state.ids) - len(prompt)
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex[:12]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.model_name,
            "choices": [
                {
                    "index": 0,
                    "finish_reason": "stop",
                    "message": {"role": "assistant", "content": content},
                    "logprobs": {"content": entries} if logprobs else None,
                }
            ],
            "usage": {
                "prompt_tokens": len(prompt),
                "completion_tokens": completion_tokens,
                "total_tokens": len(prompt) + completion_tokens,
            },
            "musicprod_diagnostics": diagnostics,
        }
