"""Training data: load and validate the dataset, split it, shape it for SFT.

The native format is a JSON list of {id, lang, topic, instruction, response, ...}. The loader also reads the
formats people already have, as a JSON list or JSONL (one object per line), and maps them to the native schema:
Alpaca ({instruction, input, output}), chat messages ({messages: [{role, content}, ...]}, OpenAI style) and
ShareGPT ({conversations: [{from, value}, ...]}). Errors name the file, the record (JSONL: the line) and the field.
"""

from __future__ import annotations

import json
import random
from collections import defaultdict
from pathlib import Path

from harness.io import sha256_file

REQUIRED_TRAIN_FIELDS = ("id", "lang", "topic", "instruction", "response")
OPTIONAL_TRAIN_FIELDS = ("subtopic", "difficulty", "source_type")
LANGS = ("en", "de")


class DatasetError(ValueError):
    """Bad dataset input; the message names file, record index and field."""


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DatasetError(f"{path}: no such file") from None
    except UnicodeDecodeError as e:
        raise DatasetError(f"{path}: not UTF-8 ({e})") from None


def read_json_list(path: str | Path) -> list:
    path = Path(path)
    try:
        rows = json.loads(_read_text(path))
    except json.JSONDecodeError as e:
        raise DatasetError(f"{path}:{e.lineno}:{e.colno}: invalid JSON: {e.msg}") from None
    if not isinstance(rows, list):
        raise DatasetError(f"{path}: top level must be a JSON list of records, got {type(rows).__name__}")
    return rows


def read_records(path: str | Path) -> tuple[list, list[str]]:
    """(records, where each one is): a JSON list ("record i") or JSONL ("line n", blank lines skipped)."""
    path = Path(path)
    if path.suffix != ".jsonl":
        rows = read_json_list(path)
        return rows, [f"record {i}" for i in range(len(rows))]
    rows, where = [], []
    for n, line in enumerate(_read_text(path).splitlines(), 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as e:
            raise DatasetError(f"{path}:{n}:{e.colno}: invalid JSON: {e.msg}") from None
        where.append(f"line {n}")
    return rows, where


def check_record(path, index: int, row, required, optional=(), where: str | None = None) -> None:
    where = where or f"record {index}"
    if not isinstance(row, dict):
        raise DatasetError(f"{path}: {where}: must be an object, got {type(row).__name__}")
    for key in required:
        if key not in row:
            raise DatasetError(f"{path}: {where} (id={row.get('id')!r}): missing field {key!r}")
    for key in (*required, *optional):
        if key in row:
            value = row[key]
            if not isinstance(value, str):
                raise DatasetError(
                    f"{path}: {where} (id={row.get('id')!r}): field {key!r} must be a string, "
                    f"got {type(value).__name__}"
                )
            if not value.strip():
                raise DatasetError(f"{path}: {where} (id={row.get('id')!r}): field {key!r} is empty")
    if "lang" in row and row["lang"] not in LANGS:
        raise DatasetError(
            f"{path}: {where} (id={row['id']!r}): field 'lang' must be one of {LANGS}, got {row['lang']!r}"
        )


def check_unique_ids(path, rows) -> None:
    seen: dict[str, int] = {}
    for i, row in enumerate(rows):
        if row["id"] in seen:
            raise DatasetError(f"{path}: record {i}: field 'id' duplicates record {seen[row['id']]} ({row['id']!r})")
        seen[row["id"]] = i


def record_format(row) -> str:
    """Which schema a record follows: native, alpaca, messages or sharegpt."""
    if isinstance(row, dict):
        if "messages" in row:
            return "messages"
        if "conversations" in row:
            return "sharegpt"
        if "output" in row and "response" not in row:
            return "alpaca"
    return "native"


def _text(path, where: str, row: dict, key: str) -> str:
    value = row.get(key)
    if not isinstance(value, str) or not value.strip():
        raise DatasetError(f"{path}: {where}: field {key!r} must be a non-empty string, got {value!r}")
    return value


SHAREGPT_ROLES = {"system": "system", "human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant"}


def _turns(path, where: str, row: dict, fmt: str) -> list[dict]:
    key, role_key, text_key = (
        ("messages", "role", "content") if fmt == "messages" else ("conversations", "from", "value")
    )
    turns = row.get(key)
    if not isinstance(turns, list) or not turns:
        raise DatasetError(f"{path}: {where}: field {key!r} must be a non-empty list of turns")
    out = []
    for j, turn in enumerate(turns):
        role = SHAREGPT_ROLES.get(turn.get(role_key)) if isinstance(turn, dict) else None
        if role is None:
            raise DatasetError(
                f"{path}: {where}: {key}[{j}].{role_key} must be one of "
                f"{sorted(SHAREGPT_ROLES) if fmt == 'sharegpt' else ['system', 'user', 'assistant']}"
            )
        out.append({"role": role, "content": _text(path, f"{where}: {key}[{j}]", turn, text_key)})
    if out[-1]["role"] != "assistant" or not any(t["role"] == "user" for t in out):
        raise DatasetError(
            f"{path}: {where}: field {key!r} must hold a user turn and end with the assistant's "
            "answer (the turn that is trained on)"
        )
    return out


def to_native(path, where: str, index: int, row, fmt: str) -> dict:
    """A record of another format in the native schema. Conversations keep their earlier turns as the prompt
    (`prompt_messages`); the final assistant turn is the trained answer."""
    if not isinstance(row, dict):
        raise DatasetError(f"{path}: {where}: must be an object, got {type(row).__name__}")
    native = {"id": str(row.get("id") or f"{Path(path).stem}-{index}"), "topic": str(row.get("topic") or "general")}
    if fmt == "alpaca":
        extra = row.get("input") or ""
        if not isinstance(extra, str):
            raise DatasetError(f"{path}: {where}: field 'input' must be a string")
        native["instruction"] = _text(path, where, row, "instruction") + (f"\n\n{extra}" if extra.strip() else "")
        native["response"] = _text(path, where, row, "output")
    else:
        turns = _turns(path, where, row, fmt)
        last_user = max(i for i, t in enumerate(turns) if t["role"] == "user")
        native["instruction"], native["response"] = turns[last_user]["content"], turns[-1]["content"]
        native["prompt_messages"] = turns[:-1]
    native["lang"] = str(row.get("lang") or detect_language(native["instruction"] + " " + native["response"]))
    return native


def detect_language(text: str) -> str:
    import py3langid

    return py3langid.classify(text)[0]


def load_training_set(path: str | Path) -> list[dict]:
    """Training records in the native schema, from any supported format (see the module docstring)."""
    raw, where = read_records(path)
    if not raw:
        raise DatasetError(f"{path}: the dataset is empty")
    rows = []
    for i, (row, at) in enumerate(zip(raw, where)):
        fmt = record_format(row)
        if fmt == "native":
            check_record(path, i, row, REQUIRED_TRAIN_FIELDS, OPTIONAL_TRAIN_FIELDS, where=at)
            rows.append(row)
        else:
            rows.append(to_native(path, at, i, row, fmt))
    check_unique_ids(path, rows)
    return rows


AUGMENTED_FIELDS = ("augmented_from", "style")


def load_augmented_set(path: str | Path) -> list[dict]:
    """Paraphrase augmentations of the seed set: training items that also name their seed (augmented_from)."""
    rows = read_json_list(path)
    for i, row in enumerate(rows):
        check_record(path, i, row, REQUIRED_TRAIN_FIELDS + AUGMENTED_FIELDS, OPTIONAL_TRAIN_FIELDS)
    check_unique_ids(path, rows)
    return rows


def split_train_validation(rows: list[dict], fraction: float, seed: int) -> tuple[list[dict], list[dict]]:
    """Hold back `fraction` of each topic (at least one item per topic with >= 2 items) for validation."""
    if fraction <= 0:
        return list(rows), []
    by_topic: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        by_topic[row["topic"]].append(row)
    rng = random.Random(seed)
    train, val = [], []
    for topic in sorted(by_topic):
        group = sorted(by_topic[topic], key=lambda r: r["id"])
        rng.shuffle(group)
        n_val = max(1, round(len(group) * fraction)) if len(group) >= 2 else 0
        val += group[:n_val]
        train += group[n_val:]
    rng.shuffle(train)
    return train, val


def experiment_rows(data_cfg, seed: int) -> tuple[list[dict], list[dict]]:
    """(training rows, validation rows) of an experiment: the seeded split of the training set, then the
    augmentations of the training items only (an augmentation of a validation item would leak into its loss)."""
    rows = load_training_set(data_cfg.train_path)
    train, val = split_train_validation(rows, data_cfg.validation_fraction, seed)
    if data_cfg.max_train_items:
        train = train[: data_cfg.max_train_items]
    if data_cfg.augmented_path:
        kept = {r["id"] for r in train}
        augmented = [r for r in load_augmented_set(data_cfg.augmented_path) if r["augmented_from"] in kept]
        train = (train if data_cfg.train_on_seed else []) + augmented
    elif not data_cfg.train_on_seed:
        raise DatasetError("data.train_on_seed=false needs data.augmented_path (there would be nothing to train on)")
    return train, val


def to_prompt_completion(row: dict, system_prompt: str = "") -> dict:
    """Conversational prompt/completion pair: TRL computes the loss on the completion only. A conversation's
    earlier turns (prompt_messages) stay in the prompt; the experiment's system prompt goes first unless the
    conversation brings its own."""
    turns = row.get("prompt_messages") or [{"role": "user", "content": row["instruction"]}]
    prompt = [{"role": "system", "content": system_prompt}] if system_prompt and turns[0]["role"] != "system" else []
    return {"prompt": prompt + list(turns), "completion": [{"role": "assistant", "content": row["response"]}]}


def dataset_fingerprint(data_cfg, train: list, val: list) -> dict:
    info = {
        "path": str(data_cfg.train_path),
        "sha256": sha256_file(data_cfg.train_path),
        "train_items": len(train),
        "validation_items": len(val),
    }
    if data_cfg.augmented_path:
        info.update(
            augmented_path=str(data_cfg.augmented_path),
            augmented_sha256=sha256_file(data_cfg.augmented_path),
            augmented_items=sum("augmented_from" in r for r in train),
        )
    return info
