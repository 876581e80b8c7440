"""`musicprod data check`: validate the training set, its augmentations, the dev set and the held-out benchmark.

Checks: schema and types, response length, lang tag vs text (py3langid), exact and near duplicates in
training, key-fact regexes (own reference >= 90 %, other references <= 15 % on average), MC answer spread,
MC option length (the correct option must not be a length tell), and contamination by 13-gram overlap
(lm-eval's convention) and MiniLM cosine >= 0.9: held-out vs training (seed and augmented), dev vs held-out,
and dev vs training (a dev question that copies a training instruction would flatter the recipe it picks).
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

from harness.data.load import (
    DatasetError,
    check_record,
    check_unique_ids,
    load_augmented_set,
    load_training_set,
    read_json_list,
)
from harness.eval.metrics import key_fact_recall

TOPICS = ("ableton", "mixing", "mastering", "sound_design", "recording", "music_theory", "genre_workflows")
DIFFICULTIES = ("beginner", "intermediate", "advanced")
SOURCE_TYPES = ("docs-style", "forum Q&A", "step-by-step tutorial", "concept", "troubleshooting")
RESPONSE_WORDS = (40, 250)
AUGMENTED_RESPONSE_WORDS = (12, 90)  # augmentations are short answers that restate a seed item's key facts
AUGMENTED_STYLES = ("question", "scenario", "check")
NGRAM = 13
COSINE_LIMIT = 0.9
NEAR_DUPLICATE_COSINE = 0.95
# With four options the correct one is strictly the longest (or shortest) in at most ~25 % of items when length
# carries no signal; 30 % is two standard errors above that at n = 311. Above it, "pick the longest" beats chance
# and log-likelihood (which favours short continuations) is pushed below it.
LENGTH_TELL_LIMIT = 0.30


def ngrams(text: str, n: int = NGRAM) -> set[tuple[str, ...]]:
    tokens = re.findall(r"\w+", text.lower())
    return {tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)}


def detect_lang(text: str) -> str:
    import py3langid

    return py3langid.classify(text)[0]


def load_qa(path: Path) -> list[dict]:
    rows = read_json_list(path)
    for i, row in enumerate(rows):
        check_record(path, i, row, ("id", "lang", "topic", "difficulty", "question", "reference"))
        facts = row.get("key_facts")
        if not isinstance(facts, list) or not facts:
            raise DatasetError(f"{path}: record {i} (id={row['id']!r}): field 'key_facts' must be a non-empty list")
        for j, fact in enumerate(facts):
            if not isinstance(fact, dict) or not isinstance(fact.get("any_of"), list) or not fact["any_of"]:
                raise DatasetError(
                    f"{path}: record {i} (id={row['id']!r}): key_facts[{j}].any_of must be a non-empty list"
                )
            for pattern in fact["any_of"]:
                try:
                    re.compile(pattern)
                except (re.error, TypeError) as e:
                    raise DatasetError(
                        f"{path}: record {i} (id={row['id']!r}): key_facts[{j}] bad regex {pattern!r}: {e}"
                    ) from None
    check_unique_ids(path, rows)
    return rows


def load_mc(path: Path) -> list[dict]:
    rows = read_json_list(path)
    for i, row in enumerate(rows):
        check_record(path, i, row, ("id", "lang", "topic", "question"))
        choices = row.get("choices")
        if not (
            isinstance(choices, list) and len(choices) == 4 and all(isinstance(c, str) and c.strip() for c in choices)
        ):
            raise DatasetError(f"{path}: record {i} (id={row['id']!r}): field 'choices' must be 4 non-empty strings")
        if len(set(choices)) != 4:
            raise DatasetError(f"{path}: record {i} (id={row['id']!r}): field 'choices' has duplicates")
        if row.get("answer") not in (0, 1, 2, 3) or isinstance(row.get("answer"), bool):
            raise DatasetError(f"{path}: record {i} (id={row['id']!r}): field 'answer' must be an integer 0-3")
    check_unique_ids(path, rows)
    return rows


def check_training(path, rows) -> list[str]:
    problems = []
    for i, r in enumerate(rows):
        where = f"{path}: record {i} (id={r['id']!r})"
        for key, allowed in (("topic", TOPICS), ("difficulty", DIFFICULTIES), ("source_type", SOURCE_TYPES)):
            if r.get(key) not in allowed:
                problems.append(f"{where}: field {key!r} = {r.get(key)!r} not in {allowed}")
        words = len(r["response"].split())
        if not RESPONSE_WORDS[0] <= words <= RESPONSE_WORDS[1]:
            problems.append(
                f"{where}: field 'response' has {words} words (allowed {RESPONSE_WORDS[0]}-{RESPONSE_WORDS[1]})"
            )
        got = detect_lang(r["instruction"] + " " + r["response"])
        if got != r["lang"]:
            problems.append(f"{where}: field 'lang' is {r['lang']!r} but the text reads as {got!r}")
    seen: dict[str, int] = {}
    for i, r in enumerate(rows):
        key = " ".join(r["instruction"].lower().split())
        if key in seen:
            problems.append(
                f"{path}: record {i} (id={r['id']!r}): field 'instruction' exactly duplicates record {seen[key]}"
            )
        seen.setdefault(key, i)
    return problems


def check_heldout(qa_path, qa, mc_path, mc) -> list[str]:
    problems = []
    for i, r in enumerate(qa):
        where = f"{qa_path}: record {i} (id={r['id']!r})"
        if r.get("topic") not in TOPICS:
            problems.append(f"{where}: field 'topic' = {r.get('topic')!r} not in {TOPICS}")
        own = key_fact_recall(r["key_facts"], r["reference"])
        if own < 0.9:
            problems.append(
                f"{where}: field 'key_facts': own reference matches only {own:.0%} of the facts (need >= 90 %)"
            )
        others = [key_fact_recall(r["key_facts"], o["reference"]) for k, o in enumerate(qa) if k != i]
        if others and sum(others) / len(others) > 0.15:
            problems.append(
                f"{where}: field 'key_facts': other items' references match {sum(others) / len(others):.0%} on average (need <= 15 %)"
            )
        got = detect_lang(r["question"] + " " + r["reference"])
        if got != r["lang"]:
            problems.append(f"{where}: field 'lang' is {r['lang']!r} but the text reads as {got!r}")
    positions = Counter(r["answer"] for r in mc)
    if mc and max(positions.values()) - min(positions.get(k, 0) for k in range(4)) > max(3, len(mc) // 10):
        problems.append(f"{mc_path}: correct answers unevenly spread over positions: {dict(sorted(positions.items()))}")
    return problems + mc_length_tells(mc_path, mc)


def mc_length_shares(mc: list[dict]) -> dict[str, float]:
    """Share of items whose correct option is strictly the longest / strictly the shortest (in characters)."""

    def strictly(item, better) -> bool:
        lens = [len(c) for c in item["choices"]]
        return all(better(lens[item["answer"]], length) for i, length in enumerate(lens) if i != item["answer"])

    n = len(mc) or 1
    return {
        "longest": sum(strictly(r, int.__gt__) for r in mc) / n,
        "shortest": sum(strictly(r, int.__lt__) for r in mc) / n,
    }


def mc_length_tells(mc_path, mc) -> list[str]:
    shares = mc_length_shares(mc)
    return [
        f"{mc_path}: the correct option is strictly the {which} in {share:.0%} of items (limit "
        f"{LENGTH_TELL_LIMIT:.0%}; chance about 25 %): option length gives the answer away; rewrite distractors"
        for which, share in shares.items()
        if mc and share > LENGTH_TELL_LIMIT
    ]


def heldout_text(row: dict) -> str:
    """The text of an evaluation item that training text must not share: question + reference, or question +
    options (an MC option copied from training gives the answer away as much as the question does)."""
    return " ".join([row["question"], row.get("reference", ""), *row.get("choices", [])])


def overlaps(train, heldout: list[tuple[str, dict]], semantic: bool):
    """Every (kind, held-out row, training id, why) pair that shares a 13-gram or is MiniLM-close (>= 0.9)."""
    index: dict[tuple, list[str]] = {}
    for r in train:
        for g in ngrams(r["instruction"] + " " + r["response"]):
            index.setdefault(g, []).append(r["id"])
    for name, r in heldout:
        hits = dict.fromkeys(i for g in ngrams(heldout_text(r)) for i in index.get(g, ()))
        for train_id in hits:
            yield name, r, train_id, f"shares a {NGRAM}-gram with training item {train_id}"
    if semantic and train and heldout:
        from harness.data.embeddings import encode

        sims = encode([r["question"] for _, r in heldout]) @ encode([r["instruction"] for r in train]).T
        for k, (name, r) in enumerate(heldout):
            for j in (sims[k] >= COSINE_LIMIT).nonzero()[0]:
                yield (
                    name,
                    r,
                    train[j]["id"],
                    f"question has MiniLM cosine {sims[k, j]:.2f} with training item {train[j]['id']}",
                )


def contamination(train, heldout: list[tuple[str, dict]], semantic: bool) -> list[str]:
    """Held-out items that share a 13-gram with, or are MiniLM-close to, training text (first finding per
    item and check)."""
    seen, problems = set(), []
    for name, r, _, why in overlaps(train, heldout, semantic):
        kind = "ngram" if "gram" in why else "cosine"
        if (name, r["id"], kind) not in seen:
            seen.add((name, r["id"], kind))
            problems.append(f"{name} {r['id']}: {why}")
    return problems


def contaminating_ids(train, heldout: list[tuple[str, dict]], semantic: bool) -> set[str]:
    """Training ids that overlap any held-out item: what an augmentation merge must drop."""
    return {train_id for _, _, train_id, _ in overlaps(train, heldout, semantic)}


def check_augmented(path, rows: list[dict], seed: list[dict]) -> list[str]:
    """Augmentations: each names its seed item (augmented_from), keeps its language and topic, is a short
    answer, and is not a copy of another instruction."""
    seed_by_id = {r["id"]: r for r in seed}
    problems = []
    for i, r in enumerate(rows):
        where = f"{path}: record {i} (id={r['id']!r})"
        source = seed_by_id.get(r.get("augmented_from"))
        if source is None:
            problems.append(f"{where}: field 'augmented_from' = {r.get('augmented_from')!r} is not a training item id")
            continue
        for key in ("lang", "topic"):
            if r.get(key) != source[key]:
                problems.append(f"{where}: field {key!r} = {r.get(key)!r} differs from its seed item ({source[key]!r})")
        if r.get("style") not in AUGMENTED_STYLES:
            problems.append(f"{where}: field 'style' = {r.get('style')!r} not in {AUGMENTED_STYLES}")
        words = len(r["response"].split())
        if not AUGMENTED_RESPONSE_WORDS[0] <= words <= AUGMENTED_RESPONSE_WORDS[1]:
            problems.append(
                f"{where}: field 'response' has {words} words (allowed {AUGMENTED_RESPONSE_WORDS[0]}-"
                f"{AUGMENTED_RESPONSE_WORDS[1]})"
            )
        got = detect_lang(r["instruction"] + " " + r["response"])
        if got != r["lang"]:
            problems.append(f"{where}: field 'lang' is {r['lang']!r} but the text reads as {got!r}")
    seen = {" ".join(r["instruction"].lower().split()): f"seed item {r['id']}" for r in seed}
    for i, r in enumerate(rows):
        key = " ".join(r["instruction"].lower().split())
        if key in seen:
            problems.append(f"{path}: record {i} (id={r['id']!r}): field 'instruction' exactly duplicates {seen[key]}")
        seen.setdefault(key, f"augmented item {r['id']}")
    return problems


def near_duplicates(path, train) -> list[str]:
    from harness.data.embeddings import encode

    vecs = encode([r["instruction"] for r in train])
    sims = vecs @ vecs.T
    problems = []
    for i in range(len(train)):
        for j in range(i + 1, len(train)):
            if sims[i, j] >= NEAR_DUPLICATE_COSINE:
                problems.append(
                    f"{path}: record {j} (id={train[j]['id']!r}): field 'instruction' near-duplicates record {i} (cosine {sims[i, j]:.2f})"
                )
    return problems


def stats_table(train, qa, mc) -> str:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="musicprod data: items by topic and language")
    for col in ("topic", "train en", "train de", "qa en", "qa de", "mc en", "mc de"):
        table.add_column(col, justify="right" if col != "topic" else "left")
    count = lambda rows, t, lang: sum(r["topic"] == t and r["lang"] == lang for r in rows)
    for t in TOPICS:
        table.add_row(t, *(str(count(rows, t, lang)) for rows in (train, qa, mc) for lang in ("en", "de")))
    de = lambda rows: f"{sum(r['lang'] == 'de' for r in rows) / max(1, len(rows)):.0%} de"
    table.add_row("total", f"{len(train)}", de(train), f"{len(qa)}", de(qa), f"{len(mc)}", de(mc))
    diff = Counter(r.get("difficulty") for r in train)
    console = Console(width=120, record=True)
    console.print(table)
    console.print("train difficulty: " + ", ".join(f"{k}={v}" for k, v in sorted(diff.items(), key=str)))
    return console.export_text()


def coverage_lines(train: list[dict], question_sets: list[tuple[str, list[dict]]]) -> None:
    """How much of each question set's key facts the training text states (cached: harness.eval.coverage)."""
    from harness.eval.coverage import coverage_stats, fact_coverage

    for name, qa in question_sets:
        if qa:
            c = coverage_stats(fact_coverage(train, qa))
            print(
                f"{name} key facts stated in some training response: {c['stated_share']:.0%} "
                f"({c['facts']} facts); in the nearest training item: {c['in_nearest_share']:.0%}"
            )


def load_benchmark(bench_dir: str | Path) -> tuple[list[dict], list[dict]]:
    bench = Path(bench_dir)
    return load_qa(bench / "qa.json"), load_mc(bench / "mc.json")


def as_items(qa: list[dict], mc: list[dict], prefix: str = "") -> list[tuple[str, dict]]:
    return [(f"{prefix}qa", r) for r in qa] + [(f"{prefix}mc", r) for r in mc]


def run_check(
    train_path: str,
    benchmark_dir: str,
    semantic: bool = True,
    augmented_path: str | None = None,
    dev_dir: str | None = None,
) -> int:
    bench = Path(benchmark_dir)
    train = load_training_set(train_path)
    qa, mc = load_benchmark(bench)
    problems = check_training(train_path, train) + check_heldout(bench / "qa.json", qa, bench / "mc.json", mc)
    if semantic:
        problems += near_duplicates(train_path, train)
    augmented = load_augmented_set(augmented_path) if augmented_path else []
    problems += check_augmented(augmented_path, augmented, train) if augmented else []
    heldout = as_items(qa, mc)
    leaks = contamination(train + augmented, heldout, semantic)
    dev_qa, dev_mc = load_benchmark(dev_dir) if dev_dir else ([], [])
    if dev_dir:
        dev = Path(dev_dir)
        problems += check_heldout(dev / "qa.json", dev_qa, dev / "mc.json", dev_mc)
        # Dev against held-out: a shared item would let a choice made on dev see the held-out.
        held_as_train = [{"id": r["id"], "instruction": r["question"], "response": heldout_text(r)} for _, r in heldout]
        leaks += contamination(held_as_train, as_items(dev_qa, dev_mc, "dev "), semantic)
        leaks += contamination(train + augmented, as_items(dev_qa, dev_mc, "dev "), semantic)
    stats_table(train, qa, mc)
    if semantic:  # the nearest-item coverage needs MiniLM too
        coverage_lines(train + augmented, [("held-out", qa), ("dev", dev_qa)])
    for p in problems:
        print(f"error: {p}")
    for p in leaks:
        print(f"contamination: {p}")
    extra = (f", {len(augmented)} augmented" if augmented else "") + (
        f", dev {len(dev_qa)} QA + {len(dev_mc)} MC" if dev_dir else ""
    )
    print(
        f"{len(problems)} data errors, {len(leaks)} contamination findings "
        f"({len(train)} training{extra}, {len(qa)} QA, {len(mc)} MC held-out)"
    )
    return 1 if problems or leaks else 0
