"""The data validator: key-fact regexes, language tags, duplicates and held-out decontamination."""

import json

import pytest

from harness.data import check as dc
from harness.data.load import DatasetError
from tests.conftest import REPO

TRAIN = [
    {
        "id": "a",
        "lang": "en",
        "topic": "mastering",
        "subtopic": "loudness",
        "difficulty": "beginner",
        "source_type": "concept",
        "instruction": "What loudness does Spotify normalise to by default?",
        "response": "Spotify plays tracks back at about -14 LUFS integrated by default, turning louder masters down. "
        "Pushing the limiter harder therefore does not make a track louder on the platform; it only costs "
        "dynamics and adds distortion. Leave around -1 dBTP true-peak headroom for the lossy encode.",
    },
    {
        "id": "b",
        "lang": "de",
        "topic": "mixing",
        "subtopic": "compression",
        "difficulty": "intermediate",
        "source_type": "forum Q&A",
        "instruction": "Wie stelle ich die Attack bei einem Kompressor für Drums ein?",
        "response": "Für knackige Drums setzt du die Attack eher langsam, etwa 10 bis 30 ms, damit der Transient durchkommt, "
        "bevor der Kompressor greift. Eine sehr kurze Attack unter 1 ms schneidet den Anschlag ab und "
        "macht die Snare flach. Die Release stellst du so ein, dass die Gain Reduction vor dem nächsten Schlag zurückgeht.",
    },
]
QA = [
    {
        "id": "q1",
        "lang": "en",
        "topic": "mastering",
        "difficulty": "beginner",
        "question": "My master is at -8 LUFS, will it sound louder than others on Spotify?",
        "reference": "No. Spotify turns it down to about -14 LUFS, so it plays at the same level as quieter masters "
        "but with less punch.",
        "key_facts": [
            {"fact": "-14 LUFS", "any_of": [r"-14\s*LUFS"]},
            {"fact": "turned down", "any_of": [r"turn\w* (it )?down"]},
        ],
    },
    {
        "id": "q2",
        "lang": "en",
        "topic": "mixing",
        "difficulty": "beginner",
        "question": "Why does my snare lose its crack when I compress it?",
        "reference": "The attack is too fast: under about 1 ms the compressor clamps the transient. Slow it to 10-30 ms.",
        "key_facts": [
            {"fact": "attack too fast", "any_of": [r"attack"]},
            {"fact": "10-30 ms", "any_of": [r"10\s*-\s*30\s*ms"]},
        ],
    },
]


def test_key_fact_coverage_catches_loose_and_missing_regexes(tmp_path):
    problems = dc.check_heldout(tmp_path / "qa.json", QA, tmp_path / "mc.json", [])
    assert not any("q1" in p for p in problems)
    loose = [
        dict(QA[0], key_facts=[{"fact": "any", "any_of": [r"\bthe\b"]}]),
        QA[1],
        dict(QA[1], id="q3", key_facts=[{"fact": "x", "any_of": [r"\bthe\b"]}]),
    ]
    assert any(
        "id='q2'" not in p and "other items' references match" in p
        for p in dc.check_heldout(tmp_path / "qa.json", loose, tmp_path / "mc.json", [])
    )
    missing = [dict(QA[0], key_facts=[{"fact": "-16 LUFS", "any_of": [r"-16\s*LUFS"]}])]
    assert any("own reference matches only 0%" in p for p in dc.check_heldout("qa.json", missing, "mc.json", []))


def test_language_tag_must_match_text():
    wrong = [dict(TRAIN[1], lang="en")]
    assert any("reads as 'de'" in p for p in dc.check_training("t.json", wrong))
    assert dc.check_training("t.json", TRAIN) == []


def test_thirteen_gram_and_semantic_contamination_are_found():
    copied = {
        "id": "leak",
        "lang": "en",
        "topic": "mastering",
        "question": "Is it true that pushing the limiter harder therefore does not make a track louder on the platform?",
        "choices": ["a", "b", "c", "d"],
        "answer": 0,
    }
    paraphrase = {
        "id": "para",
        "lang": "en",
        "topic": "mastering",
        "question": "What loudness does Spotify normalize to by default?",
        "choices": ["a", "b", "c", "d"],
        "answer": 1,
    }
    leaks = dc.contamination(TRAIN, [("mc", copied), ("mc", paraphrase), ("qa", QA[1])], semantic=True)
    assert any("leak" in p and "13-gram" in p and "training item a" in p for p in leaks)
    assert any("para" in p and "cosine" in p for p in leaks)
    assert not any("q2" in p for p in leaks)


def test_mc_schema_errors_name_the_field(tmp_path):
    path = tmp_path / "mc.json"
    path.write_text(
        json.dumps(
            [{"id": "m", "lang": "en", "topic": "mixing", "question": "?", "choices": ["a", "b", "c"], "answer": 0}]
        )
    )
    with pytest.raises(DatasetError, match=r"record 0 \(id='m'\): field 'choices'"):
        dc.load_mc(path)
    path.write_text(
        json.dumps(
            [
                {
                    "id": "m",
                    "lang": "en",
                    "topic": "mixing",
                    "question": "?",
                    "choices": ["a", "b", "c", "d"],
                    "answer": 4,
                }
            ]
        )
    )
    with pytest.raises(DatasetError, match="field 'answer'"):
        dc.load_mc(path)


def _mc_item(i: int, choices: list[str], answer: int) -> dict:
    return {"id": f"m{i}", "lang": "en", "topic": "mixing", "question": "?", "choices": choices, "answer": answer}


def test_mc_length_tell_is_flagged(tmp_path):
    # correct option strictly longest in 8 of 20 items (40 %): flagged; in 5 of 20 (25 %): passes
    telling = [_mc_item(i, ["a much longer right answer", "short", "brief", "tiny"], 0) for i in range(8)] + [
        _mc_item(i, ["same", "size", "here", "yes!"], i % 4) for i in range(8, 20)
    ]
    problems = dc.mc_length_tells(tmp_path / "mc.json", telling)
    assert len(problems) == 1 and "strictly the longest in 40% of items" in problems[0]
    fair = telling[3:]
    assert dc.mc_length_shares(fair)["longest"] == pytest.approx(5 / 17)
    assert dc.mc_length_tells(tmp_path / "mc.json", fair) == []
    shortest = [_mc_item(i, ["x", "much longer", "longer one", "also longer"], 0) for i in range(4)]
    assert "strictly the shortest in 100% of items" in dc.mc_length_tells(tmp_path / "mc.json", shortest)[0]


def test_shipped_data_passes_the_validator():
    """The landed training set, its augmentations, the dev set and the held-out benchmark: valid, and neither the
    held-out nor the dev set is contaminated."""
    code = dc.run_check(
        str(REPO / "data/music_production_dataset.json"),
        str(REPO / "benchmarks/musicprod/data"),
        augmented_path=str(REPO / "data/music_production_augmented.json"),
        dev_dir=str(REPO / "benchmarks/musicprod/data/dev"),
    )
    assert code == 0


def _augmentation(**change):
    row = {
        "id": "a-a1",
        "lang": "en",
        "topic": "mastering",
        "style": "question",
        "augmented_from": "a",
        "instruction": "How loud does Spotify play my track back?",
        "response": "Spotify normalises playback to about -14 LUFS integrated, so a louder master is simply turned down.",
    }
    return {**row, **change}


@pytest.mark.parametrize(
    "change, expected",
    [
        ({"augmented_from": "zz"}, "'augmented_from' = 'zz' is not a training item id"),
        ({"topic": "mixing"}, "field 'topic' = 'mixing' differs from its seed item"),
        ({"style": "poem"}, "field 'style' = 'poem'"),
        ({"response": "Yes."}, "field 'response' has 1 words"),
        ({"lang": "de"}, "but the text reads as 'en'"),
        ({"instruction": TRAIN[0]["instruction"]}, "exactly duplicates seed item a"),
    ],
)
def test_augmentations_are_checked_against_their_seed(change, expected):
    problems = dc.check_augmented("aug.json", [_augmentation(**change)], TRAIN)
    assert any(expected in p and "record 0 (id='a-a1')" in p for p in problems), problems
    assert dc.check_augmented("aug.json", [_augmentation()], TRAIN) == []


def test_every_overlapping_training_item_is_found_for_a_merge_to_drop():
    """contamination() reports the first hit per held-out item; a merge needs every training id that overlaps."""
    copy = dict(TRAIN[0], id="a2")  # a second training item with the same text as "a"
    leak = {
        "id": "leak",
        "lang": "en",
        "topic": "mastering",
        "choices": ["a", "b", "c", "d"],
        "answer": 0,
        "question": "Is it true that pushing the limiter harder therefore does not make a track louder on the platform?",
    }
    assert dc.contaminating_ids(TRAIN + [copy], [("mc", leak)], semantic=False) == {"a", "a2"}
    option_leak = dict(
        leak,
        question="Which is true?",
        choices=["pushing the limiter harder therefore does not make a track louder on the platform", "b", "c", "d"],
    )
    assert dc.contaminating_ids(TRAIN, [("mc", option_leak)], semantic=False) == {"a"}  # MC options count too


def test_dev_items_that_overlap_the_held_out_are_contamination(tmp_path, capsys):
    bench, dev = tmp_path / "bench", tmp_path / "dev"
    bench.mkdir(), dev.mkdir()
    train = tmp_path / "train.json"
    train.write_text(json.dumps(json.loads((REPO / "data/music_production_dataset.json").read_text())[:40]))
    held = json.loads((REPO / "benchmarks/musicprod/data/qa.json").read_text())[:6]
    (bench / "qa.json").write_text(json.dumps(held))
    (bench / "mc.json").write_text("[]")
    (dev / "qa.json").write_text(json.dumps([dict(held[0], id="dev-1")]))  # a held-out question reused on dev
    (dev / "mc.json").write_text("[]")
    code = dc.run_check(str(train), str(bench), semantic=False, dev_dir=str(dev))
    assert code == 1
    assert (
        f"contamination: dev qa dev-1: shares a 13-gram with training item {held[0]['id']}" in capsys.readouterr().out
    )
