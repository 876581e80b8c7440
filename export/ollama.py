"""`--format ollama`: the q8_0 GGUF plus a Modelfile with the chat template, stop tokens and the champion's
decoding settings (`ollama create NAME -f Modelfile`).

Ollama templates are Go templates, not Jinja. Instead of translating Jinja, the model's own chat template is
rendered with marker contents to learn each role's text before and after the content and the assistant prompt;
those pieces become a Go template. That only works for templates that render each message on its own (ChatML,
Gemma's turns, Llama 3 headers): a whole conversation rendered by the pieces must equal the Jinja rendering,
else the export stops and says so.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from export.card import BASE_LICENCES
from export.source import ExportError, ExportSource
from harness.io import atomic_dir

MARK = "\x1eMUSICPROD_CONTENT\x1e"
ROLES = ("system", "user", "assistant")
CHECK_CONVERSATION = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "What is a limiter?"},
    {"role": "assistant", "content": "A compressor with a very high ratio."},
    {"role": "user", "content": "Und auf Deutsch?"},
]


@dataclass
class TemplatePieces:
    lead: str  # text before the first message (e.g. a BOS token written by the template)
    roles: dict[str, tuple[str, str]]  # role -> (text before the content, text after it)
    generation_prompt: str  # what add_generation_prompt appends

    def render(self, messages: list[dict]) -> str:
        """What the Go template renders for `messages` (used to check it against the Jinja template)."""
        out = self.lead
        for m in messages:
            before, after = self.roles[m["role"]]
            out += before + m["content"] + after
        return out + self.generation_prompt

    def go_template(self) -> str:
        branches = []
        for i, (role, (before, after)) in enumerate(self.roles.items()):
            keyword = "if" if i == 0 else "else if"
            branches.append(f'{{{{ {keyword} eq .Role "{role}" }}}}{before}{{{{ .Content }}}}{after}')
        return self.lead + "{{- range .Messages }}" + "".join(branches) + "{{ end }}{{ end }}" + self.generation_prompt


def template_pieces(tokenizer) -> TemplatePieces:
    def render(messages, gen=False):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=gen)

    try:
        lead = render([])
    except Exception:  # some templates index messages[0]
        lead = ""
    roles = {}
    for role in ROLES:
        try:
            text = render([{"role": role, "content": MARK}])
        except Exception:  # the template rejects this role on its own (e.g. no system role): leave it out
            continue
        if text.count(MARK) != 1 or not text.startswith(lead):
            continue
        before, after = text[len(lead) :].split(MARK)
        roles[role] = (before, after)
    if "user" not in roles or "assistant" not in roles:
        raise ExportError(
            "chat template: cannot render a single user or assistant message; write the Modelfile TEMPLATE by hand"
        )
    probe = [{"role": "user", "content": "hi"}]
    plain, with_prompt = render(probe), render(probe, gen=True)
    if not with_prompt.startswith(plain):
        raise ExportError("chat template: add_generation_prompt does not append to the conversation")
    pieces = TemplatePieces(lead, roles, with_prompt[len(plain) :])
    conversation = [m for m in CHECK_CONVERSATION if m["role"] in roles]
    expected = render(conversation, gen=True)
    if pieces.render(conversation) != expected:
        raise ExportError(
            "chat template does not render messages independently (a Go template built from its "
            f"pieces gives {pieces.render(conversation)!r}, Jinja {expected!r}); write TEMPLATE by hand"
        )
    if '"""' in pieces.go_template():
        raise ExportError('chat template contains """, which a Modelfile cannot quote')
    return pieces


def _quote(s: str) -> str:
    return json.dumps(s, ensure_ascii=False)


def modelfile(src: ExportSource, gguf_file: str, pieces: TemplatePieces, stops: list[str], context_length: int) -> str:
    d = src.decoding or {}
    sampled = bool(d.get("do_sample"))
    lines = [
        f"# {src.name}: exported by `musicprod export` (experiment {src.experiment}, system {src.system}).",
        "# Model card: ../merged/README.md. Create and run:  ollama create NAME -f Modelfile && ollama run NAME",
        f"FROM ./{gguf_file}",
        "",
        "# The model's chat template (rendered from its own Jinja template, checked message by message).",
        f'TEMPLATE """{pieces.go_template()}"""',
        "",
    ]
    lines += [f"PARAMETER stop {_quote(s)}" for s in stops]
    lines += [
        "",
        "# Decoding the held-out results were measured with (champion.json 'decoding')."
        if d
        else "# No recorded decoding: greedy, as the evaluation's default.",
    ]
    lines.append(f"PARAMETER temperature {float(d.get('temperature', 0.0)) if sampled else 0.0}")
    if sampled:
        lines.append(f"PARAMETER top_p {float(d.get('top_p', 1.0))}")
    if float(d.get("repetition_penalty", 1.0)) != 1.0:
        lines += [
            "# musicprod penalises tokens of the answer so far; llama.cpp's repeat_penalty also counts the "
            "last repeat_last_n prompt tokens",
            f"PARAMETER repeat_penalty {float(d['repetition_penalty'])}",
        ]
    if d.get("no_repeat_ngram_size"):
        lines.append(
            f"# no_repeat_ngram_size {d['no_repeat_ngram_size']} was used in evaluation; Ollama has no "
            "equivalent setting"
        )
    lines.append(f"PARAMETER num_predict {int(d.get('max_new_tokens') or 256)}")
    lines.append(f"PARAMETER num_ctx {context_length}")
    licence = BASE_LICENCES.get(src.base_model, (None, f"that of the base model {src.base_model}"))[1]
    lines += [
        "",
        f'LICENSE """Weights: {licence}.'
        + (" Fine-tuned on musicprod data, CC BY 4.0." if src.adapter_path else "")
        + '"""',
        "",
    ]
    return "\n".join(lines)


def stop_strings(tokenizer, merged_dir: Path) -> list[str]:
    """The end-of-turn tokens as text: the tokenizer's eos and every eos id of the generation config."""
    ids = []
    gen = merged_dir / "generation_config.json"
    if gen.is_file():
        eos = json.loads(gen.read_text()).get("eos_token_id")
        ids += eos if isinstance(eos, list) else [eos]
    ids.append(tokenizer.eos_token_id)
    stops = []
    for i in ids:
        if i is not None and (text := tokenizer.convert_ids_to_tokens(int(i))) and text not in stops:
            stops.append(text)
    return stops


def write_ollama(
    src: ExportSource, merged_dir: Path, gguf_file: Path, out: Path, context_length: int, log=print
) -> dict:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(merged_dir)
    pieces = template_pieces(tokenizer)
    stops = stop_strings(tokenizer, merged_dir)
    with atomic_dir(out) as tmp:
        try:  # a hard link costs no space; across file systems, copy
            os.link(gguf_file, tmp / gguf_file.name)
        except OSError:
            shutil.copy2(gguf_file, tmp / gguf_file.name)
        text = modelfile(src, gguf_file.name, pieces, stops, min(context_length, 8192))
        (tmp / "Modelfile").write_text(text, encoding="utf-8")
    log(f"[export] ollama: {out}/Modelfile (FROM ./{gguf_file.name}, stop {stops})")
    return {"modelfile": "Modelfile", "gguf": gguf_file.name, "stop": stops, "template": pieces.go_template()}
