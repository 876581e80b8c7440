import json
import subprocess
import sys

import pytest

from harness.data.load import DatasetError, load_training_set, split_train_validation, to_prompt_completion
from tests.conftest import REPO, make_rows


def write(tmp_path, rows_or_text):
    path = tmp_path / "d.json"
    path.write_text(rows_or_text if isinstance(rows_or_text, str) else json.dumps(rows_or_text, indent=1))
    return path


def corrupt(index, **change):
    rows = make_rows(6)
    for k, v in change.items():
        if v is None:
            del rows[index][k]
        else:
            rows[index][k] = v
    return rows


@pytest.mark.parametrize(
    "rows, expected",
    [
        (corrupt(3, response=None), ["record 3", "missing field 'response'"]),
        (corrupt(2, instruction="   "), ["record 2", "'instruction' is empty"]),
        (corrupt(4, topic=7), ["record 4", "'topic' must be a string", "int"]),
        (corrupt(1, lang="fr"), ["record 1", "'lang'"]),
        (corrupt(5, id="t-000"), ["record 5", "duplicates record 0"]),
        ([], ["empty"]),
        ({"a": 1}, ["JSON list"]),
    ],
)
def test_bad_records_name_file_index_field(tmp_path, rows, expected):
    path = write(tmp_path, rows)
    with pytest.raises(DatasetError) as e:
        load_training_set(path)
    assert str(path) in str(e.value)
    for part in expected:
        assert part in str(e.value)


def test_bad_json_names_the_line(tmp_path):
    path = write(tmp_path, '[\n {"id": "a",\n  "lang": "en" "topic": "x"}\n]')
    with pytest.raises(DatasetError, match=r"d\.json:3:\d+: invalid JSON"):
        load_training_set(path)


def test_split_is_stratified_and_deterministic():
    rows = make_rows(60)
    train, val = split_train_validation(rows, 0.1, seed=1)
    assert len(train) + len(val) == 60 and not {r["id"] for r in train} & {r["id"] for r in val}
    assert sorted({r["topic"] for r in val}) == ["ableton", "mastering", "mixing"]
    assert [r["id"] for r in split_train_validation(rows, 0.1, seed=1)[1]] == [r["id"] for r in val]


def test_prompt_completion_has_no_hidden_system_prompt():
    pc = to_prompt_completion(make_rows(1)[0])
    assert [m["role"] for m in pc["prompt"]] == ["user"] and pc["completion"][0]["role"] == "assistant"
    assert to_prompt_completion(make_rows(1)[0], "Be brief.")["prompt"][0] == {"role": "system", "content": "Be brief."}


def test_cli_rejects_corrupt_dataset_and_writes_nothing(tmp_path):
    path = write(tmp_path, corrupt(2, response=None))
    runs = tmp_path / "runs"
    proc = subprocess.run(
        [sys.executable, "-m", "harness.cli", "run", f"data.train_path={path}", f"runs_dir={runs}"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert f"{path}: record 2" in proc.stderr and "'response'" in proc.stderr
    assert not runs.exists()


ALPACA = [
    {
        "instruction": "What does a 4:1 ratio do?",
        "input": "",
        "output": "Every 4 dB over the threshold comes out as 1 dB.",
    },
    {"instruction": "Translate to German.", "input": "high-pass filter", "output": "Hochpassfilter"},
]


def _jsonl(tmp_path, name, rows):
    path = tmp_path / name
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def test_alpaca_jsonl_maps_to_the_native_schema(tmp_path):
    rows = load_training_set(_jsonl(tmp_path, "alpaca.jsonl", ALPACA))
    assert rows[0]["instruction"] == ALPACA[0]["instruction"] and rows[0]["response"] == ALPACA[0]["output"]
    assert rows[1]["instruction"] == "Translate to German.\n\nhigh-pass filter"  # Alpaca's input follows
    assert [r["id"] for r in rows] == ["alpaca-0", "alpaca-1"] and rows[0]["lang"] == "en"
    assert to_prompt_completion(rows[1])["prompt"] == [{"role": "user", "content": rows[1]["instruction"]}]


def test_chat_messages_and_sharegpt_keep_earlier_turns_in_the_prompt(tmp_path):
    messages = {
        "messages": [
            {"role": "system", "content": "You are a mixing engineer."},
            {"role": "user", "content": "My kick is weak."},
            {"role": "assistant", "content": "Boost around 60 Hz."},
            {"role": "user", "content": "And the click?"},
            {"role": "assistant", "content": "Add 3-5 kHz."},
        ],
        "lang": "en",
        "topic": "mixing",
    }
    sharegpt = {
        "conversations": [
            {"from": "human", "value": "Was macht ein Limiter?"},
            {"from": "gpt", "value": "Er begrenzt die Pegelspitzen."},
        ]
    }
    path = tmp_path / "chat.json"
    path.write_text(json.dumps([messages, sharegpt]))
    chat, share = load_training_set(path)
    assert (chat["instruction"], chat["response"], chat["topic"]) == ("And the click?", "Add 3-5 kHz.", "mixing")
    pc = to_prompt_completion(chat, system_prompt="ignored: the conversation has its own")
    assert [m["role"] for m in pc["prompt"]] == ["system", "user", "assistant", "user"]
    assert pc["completion"] == [{"role": "assistant", "content": "Add 3-5 kHz."}]
    assert share["lang"] == "de" and share["response"] == "Er begrenzt die Pegelspitzen."


@pytest.mark.parametrize(
    "name, content, expected",
    [
        (
            "bad.jsonl",
            '{"instruction": "a", "output": "b"}\n\n{"instruction": "c", "output": 3}\n',
            "line 3: field 'output'",
        ),
        ("bad.jsonl", '{"instruction": "a", "output": "b"}\n{"instruction": \n', "bad.jsonl:2:"),
        (
            "bad.json",
            '[{"messages": [{"role": "user", "content": "hi"}]}]',
            "record 0: field 'messages' must hold a user turn and end",
        ),
        ("bad.json", '[{"conversations": [{"from": "robot", "value": "x"}]}]', "conversations[0].from must be one of"),
    ],
)
def test_other_formats_name_file_line_and_field(tmp_path, name, content, expected):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(DatasetError) as e:
        load_training_set(path)
    assert str(path) in str(e.value) and expected in str(e.value)
