"""Training data: load and validate the JSON dataset, split it, shape it for SFT."""
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


def read_json_list(path: str | Path) -> list:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DatasetError(f"{path}: no such file") from None
    except UnicodeDecodeError as e:
        raise DatasetError(f"{path}: not UTF-8 ({e})") from None
    try:
        rows = json.loads(text)
    except json.JSONDecodeError as e:
        raise DatasetError(f"{path}:{e.lineno}:{e.colno}: invalid JSON: {e.msg}") from None
    if not isinstance(rows, list):
        raise DatasetError(f"{path}: top level must be a JSON list of records, got {type(rows).__name__}")
    return rows


def check_record(path, index: int, row, required, optional=()) -> None:
    if not isinstance(row, dict):
        raise DatasetError(f"{path}: record {index}: must be an object, got {type(row).__name__}")
    for key in required:
        if key not in row:
            raise DatasetError(f"{path}: record {index} (id={row.get('id')!r}): missing field {key!r}")
    for key in (*required, *optional):
        if key in row:
            value = row[key]
            if not isinstance(value, str):
                raise DatasetError(f"{path}: record {index} (id={row.get('id')!r}): field {key!r} must be a string, "
                                   f"got {type(value).__name__}")
            if not value.strip():
                raise DatasetError(f"{path}: record {index} (id={row.get('id')!r}): field {key!r} is empty")
    if "lang" in row and row["lang"] not in LANGS:
        raise DatasetError(f"{path}: record {index} (id={row['id']!r}): field 'lang' must be one of {LANGS}, "
                           f"got {row['lang']!r}")


def check_unique_ids(path, rows) -> None:
    seen: dict[str, int] = {}
    for i, row in enumerate(rows):
        if row["id"] in seen:
            raise DatasetError(f"{path}: record {i}: field 'id' duplicates record {seen[row['id']]} ({row['id']!r})")
        seen[row["id"]] = i


def load_training_set(path: str | Path) -> list[dict]:
    rows = read_json_list(path)
    if not rows:
        raise DatasetError(f"{path}: the dataset is empty")
    for i, row in enumerate(rows):
        check_record(path, i, row, REQUIRED_TRAIN_FIELDS, OPTIONAL_TRAIN_FIELDS)
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
        train = train + [r for r in load_augmented_set(data_cfg.augmented_path) if r["augmented_from"] in kept]
    return train, val


def to_prompt_completion(row: dict, system_prompt: str = "") -> dict:
    """Conversational prompt/completion pair: TRL computes the loss on the completion only."""
    prompt = [{"role": "system", "content": system_prompt}] if system_prompt else []
    prompt.append({"role": "user", "content": row["instruction"]})
    return {"prompt": prompt, "completion": [{"role": "assistant", "content": row["response"]}]}


def dataset_fingerprint(data_cfg, train: list, val: list) -> dict:
    info = {"path": str(data_cfg.train_path), "sha256": sha256_file(data_cfg.train_path), "train_items": len(train),
            "validation_items": len(val)}
    if data_cfg.augmented_path:
        info.update(augmented_path=str(data_cfg.augmented_path), augmented_sha256=sha256_file(data_cfg.augmented_path),
                    augmented_items=sum("augmented_from" in r for r in train))
    return info
