"""`musicprod export`: merged folder, GGUF (llama.cpp's own converter), Ollama Modelfile, on a tiny Llama with a
real random LoRA adapter. The round trip: merged folder and f16 GGUF (loaded back by transformers) give the same
greedy tokens as base + adapter."""

from __future__ import annotations

import json
import os
import stat

import pytest

from export import ExportError, parse_formats, resolve_source, run_export
from export.layout import gguf_path
from tests.export_helpers import BASE_SHA, DATA_SHA, PROMPTS, gguf_converter, make_export_experiment, quiet  # noqa: F401

N_TOKENS = 16


@pytest.fixture(scope="module")
def exported(tmp_path_factory, tiny_model_dir, gguf_converter):  # noqa: F811 (pytest fixture)
    """The tiny experiment exported in all three formats (once for the module)."""
    root = tmp_path_factory.mktemp("export")
    exp = make_export_experiment(root, tiny_model_dir)
    manifest = run_export(exp, converter=str(gguf_converter), log=quiet)
    return exp, exp / "export" / "hf-lora", manifest


def _prompt_ids(tok, prompt):
    import torch

    text = tok.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True)
    return torch.tensor([tok(text, add_special_tokens=False)["input_ids"]])


def _greedy(model, ids):
    import torch

    with torch.inference_mode():  # exactly N_TOKENS tokens, no early stop: compares every position
        out = model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=N_TOKENS,
            min_new_tokens=N_TOKENS,
            do_sample=False,
            pad_token_id=0,
        )
    return out[0, ids.shape[1] :].tolist()


def test_round_trip_greedy_tokens(exported, tiny_model_dir):
    """Merged folder and the f16 GGUF loaded back by transformers: the same greedy tokens as base + adapter."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from harness.models import load_for_inference

    exp, out, _ = exported
    reference, tok = load_for_inference(str(tiny_model_dir), str(exp / "hf-lora" / "adapter"), "float32", merge=False)
    merged = AutoModelForCausalLM.from_pretrained(out / "merged", dtype=torch.float32)
    f16 = gguf_path(out, "fake-hf-lora", "f16")
    from_gguf = AutoModelForCausalLM.from_pretrained(f16.parent, gguf_file=f16.name, dtype=torch.float32)
    gguf_tok = AutoTokenizer.from_pretrained(f16.parent, gguf_file=f16.name)
    merged_tok = AutoTokenizer.from_pretrained(out / "merged")
    base_plain = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    differs_from_base = 0
    for prompt in PROMPTS:
        ids = _prompt_ids(tok, prompt)
        # the exported tokenizers (HF folder, and the GGUF's as transformers reads it) give the evaluated prompt ids
        assert torch.equal(_prompt_ids(merged_tok, prompt), ids), prompt
        assert torch.equal(_prompt_ids(gguf_tok, prompt), ids), prompt
        expected = _greedy(reference, ids)
        assert _greedy(merged, ids) == expected, f"merged folder, prompt {prompt!r}"
        assert _greedy(from_gguf, ids) == expected, f"f16 GGUF, prompt {prompt!r}"
        differs_from_base += _greedy(base_plain, ids) != expected
    assert differs_from_base > 0, "the adapter changes nothing: the round trip would not notice a lost adapter"


def test_export_layout_manifest_and_card(exported):
    exp, out, manifest = exported
    assert manifest["formats"] == ["merged", "gguf", "ollama"] and manifest["system"] == "hf-lora"
    assert manifest["is_champion"] and manifest["base_source_sha256"] == BASE_SHA
    on_disk = json.loads((out / "export.json").read_text())
    assert on_disk["files"] == manifest["files"]
    for rel, entry in manifest["files"].items():  # every listed file exists with its size; readable by others
        path = out / rel
        assert path.stat().st_size == entry["bytes"], rel
        assert path.stat().st_mode & stat.S_IROTH, f"{rel} not world-readable (umask {oct(os.umask(0o22))})"
    assert {
        "merged/model.safetensors",
        "merged/tokenizer.json",
        "merged/chat_template.jinja",
        "merged/README.md",
        "gguf/fake-hf-lora-f16.gguf",
        "gguf/fake-hf-lora-q8_0.gguf",
        "ollama/Modelfile",
        "ollama/fake-hf-lora-q8_0.gguf",
    } <= set(manifest["files"])
    assert (
        manifest["files"]["ollama/fake-hf-lora-q8_0.gguf"]["sha256"]
        == manifest["files"]["gguf/fake-hf-lora-q8_0.gguf"]["sha256"]
    )
    merged = manifest["steps"]["merged"]
    assert merged["adapter_merged"] and merged["reload_max_abs_logit_diff"] < 1e-3
    assert merged["tokenizer"].startswith("rewritten")  # the GGUF loader's byte-level variant was normalised
    files = manifest["steps"]["gguf"]["files"]
    assert files["fake-hf-lora-f16.gguf"]["tokenizer_model"] == "gpt2"  # not misread as SentencePiece
    assert files["fake-hf-lora-q8_0.gguf"]["bytes"] < files["fake-hf-lora-f16.gguf"]["bytes"]
    assert not [p for p in out.rglob(".*") if p.name.startswith(".")], "temporary folders left behind"

    card = (out / "merged" / "README.md").read_text()
    assert card.startswith("---\nlicense: other")  # tiny-llama is not a registry model: licence not claimed
    for needle in (
        BASE_SHA,
        DATA_SHA,
        "learning_rate",
        "lora_r 4",
        "q_proj",
        "v_proj",
        "key-fact recall",
        "MC accuracy",
        "vs base",
        "repetition_penalty = 1.3",
        "max_new_tokens = 200",
        "CC BY 4.0",
        "the champion",
        "../gguf/fake-hf-lora-f16.gguf",
    ):
        assert needle in card, needle
    summary = json.loads((exp / "eval" / "summary.json").read_text())
    recall = summary["targets"]["hf-lora"]["metrics"]["qa"]["key_fact_recall"]
    assert f"{recall['mean']:.4f} [{recall['ci_low']:.4f}, {recall['ci_high']:.4f}]" in card


def test_gguf_metadata_and_q8(exported):
    from export.gguf import read_metadata

    _, out, _ = exported
    for kind, file_type in (("f16", 1), ("q8_0", 7)):  # llama.cpp's LLAMA_FTYPE_MOSTLY_F16 / _Q8_0
        meta = read_metadata(gguf_path(out, "fake-hf-lora", kind))
        assert meta["general.architecture"] == "llama" and meta["general.file_type"] == file_type
        assert meta["tokenizer.ggml.eos_token_id"] == 2  # <|im_end|>: generation stops at the end of a turn
        assert "<|im_start|>" in meta["tokenizer.chat_template"]


def test_ollama_modelfile(exported):
    from transformers import AutoTokenizer

    from export.ollama import CHECK_CONVERSATION, template_pieces

    _, out, manifest = exported
    text = (out / "ollama" / "Modelfile").read_text()
    assert "FROM ./fake-hf-lora-q8_0.gguf" in text
    assert 'PARAMETER stop "<|im_end|>"' in text
    assert "PARAMETER temperature 0.0" in text and "PARAMETER repeat_penalty 1.3" in text
    assert "PARAMETER num_predict 200" in text
    expected = (
        'TEMPLATE """{{- range .Messages }}{{ if eq .Role "system" }}<|im_start|>system\n{{ .Content }}'
        '<|im_end|>\n{{ else if eq .Role "user" }}<|im_start|>user\n{{ .Content }}<|im_end|>\n'
        '{{ else if eq .Role "assistant" }}<|im_start|>assistant\n{{ .Content }}<|im_end|>\n'
        '{{ end }}{{ end }}<|im_start|>assistant\n"""'
    )
    assert expected in text
    tok = AutoTokenizer.from_pretrained(out / "merged")
    pieces = template_pieces(tok)
    for n in range(1, len(CHECK_CONVERSATION) + 1):  # the Go template's pieces render what Jinja renders
        conv = CHECK_CONVERSATION[:n]
        assert pieces.render(conv) == tok.apply_chat_template(conv, tokenize=False, add_generation_prompt=True)


def test_ollama_rejects_a_template_that_is_not_per_message(tiny_model_dir):
    from transformers import AutoTokenizer

    from export.ollama import template_pieces

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    tok.chat_template = (
        "{% for m in messages %}{{ loop.index }}:{{ m['role'] }}:{{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}assistant:{% endif %}"
    )
    with pytest.raises(ExportError, match="does not render messages independently"):
        template_pieces(tok)


def test_merged_only_and_base_champion(tmp_path, tiny_model_dir):
    """--format merged needs no converter; a champion that is the base model exports the base weights."""
    exp = make_export_experiment(tmp_path, tiny_model_dir)
    champion = json.loads((exp / "champion.json").read_text())
    champion.update(system="base", adapter_path=None)
    (exp / "champion.json").write_text(json.dumps(champion))
    manifest = run_export(exp, formats="merged", log=quiet)
    assert manifest["system"] == "base" and manifest["formats"] == ["merged"]
    assert not manifest["steps"]["merged"]["adapter_merged"]
    card = (exp / "export" / "base" / "merged" / "README.md").read_text()
    assert "no adapter: the base model itself (no fine-tuned system beat it" in card
    assert not (exp / "export" / "base" / "gguf").exists()


def test_clear_errors(tmp_path, tiny_model_dir):
    from harness.cli import main

    exp = make_export_experiment(tmp_path, tiny_model_dir)
    with pytest.raises(ExportError, match=r"system 'nope': no run record .*trained systems of fake: hf-lora"):
        resolve_source(exp, "nope")
    with pytest.raises(ExportError, match="--format tarball: unknown"):
        parse_formats(["merged,tarball"])
    assert parse_formats("ollama") == ["gguf", "ollama"]  # the Modelfile needs the GGUF
    with pytest.raises(ExportError, match="converter '/no/such/convert.py': no such file"):
        run_export(exp, formats="gguf", converter="/no/such/convert.py", log=quiet)
    assert not (exp / "export" / "hf-lora" / "merged").exists()  # failed before any work

    import shutil

    shutil.rmtree(exp / "hf-lora" / "adapter")
    with pytest.raises(ExportError, match=r"run.json: adapter '.*hf-lora/adapter' is missing"):
        resolve_source(exp)
    (exp / "champion.json").unlink()
    with pytest.raises(ExportError, match=r"no champion.json .*--system: hf-lora"):
        resolve_source(exp)
    # the CLI: exit 2 with the message, no traceback
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        assert main(["export", "missing-exp"]) == 2
        assert main(["export", "fake", "--system", "nope"]) == 2
    finally:
        os.chdir(cwd)


def test_gguf_without_the_export_extra_names_it(tmp_path, tiny_model_dir, monkeypatch):
    """sentencepiece lives in the `export` extra: without it the GGUF export stops before any work, naming the
    extra, instead of failing inside llama.cpp's converter half-way."""
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "sentencepiece" else real_find_spec(name, *a)
    )
    exp = make_export_experiment(tmp_path, tiny_model_dir)
    with pytest.raises(ExportError, match=r"`export` extra .*pip install .*\[export\]"):
        run_export(exp, formats="gguf", log=quiet)
    assert not (exp / "export" / "hf-lora" / "gguf").exists()


def test_failed_conversion_leaves_no_partial_gguf(tmp_path, tiny_model_dir):
    """A converter that dies half-way: an error with its output, no gguf/ folder, no temp folders."""
    exp = make_export_experiment(tmp_path, tiny_model_dir)
    broken = tmp_path / "convert_hf_to_gguf.py"
    broken.write_text(
        "import sys, pathlib\nout = pathlib.Path(sys.argv[sys.argv.index('--outfile') + 1])\n"
        "out.write_bytes(b'GGUF half')\nprint('ERROR: out of disk', flush=True)\nsys.exit(3)\n"
    )
    with pytest.raises(ExportError, match=r"(?s)converter failed .*exit 3.*out of disk"):
        run_export(exp, formats="gguf,ollama", converter=str(broken), log=quiet)
    out = exp / "export" / "hf-lora"
    assert not (out / "gguf").exists() and not (out / "ollama").exists() and not (out / "export.json").exists()
    assert [p.name for p in out.iterdir()] == [], "temporary folders left behind"


def test_cli_export_prints_files(tmp_path, tiny_model_dir, capsys):
    from harness.cli import main

    make_export_experiment(tmp_path, tiny_model_dir)
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        assert main(["export", "fake", "--format", "merged", "--out", "shipped"]) == 0
    finally:
        os.chdir(cwd)
    printed = capsys.readouterr().out
    assert "merged/model.safetensors" in printed and "sha256" in printed and "[export] done" in printed
    assert (tmp_path / "shipped" / "merged" / "config.json").is_file()
