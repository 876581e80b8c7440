"""Report and champion rule on fixture experiments: content, HTML validity, champion.json, CLI."""

from __future__ import annotations

import json
import re
import sys
from html.parser import HTMLParser

import html5lib
import pytest

from reports import build_report, choose_champion
from reports.champion import decide
from reports.load import ReportError, load_experiment
from reports.plots import pareto_front
from tests import report_fixtures as fx


class _Collector(HTMLParser):
    """Tags with attributes and the visible text of a document (stdlib parser: no dependency to assert with)."""

    def __init__(self):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)


def parse(html: str) -> _Collector:
    c = _Collector()
    c.feed(html)
    return c


def text_of(html: str) -> str:
    body = html.split("<body>", 1)[1]
    return re.sub(r"\s+", " ", " ".join(parse(body).text))


def assert_valid_html(html: str, citation_links: bool = False) -> None:
    """html5lib in strict mode raises on the first parse error of the HTML5 parsing algorithm. With
    citation_links, <a href> to the web is allowed (a cited source), still no external resource is loaded."""
    html5lib.HTMLParser(strict=True, namespaceHTMLElements=False).parse(html)
    doc = parse(html)
    imgs = [a for t, a in doc.tags if t == "img"]
    assert imgs and all(a.get("alt", "").strip() for a in imgs), "every plot needs alt text"
    assert all(a["src"].startswith("data:image/svg+xml;base64,") for a in imgs), "plots must be inline"
    keys = ("src",) if citation_links else ("src", "href")
    external = [
        a
        for t, a in doc.tags
        for k in keys
        if re.match(r"(https?:)?//", a.get(k) or "") and not (citation_links and t == "a")
    ]
    assert not external, f"report must open offline, found external references {external}"
    ids = {a["id"] for _, a in doc.tags if "id" in a}
    anchors = [a["href"][1:] for t, a in doc.tags if t == "a" and (a.get("href") or "").startswith("#")]
    assert anchors and set(anchors) <= ids, f"table-of-contents links without a target: {set(anchors) - ids}"


@pytest.fixture
def full(tmp_path):
    return fx.full_experiment(tmp_path)  # uses harness.ratings: a broken import must fail here, not skip


@pytest.fixture
def plain(tmp_path):
    return fx.plain_experiment(tmp_path)


def test_full_report_content(full, tmp_path):
    champion = choose_champion(full)
    index = build_report(full, tmp_path / "out")
    assert index == tmp_path / "out" / "full" / "index.html"
    html = index.read_text(encoding="utf-8")
    assert_valid_html(html)
    text = text_of(html)

    assert champion["system"] == "hf-lora"
    assert "Champion" in text and "hf-lora" in text and "served as is" not in text
    # systems table: measured figures with units, GPU record shown with VRAM
    for figure in ("154.0 tokens/s", "263.1 tokens/s", "8.51 GiB RSS", "5.20 GiB VRAM", "12.4 min", "4,884,480"):
        assert figure in text, figure
    # quality with CIs: the champion's key-fact recall, from eval/summary.json
    kfr = json.loads((full / "eval" / "summary.json").read_text())["targets"]["hf-lora"]["metrics"]["qa"][
        "key_fact_recall"
    ]
    assert f"{kfr['mean'] * 100:.1f} %" in text
    assert f"95 % CI {kfr['ci_low'] * 100:.1f}–{kfr['ci_high'] * 100:.1f} %, n = 24" in text
    # paired comparisons: hf-lora beats base on key-fact recall, hf-qlora is worse than hf-lora
    assert re.search(
        r"hf-lora base key-fact recall \+[\d.]+ pp 95 % CI \+[\d.]+ to \+[\d.]+ pp [\d.e-]+ [\d.e-]+ 24 better", text
    )
    assert re.search(r"hf-lora hf-qlora key-fact recall \+[\d.]+ pp .{0,60}better", text)
    # judge reliability and human agreement
    assert "reliable" in text and "95.0 % of 40 sanity cases" in text and "ρ = +0.62" in text
    assert "Krippendorff's α, ordinal (correctness)" in text and "raters" in text
    # side by side: base, champion and reference answers of the same question
    assert "[base answer" in text and "[hf-lora answer" in text and "Reference " in text
    # skipped system with its reason; GPU section names the GPU
    assert "unsloth is not installed (pip install -e '.[gpu]' on a CUDA machine)" in text
    assert "NVIDIA H100 80GB HBM3" in text and "6.00 GiB" in text
    # plots: one per requested view, with alt text that carries the numbers
    alts = {a["id"] if "id" in a else "": a for _, a in parse(html).tags}
    for fig in (
        "fig-loss",
        "fig-throughput",
        "fig-memory",
        "fig-quality",
        "fig-topic",
        "fig-lang",
        "fig-pareto",
        "fig-forest",
    ):
        assert fig in alts, fig
    assert "Pareto front" in text
    summary = json.loads((index.parent / "summary.json").read_text())
    assert summary["champion"]["system"] == "hf-lora"
    assert summary["systems"]["unsloth-lora"]["status"] == "skipped"
    assert "hf-lora" in summary["pareto_front"]["training wall time (min)"]
    md = (index.parent / "summary.md").read_text()
    assert "## Champion: hf-lora" in md and "| hf-qlora | ok |" in md


def test_plain_report_without_judge_or_humans(plain, tmp_path):
    html = build_report(plain, tmp_path / "out").read_text(encoding="utf-8")
    assert_valid_html(html)
    text = text_of(html)
    assert "No LLM-judge results for this experiment" in text
    assert "No human ratings for this experiment yet" in text
    assert "unsloth-qlora" in text and "unsloth needs CUDA; this machine has none" in text
    assert "No run of this experiment used a GPU" in text
    assert "always the longest option 50.0 %" in text  # fixture: every second MC item
    assert "Judge " not in text  # no judge section heading for a judge that does not exist


def test_report_before_evaluation_says_so(tmp_path):
    exp = tmp_path / "noeval"
    fx.run_record(exp, "hf-lora")
    fx.run_record(exp, "unsloth-lora", "skipped", "needs CUDA")
    html = build_report(exp, tmp_path / "out").read_text(encoding="utf-8")
    assert_valid_html(html)
    text = text_of(html)
    assert "No held-out evaluation results for this experiment yet" in text
    assert "the champion is the base model" in text
    assert decide(load_experiment(exp))["system"] == "base"


def test_limited_eval_is_flagged(tmp_path):
    exp = tmp_path / "smoke"
    fx.run_record(exp, "hf-lora")
    fx.write_eval(exp, {"base": ([0.0, 1 / 3], [0, 1]), "hf-lora": ([1 / 3, 1 / 3], [1, 1])}, limit=2)
    text = text_of(build_report(exp, tmp_path / "out").read_text(encoding="utf-8"))
    assert "evaluated on only the first 2 items per task" in text


def test_champion_json_is_written_with_rule_and_scores(plain):
    champion = choose_champion(plain)
    saved = json.loads((plain / "champion.json").read_text())
    assert saved == champion
    assert saved["system"] == "hf-lora" and saved["adapter_path"] == f"{plain}/hf-lora/adapter"
    assert (
        saved["base_model"] == "smollm2-135m-instruct" and saved["base_model_path"] == "/models/smollm2-135m-instruct"
    )
    assert saved["scores"]["key_fact_recall"]["ci_low"] > saved["vs_base"]["key_fact_recall"]["ci_low"] > 0
    assert {"mean", "ci_low", "ci_high", "n"} <= set(saved["scores"]["mc_acc"])
    assert "beats the base model" in saved["rule"] and saved["created_at"]
    assert not list(plain.glob(".champion.json.*")), "no temp files left behind"


def test_champion_is_base_when_no_system_beats_it(tmp_path):
    exp = tmp_path / "flat"
    fx.run_record(exp, "hf-lora")
    same = fx.cycle([0, 1 / 3, 2 / 3, 1 / 3])
    fx.write_eval(exp, {"base": (same, fx.cycle([0, 1])), "hf-lora": (list(reversed(same)), fx.cycle([1, 0]))})
    champion = choose_champion(exp)
    assert champion["system"] == "base" and champion["adapter_path"] is None
    assert champion["decisions"]["hf-lora"].startswith("does not beat base")


def test_better_recall_but_significantly_worse_mc_does_not_qualify(tmp_path):
    exp = tmp_path / "tradeoff"
    fx.run_record(exp, "hf-lora")
    fx.write_eval(exp, {"base": (fx.cycle([0]), fx.cycle([1])), "hf-lora": (fx.cycle([2 / 3]), fx.cycle([0]))})
    champion = decide(load_experiment(exp))
    assert champion["system"] == "base"
    assert "mc acc: worse than base" in champion["decisions"]["hf-lora"]


def _tied_pair(tmp_path, judge: bool | None):
    """Two systems that both beat base and are indistinguishable from each other; hf-qlora is cheaper."""
    exp = tmp_path / f"tie-{judge}"
    fx.run_record(exp, "hf-lora", train_wall_s=700.0)
    fx.run_record(exp, "hf-qlora", train_wall_s=400.0)
    fx.write_eval(
        exp,
        {
            "base": (fx.cycle([0]), fx.cycle([0, 1])),
            "hf-lora": (fx.cycle([1, 1 / 3, 2 / 3, 2 / 3]), fx.cycle([1, 1])),
            "hf-qlora": (fx.cycle([2 / 3, 2 / 3, 1, 1 / 3]), fx.cycle([1, 1])),
        },
    )
    if judge is not None:
        fx.write_judge(exp, "j", judge, {"base": 1.5, "hf-lora": 4.0, "hf-qlora": 3.0})
    return decide(load_experiment(exp))


def test_tie_goes_to_the_cheaper_system_without_a_reliable_judge(tmp_path):
    champion = _tied_pair(tmp_path, judge=False)
    assert champion["system"] == "hf-qlora" and set(champion["tied"]) == {"hf-lora", "hf-qlora"}
    assert champion["judge_used"] is None


def test_tie_goes_to_the_reliable_judges_choice(tmp_path):
    champion = _tied_pair(tmp_path, judge=True)
    assert champion["system"] == "hf-lora" and champion["judge_used"] == "j"
    assert champion["scores"]["judge_correctness"]["mean"] == 4.0


def test_pareto_front():
    pts = [("base", 0, 10), ("a", 5, 40), ("b", 8, 35), ("c", 8, 40), ("d", 12, 55)]
    assert pareto_front(pts) == ["base", "a", "d"]


def test_missing_ratings_module_is_a_note_not_a_crash(plain, tmp_path, monkeypatch):
    (plain / "ratings.sqlite").write_bytes(b"")
    monkeypatch.setitem(sys.modules, "harness.ratings", None)  # makes `import harness.ratings` raise ImportError
    text = text_of(build_report(plain, tmp_path / "out").read_text(encoding="utf-8"))
    assert "harness.ratings is not installed" in text


def test_malformed_eval_summary_names_the_file(plain, tmp_path):
    (plain / "eval" / "summary.json").write_text('{"targets": {"base": {"metrics": {"qa": {"rougeL": 0.3}}}}}')
    with pytest.raises(ReportError, match=r"summary.json: targets.base.metrics.qa.rougeL must be"):
        build_report(plain, tmp_path / "out")
    (plain / "eval" / "summary.json").write_text('{"targets": ')
    with pytest.raises(ReportError, match=r"summary.json: invalid JSON at line 1"):
        build_report(plain, tmp_path / "out")


def test_cli_report_writes_champion_and_report(plain, tmp_path, capsys):
    from harness.cli import main

    assert main(["report", str(plain), "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "champion: hf-lora" in out
    assert (tmp_path / "out" / "plain" / "index.html").exists() and (plain / "champion.json").exists()
    assert main(["report", str(tmp_path / "nope"), "--out", str(tmp_path / "out")]) == 2
    assert "no such folder" in capsys.readouterr().err


def test_breakdown_tables_carry_cis(plain, tmp_path):
    text = text_of(build_report(plain, tmp_path / "out").read_text(encoding="utf-8"))
    summary = json.loads((plain / "eval" / "summary.json").read_text())
    de = summary["targets"]["hf-lora"]["by_lang"]["qa"]["de"]["key_fact_recall"]
    assert "QA key-fact recall (%) by language, with 95 % CIs" in text
    assert (
        f"{de['mean'] * 100:.1f} % 95 % CI {de['ci_low'] * 100:.1f}–{de['ci_high'] * 100:.1f} %, n = {de['n']}" in text
    )


def test_paired_rows_carry_benjamini_hochberg_q(tmp_path):
    """q by hand for p = .01, .03, .04, .5 (m = 4): .04, .0533, .0533, .5; rows without a p get none."""
    from reports.build import paired_rows
    from reports.load import Experiment

    def row(metric, task, p):
        return {
            "task": task,
            "metric": metric,
            "a": "hf-lora",
            "b": "base",
            "delta": 0.01,
            "ci_low": 0.001,
            "ci_high": 0.02,
            "p_value": p,
            "n": 50,
        }

    paired = [
        row("key_fact_recall", "qa", 0.01),
        row("acc", "mc", 0.04),
        row("rougeL", "qa", 0.03),
        row("chrf", "qa", 0.5),
        row("bleu", "qa", None),
    ]
    exp = Experiment(dir=tmp_path, name="x", records={}, stages=None, eval={"paired": paired}, judges={}, human=None)
    q = {r["metric"]: r["q"] for r in paired_rows(exp)}
    assert q == {"key-fact recall": "0.04", "MC accuracy": "0.0533", "ROUGE-L": "0.0533", "chrF": "0.5", "BLEU": "–"}
