import pytest

from harness.config import ConfigError, describe, load_config, parse_overrides


def test_defaults_are_valid():
    cfg = load_config()
    assert cfg.model.name == "smollm2-135m-instruct"
    assert "hf-lora" in cfg.systems and cfg.train.max_length == 512


def test_yaml_then_overrides(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text("train:\n  learning_rate: 0.001\n  batch_size: 4\nlora:\n  r: 8\n")
    cfg = load_config(path, ["train.batch_size=2", "lora.target_modules=[q_proj,v_proj]", "systems=hf-lora"])
    assert cfg.name == "exp"  # from the file name
    assert cfg.train.learning_rate == 0.001 and cfg.train.batch_size == 2 and cfg.lora.r == 8
    assert cfg.lora.target_modules == ["q_proj", "v_proj"] and cfg.systems == ["hf-lora"]
    assert cfg.train.max_length == 512  # untouched default


@pytest.mark.parametrize(
    "override, message",
    [
        (["train.learning_rat=1"], "unknown key 'learning_rat'"),
        (["nope.x=1"], "unknown key 'nope'"),
        (["train.batch_size=two"], "train.batch_size: expected int"),
        (["train.batch_size=1.5"], "train.batch_size: expected an integer"),
        (["train.bf16=maybe"], "train.bf16: expected true/false"),
        (["systems=[hf-lora,magic-lora]"], "unknown system 'magic-lora'"),
        (["train.batch_size=0"], "train.batch_size: must be >= 1"),
        (["quant.quant_type=int3"], "quant.quant_type"),
        (["train.batch_size"], "expected key=value"),
    ],
)
def test_bad_overrides_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("(", r"\(")):
        load_config(None, override)


def test_unknown_key_in_file_names_the_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("train:\n  epochz: 3\n")
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert str(path) in str(e.value) and "epochz" in str(e.value)


def test_override_parsing_nests_and_types():
    assert parse_overrides(["a.b=3", "a.c=true", "d=x"]) == {"a": {"b": 3, "c": True}, "d": "x"}


def test_every_field_has_help():
    rows = describe()
    assert len(rows) > 20 and all(help_text for _, _, help_text in rows)


@pytest.mark.parametrize(
    "argv",
    [
        ["eval", "exp", "--only", "base", "eval.batch_size=64"],
        ["eval", "--only", "base", "exp", "eval.batch_size=64"],
        ["eval", "exp", "eval.batch_size=64", "--only", "base"],
    ],
)
def test_cli_takes_overrides_before_or_after_options(monkeypatch, argv):
    from harness import cli

    seen = {}
    monkeypatch.setattr(cli.eval, "run", lambda ns: seen.update(vars(ns)) or 0)
    assert cli.main(argv) == 0
    assert seen["experiment"] == "exp" and seen["only"] == "base" and seen["overrides"] == ["eval.batch_size=64"]


def test_cli_still_rejects_unknown_options(monkeypatch, capsys):
    from harness import cli

    monkeypatch.setattr(cli.eval, "run", lambda ns: 0)
    with pytest.raises(SystemExit):
        cli.main(["eval", "exp", "--only", "base", "--bogus"])
    assert "--bogus" in capsys.readouterr().err
