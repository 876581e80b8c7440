"""The recipe sweep's table: answer length beside recall (recall matches patterns anywhere in an answer)."""

import json

from harness.bench import recipe


def test_mean_answer_words_reads_the_qa_answers():
    items = {"qa": [{"answer": "one two three"}, {"answer": " a  b "}, {"answer": None}], "mc": [{"acc": 1.0}]}
    assert recipe.mean_answer_words(items) == round(5 / 3, 1)
    assert recipe.mean_answer_words({"mc": [{"acc": 0.0}]}) is None


def test_recall_of_first_words_scores_at_equal_length():
    """A fact stated only after the cut does not count: recall at equal length separates teaching from rambling."""
    facts = [{"fact": "lookahead", "any_of": ["lookahead"]}, {"fact": "ratio", "any_of": ["ratio"]}]
    early_and_late = "set the ratio " + "filler " * 40 + "and the lookahead"
    items = {"qa": [{"key_facts": facts, "answer": early_and_late}, {"key_facts": facts, "answer": None}]}
    assert recipe.recall_of_first_words(items, words=30) == 0.25  # (1/2 + 0) / 2
    assert recipe.recall_of_first_words(items, words=100) == 0.5
    assert recipe.recall_of_first_words({"mc": []}) is None


def test_sweep_table_shows_answer_words_and_tolerates_old_rows(tmp_path, monkeypatch):
    monkeypatch.setattr(recipe, "RECIPE_DIR", tmp_path)
    ci = {"mean": 0.1, "ci_low": 0.05, "ci_high": 0.15}
    row = {
        "experiment": "e",
        "system": "hf-lora",
        "learning_rate": 1e-3,
        "lora_r": 16,
        "augmented": True,
        "step": 10,
        "epoch": 1.0,
        "dev_key_fact_recall": ci,
        "dev_mc_acc": ci,
        "train_loss": 2.5,
        "train_wall_s": 100.0,
        "train_tokens_per_s": 500.0,
        "peak_rss_mib": 4000.0,
        "command": "musicprod bench recipe x",
    }
    old = dict(row, experiment="old")  # written before the column existed
    (tmp_path / "sweep.jsonl").write_text(
        json.dumps(dict(row, dev_answer_words=61.9, dev_recall_first_words=0.024)) + "\n" + json.dumps(old) + "\n",
        encoding="utf-8",
    )
    recipe.write_sweep_table()
    lines = (tmp_path / "sweep.md").read_text().splitlines()
    header = [c.strip() for c in lines[4].split("|")]
    words = header.index("answer words")
    assert [c.strip() for c in lines[6].split("|")][words] == "61.9"
    assert [c.strip() for c in lines[7].split("|")][words] == "-"
    first = header.index("recall, first 30 words")
    assert [c.strip() for c in lines[6].split("|")][first] == "0.024"
    assert [c.strip() for c in lines[7].split("|")][first] == "-"
    assert [c.strip() for c in lines[6].split("|")][header.index("dev key-fact recall")] == "0.100 [0.050, 0.150]"
