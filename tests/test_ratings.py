"""Human ratings: store durability and concurrency, CSV, blind API, statistics, alpha, the musicprod_human task."""

from __future__ import annotations

import csv
import json
import math
import multiprocessing
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from harness import OFFLINE_ENV
from harness.layout import ratings_db_path
from harness.ratings import (
    DIMENSIONS,
    RatingError,
    RatingStore,
    answer_uid,
    export_csv,
    export_template,
    generation_files,
    import_csv,
    krippendorff_alpha,
    rater_order,
    summarize,
    sync_queue,
)
from tests.ratings_helpers import TARGETS, make_experiment, write_generations

REPO = Path(__file__).resolve().parent.parent
NAN = math.nan

# Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability", section C: 4 observers x 12 units, values 1-5,
# missing data. Published: nominal .743, ordinal .815, interval .849.
KRIPPENDORFF_2011 = [
    [1, 2, 3, 3, 2, 1, 4, 1, 2, NAN, NAN, NAN],
    [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, NAN, 3],
    [NAN, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, NAN],
    [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, NAN],
]


@pytest.fixture
def experiment(tmp_path) -> Path:
    return make_experiment(tmp_path)


@pytest.fixture
def store(experiment) -> RatingStore:
    store = RatingStore.for_experiment(experiment)
    sync_queue(experiment, store)
    return store


def _uids_by(store: RatingStore) -> dict[tuple[str, str], str]:
    return {(a["target"], a["item_id"]): a["uid"] for a in store.current_answers()}


def _rate(store, rater, uid, c, r=None, h=None, comment=""):
    return store.save_rating(rater, uid, {"correctness": c, "relevance": r or c, "helpfulness": h or c}, comment)


# ------------------------------------------------------------------------------------------------- alpha


def test_alpha_matches_krippendorffs_published_reliability_data_example():
    import krippendorff

    assert krippendorff_alpha(KRIPPENDORFF_2011) == pytest.approx(0.815, abs=5e-4)
    # the same data at the other levels, to show the matrix is the published one (raters x units)
    assert krippendorff.alpha(reliability_data=KRIPPENDORFF_2011, level_of_measurement="nominal") == pytest.approx(
        0.743, abs=5e-4
    )
    assert krippendorff.alpha(reliability_data=KRIPPENDORFF_2011, level_of_measurement="interval") == pytest.approx(
        0.849, abs=5e-4
    )


def test_alpha_matches_krippendorffs_binary_two_observer_example():
    # Krippendorff (2011), section A: 2 observers, 10 units, binary; published nominal alpha = 0.095.
    import krippendorff

    data = [[0, 1, 0, 0, 0, 0, 0, 0, 1, 0], [1, 1, 1, 0, 0, 1, 0, 0, 0, 0]]
    assert krippendorff.alpha(reliability_data=data, level_of_measurement="nominal") == pytest.approx(0.095, abs=5e-4)


def test_summary_alpha_from_stored_ratings_reproduces_the_published_example(tmp_path):
    """The same reliability data entered as ratings must give 0.815: checks how summarize() builds the matrix."""
    experiment = make_experiment(tmp_path, n=12, targets=("hf-lora",))
    store = RatingStore.for_experiment(experiment)
    sync_queue(experiment, store)
    uids = _uids_by(store)
    for r, row in enumerate(KRIPPENDORFF_2011):
        for unit, value in enumerate(row):
            if not math.isnan(value):
                _rate(store, f"observer-{'ABCD'[r]}", uids[("hf-lora", f"qa-{unit:03d}")], int(value))
    summary = summarize(experiment, resamples=200)
    for d in DIMENSIONS:
        assert summary["alpha"][d] == pytest.approx(0.815, abs=5e-4)
    assert summary["coverage"]["rated_items"] == 12 and summary["coverage"]["ratings"] == 41
    assert summary["coverage"]["items_rated_twice"] == 11


def test_alpha_is_none_without_overlap_or_variation():
    assert krippendorff_alpha([[1, 2, NAN], [NAN, NAN, 4]]) is None  # no unit rated twice
    assert krippendorff_alpha([[3, 3], [3, 3]]) is None  # no variation: expected disagreement 0
    assert krippendorff_alpha([[1, 2, 3]]) is None  # one rater


# ------------------------------------------------------------------------------------------------- queue


def test_order_is_random_per_rater_reproducible_and_shares_blocks():
    keys = [f"k{i}" for i in range(70)]
    alice, alice2, bob = rater_order(keys, "alice"), rater_order(keys, "alice"), rater_order(keys, "bob")
    assert alice == alice2 and sorted(alice) == sorted(keys)
    assert alice != bob
    # block 1 is the same set for everybody (overlap for agreement), in a different order
    assert set(alice[:30]) == set(bob[:30]) and alice[:30] != bob[:30]


def test_regenerated_answers_replace_the_current_ones_and_old_ratings_go_stale(experiment, store):
    old = _uids_by(store)[("hf-lora", "qa-000")]
    _rate(store, "alice", old, 5)
    write_generations(experiment, "hf-lora", 6, version=2)
    sync_queue(experiment, store)
    new = _uids_by(store)[("hf-lora", "qa-000")]
    assert new != old and len(store.current_answers()) == 6 * len(TARGETS)
    queue = store.single_queue("alice")
    assert store.answer(new)["blind_id"] in queue and store.answer(old)["blind_id"] not in queue
    summary = summarize(experiment, resamples=200)
    assert summary["coverage"]["stale_ratings"] == 1 and "hf-lora" not in summary["targets"]


def test_bad_generations_file_names_file_line_and_field(tmp_path):
    experiment = make_experiment(tmp_path, n=2)
    path = experiment / "eval" / "base" / "generations.jsonl"
    path.write_text(path.read_text() + json.dumps({"id": "x", "question": "q?"}) + "\n")
    with pytest.raises(RatingError, match=r"generations.jsonl:3: field 'answer'"):
        sync_queue(experiment)


# ------------------------------------------------------------------------------------------------- store


def test_store_is_wal_and_a_second_rating_by_the_same_rater_replaces_the_first(experiment, store):
    uid = _uids_by(store)[("base", "qa-001")]
    _rate(store, "alice", uid, 2, comment="first")
    _rate(store, "alice", uid, 4, 5, 3, comment="changed my mind")
    _rate(store, "bob", uid, 1)
    rows = {r["rater"]: r for r in store.ratings()}
    assert len(store.ratings()) == 2
    assert (rows["alice"]["correctness"], rows["alice"]["relevance"], rows["alice"]["helpfulness"]) == (4, 5, 3)
    assert rows["alice"]["comment"] == "changed my mind" and rows["alice"]["target"] == "base"
    with sqlite3.connect(ratings_db_path(experiment)) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


@pytest.mark.parametrize(
    "scores, match",
    [
        ({"correctness": 6, "relevance": 3, "helpfulness": 3}, "correctness"),
        ({"correctness": 3, "relevance": 3}, "helpfulness"),
        ({"correctness": 3, "relevance": True, "helpfulness": 3}, "relevance"),
    ],
)
def test_invalid_scores_are_rejected_and_nothing_is_stored(store, scores, match):
    uid = store.current_answers()[0]["uid"]
    with pytest.raises(RatingError, match=match):
        store.save_rating("alice", uid, scores)
    assert store.ratings() == []


def test_unknown_answer_and_bad_rater_are_rejected(store):
    with pytest.raises(RatingError, match="unknown answer"):
        _rate(store, "alice", "0000000000000000", 3)
    with pytest.raises(RatingError, match="rater name"):
        _rate(store, "  ", store.current_answers()[0]["uid"], 3)


def _write_many(db_path: str, rater: str, uids: list[str]) -> None:
    store = RatingStore(db_path)
    for i, uid in enumerate(uids):
        store.save_rating(rater, uid, {d: 1 + (i % 5) for d in DIMENSIONS})


def test_several_raters_writing_at_once_from_separate_processes(experiment, store):
    uids = [a["uid"] for a in store.current_answers()]
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_write_many, args=(str(store.path), f"rater{i}", uids)) for i in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
        assert p.exitcode == 0
    assert len(store.ratings()) == 4 * len(uids)


# --------------------------------------------------------------------------------- durability (real process)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _http(url: str, token: str, body: dict | None = None) -> tuple[int, dict]:
    req = urllib.request.Request(
        url,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as res:
            return res.status, json.loads(res.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_a_confirmed_rating_survives_killing_the_server_right_after(experiment):
    """`musicprod rate --raters dora` prints dora's link; ratings sent with its token survive a SIGKILL."""
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "harness.cli", "rate", str(experiment), "--port", str(port), "--raters", "dora"],
        cwd=REPO,
        env={**os.environ, **OFFLINE_ENV},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        link = None
        for line in proc.stdout:  # the links come after the listening line, before any request is served
            link = link or re.search(r"dora: (http://\S+/rate/)\?token=(\S+)", line)
            if "admin view" in line:
                break
        assert link, "no link printed for dora"
        base, token = link.group(1) + "api", link.group(2)
        status, queue = _http(f"{base}/queue", token)
        assert status == 200
        uids = queue["order"][:3]
        for i, uid in enumerate(uids):
            status, reply = _http(
                f"{base}/rate",
                token,
                {"uid": uid, "correctness": i + 1, "relevance": 5, "helpfulness": 4, "comment": f"c{i}"},
            )
            assert status == 200 and reply["saved"] is True
        proc.send_signal(signal.SIGKILL)  # right after the last confirmation: no shutdown, no checkpoint
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL
    rows = RatingStore(ratings_db_path(experiment)).ratings("dora")
    assert [(r["blind_id"], r["correctness"], r["comment"]) for r in rows] == [
        (uid, i + 1, f"c{i}") for i, uid in enumerate(uids)
    ]


def test_rate_without_raters_refuses_to_serve(experiment):
    """Nobody could open the UI: say so instead of serving (the old UI served anyone who typed a name)."""
    proc = subprocess.run(
        [sys.executable, "-m", "harness.cli", "rate", str(experiment), "--port", str(_free_port())],
        cwd=REPO,
        env={**os.environ, **OFFLINE_ENV},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and "--raters" in proc.stderr


# ------------------------------------------------------------------------------------------------- web API

ADMIN = "admin-secret"


@pytest.fixture
def app(experiment):
    from server.rating import create_rating_app

    return create_rating_app(experiment, admin_token=ADMIN)


@pytest.fixture
def tokens(experiment) -> dict[str, str]:
    store = RatingStore.for_experiment(experiment)
    return {name: store.issue_token(name) for name in ("alice", "bob")}


class Rater:
    """A test client that sends one rater's token, as the page does."""

    def __init__(self, app, token: str):
        self.client, self.headers = app.test_client(), {"Authorization": f"Bearer {token}"}

    def get(self, path, **kw):
        return self.client.get(path, headers=self.headers, **kw)

    def post(self, path, **kw):
        return self.client.post(path, headers=self.headers, **kw)


@pytest.fixture
def alice(app, tokens) -> Rater:
    return Rater(app, tokens["alice"])


@pytest.fixture
def bob(app, tokens) -> Rater:
    return Rater(app, tokens["bob"])


def test_api_is_blind_and_rates_in_the_raters_order(alice, experiment):
    queue = alice.get("/rate/api/queue").get_json()
    store = RatingStore.for_experiment(experiment)
    assert queue["order"] == store.single_queue("alice") and queue["total"] == 18 and queue["done"] == []
    responses = [
        alice.get("/rate/api/queue"),
        alice.get(f"/rate/api/item/{queue['order'][0]}"),
        alice.get("/rate/api/queue?mode=pairwise"),
        alice.get("/rate/"),
    ]
    pair = responses[2].get_json()["order"][0]
    responses.append(alice.get(f"/rate/api/pair/{pair}"))
    internal = {a["uid"] for a in store.current_answers()}  # computable from the answer text: never shown
    for res in responses:
        assert res.status_code == 200
        body = res.get_data(as_text=True)
        for secret in (*TARGETS, *internal):
            assert secret not in body, f"{res.request.path} reveals {secret!r}"
    reply = alice.post(
        "/rate/api/rate",
        json={"uid": queue["order"][0], "correctness": 3, "relevance": 4, "helpfulness": 2, "comment": "ok"},
    )
    assert reply.status_code == 200 and reply.get_json()["saved"] is True
    assert alice.get("/rate/api/queue").get_json()["done"] == [queue["order"][0]]
    item = alice.get(f"/rate/api/item/{queue['order'][0]}").get_json()
    assert item["rating"] == {"correctness": 3, "relevance": 4, "helpfulness": 2, "comment": "ok"}
    bad = alice.post(
        "/rate/api/rate", json={"uid": queue["order"][1], "correctness": 0, "relevance": 4, "helpfulness": 2}
    )
    assert bad.status_code == 400 and "correctness" in bad.get_json()["error"]
    assert len(store.ratings()) == 1


def test_blind_ids_are_random_not_a_function_of_the_answer(tmp_path):
    """The same generations queued in two stores: every id the browser sees differs (the old uid was a hash of
    target, item and answer text, so a rater could compute which system wrote an answer)."""
    first, second = make_experiment(tmp_path / "a"), make_experiment(tmp_path / "b")
    stores = [RatingStore.for_experiment(e) for e in (first, second)]
    for experiment, store in zip((first, second), stores):
        sync_queue(experiment, store)
    computable = {answer_uid(a["target"], a["item_id"], a["answer"]) for a in stores[0].current_answers()}
    blind = [set(store.single_queue("alice")) for store in stores]
    pairs = [set(store.pairs()) for store in stores]
    assert not blind[0] & blind[1] and not pairs[0] & pairs[1]
    assert not blind[0] & computable and not pairs[0] & computable
    assert len(blind[0]) == 18 and len(pairs[0]) == 18


def test_a_store_from_before_blind_ids_gets_them_and_keeps_its_ratings(experiment, store):
    uid = _uids_by(store)[("base", "qa-000")]
    _rate(store, "alice", uid, 4, comment="kept")
    with sqlite3.connect(store.path) as conn:  # the schema as it was: no blind_id column
        conn.execute("DROP INDEX answers_blind")
        conn.execute("ALTER TABLE answers DROP COLUMN blind_id")
    reopened = RatingStore(store.path)
    blind = reopened.answer(uid)["blind_id"]
    assert blind and len(set(reopened.single_queue("alice"))) == 18
    assert [(r["blind_id"], r["comment"]) for r in reopened.ratings("alice")] == [(blind, "kept")]


def test_every_route_needs_a_rater_token(app, tokens):
    client = app.test_client()
    urls = [
        re.sub(r"<(?:\w+:)?(\w+)>", "x", rule.rule)
        for rule in app.url_map.iter_rules()
        if rule.rule.startswith("/rate") and rule.endpoint != "rating.admin"
    ]
    assert {
        "/rate/",
        "/rate/static/x",
        "/rate/api/queue",
        "/rate/api/item/x",
        "/rate/api/rate",
        "/rate/api/pair/x",
        "/rate/api/compare",
    } <= set(urls)
    for url in urls:
        for headers in ({}, {"Authorization": "Bearer not-a-token"}, {"Authorization": "Basic YWxpY2U6"}):
            for method in ("GET", "POST"):
                r = client.open(url + "?rater=alice", method=method, headers=headers, json={"rater": "alice"})
                assert r.status_code in (401, 405), (method, url, headers, r.status_code)
    with_token = [
        app.test_client().get(f"/rate/static/rating.js?token={tokens['alice']}"),
        app.test_client().get(f"/rate/?token={tokens['bob']}"),
    ]
    assert [r.status_code for r in with_token] == [200, 200]
    assert '"rater": "bob"' in with_token[1].get_data(as_text=True)  # the page's config: who rates here


def test_raters_neither_see_nor_change_each_others_ratings(alice, bob, experiment):
    uid = alice.get("/rate/api/queue").get_json()["order"][0]
    assert (
        alice.post(
            "/rate/api/rate",
            json={"uid": uid, "correctness": 5, "relevance": 5, "helpfulness": 5, "comment": "alice's"},
        ).status_code
        == 200
    )
    assert bob.get(f"/rate/api/item/{uid}").get_json()["rating"] is None
    assert bob.get("/rate/api/queue").get_json()["done"] == []
    # bob claims to be alice in every way the old API accepted: the token decides
    r = bob.post(
        "/rate/api/rate?rater=alice",
        json={"rater": "alice", "uid": uid, "correctness": 1, "relevance": 1, "helpfulness": 1, "comment": "bob's"},
    )
    assert r.status_code == 200
    assert alice.get(f"/rate/api/item/{uid}?rater=bob").get_json()["rating"]["comment"] == "alice's"
    assert bob.get(f"/rate/api/item/{uid}?rater=alice").get_json()["rating"]["comment"] == "bob's"
    store = RatingStore.for_experiment(experiment)
    assert sorted((r["rater"], r["comment"]) for r in store.ratings()) == [("alice", "alice's"), ("bob", "bob's")]


def test_a_reissued_token_replaces_the_old_link(experiment, app, tokens):
    store = RatingStore.for_experiment(experiment)
    assert store.issue_token("alice") is None  # has a link: not silently replaced
    new = store.issue_token("alice", reissue=True)
    assert Rater(app, tokens["alice"]).get("/rate/api/queue").status_code == 401
    assert Rater(app, new).get("/rate/api/queue").status_code == 200
    stored = b"".join(f.read_bytes() for f in experiment.glob("ratings.sqlite*"))
    assert tokens["bob"].encode() not in stored  # only hashes are stored


def test_admin_view_only_on_loopback_with_the_admin_token(app, tokens, alice):
    alice.post(
        "/rate/api/rate",
        json={
            "uid": alice.get("/rate/api/queue").get_json()["order"][0],
            "correctness": 4,
            "relevance": 4,
            "helpfulness": 4,
        },
    )
    client = app.test_client()
    ok = client.get(f"/rate/admin?token={ADMIN}", environ_base={"REMOTE_ADDR": "127.0.0.1"})
    assert ok.status_code == 200 and "Krippendorff alpha" in ok.get_data(as_text=True)
    assert "alice: 1 ratings" in ok.get_data(as_text=True)
    denied = [
        client.get(f"/rate/admin?token={ADMIN}", environ_base={"REMOTE_ADDR": "192.168.1.20"}),
        client.get(f"/rate/admin?token={tokens['alice']}", environ_base={"REMOTE_ADDR": "127.0.0.1"}),
        client.get("/rate/admin", environ_base={"REMOTE_ADDR": "127.0.0.1"}),
    ]
    assert [r.status_code for r in denied] == [403, 403, 403]
    assert not any(t in r.get_data(as_text=True) for r in denied for t in TARGETS)


def test_pairwise_sides_are_randomised_and_stored_as_shown(alice, experiment):
    store = RatingStore.for_experiment(experiment)
    pairs = store.pairs()
    assert len(pairs) == 6 * 3  # 6 items x 3 target pairs
    sides = {pid: [store.pair_sides(f"r{i}", pid)[0] for i in range(8)] for pid in pairs}
    assert any(len(set(s)) == 2 for s in sides.values())  # the same pair shows either answer as A
    pid = alice.get("/rate/api/queue?mode=pairwise").get_json()["order"][0]
    shown = alice.get(f"/rate/api/pair/{pid}").get_json()
    assert alice.post("/rate/api/compare", json={"pair": pid, "choice": "a"}).status_code == 200
    row = store.pairwise("alice")[0]
    assert store.answer(row["uid_a"])["answer"] == shown["answer_a"] and row["choice"] == "a"
    again = alice.get(f"/rate/api/pair/{pid}").get_json()
    assert again["judgement"]["choice"] == "a"


def test_hidden_eval_folders_are_not_targets(experiment, alice):
    """harness.io.atomic_dir's work in progress (.<target>.tmp-*, half written) and a crash's leftover
    (.<target>.old-*) next to the real folders: neither is queued, and the queue keeps working."""
    eval_root = experiment / "eval"
    (eval_root / ".hf-lora.tmp-x1y2").mkdir()
    (eval_root / ".hf-lora.tmp-x1y2" / "generations.jsonl").write_text('{"id": "qa-000", "question": "half')
    (eval_root / ".base.old-4242").mkdir()
    (eval_root / ".base.old-4242" / "generations.jsonl").write_text(
        (eval_root / "base" / "generations.jsonl").read_text()
    )
    assert sorted(generation_files(experiment)) == sorted(TARGETS)
    r = alice.get("/rate/api/queue")
    assert r.status_code == 200 and r.get_json()["total"] == 18
    # a real target's file being rewritten (or broken) is logged; the queue is served as it was
    (eval_root / "hf-lora" / "generations.jsonl").write_text('{"id": "qa-000", "quest')
    r = alice.get("/rate/api/queue")
    assert r.status_code == 200 and r.get_json()["total"] == 18


def test_rating_app_limits_bodies_sets_headers_and_answers_errors_in_json(alice, app, experiment):
    page = alice.get("/rate/")
    for res in (page, alice.get("/rate/api/queue"), app.test_client().get("/rate/api/queue")):
        assert res.headers["X-Content-Type-Options"] == "nosniff"
        assert res.headers["X-Frame-Options"] == "DENY"
        assert "frame-ancestors 'none'" in res.headers["Content-Security-Policy"]
        assert res.headers["Referrer-Policy"] == "no-referrer"
    uid = alice.get("/rate/api/queue").get_json()["order"][0]
    big = alice.post(
        "/rate/api/rate",
        json={"uid": uid, "correctness": 3, "relevance": 3, "helpfulness": 3, "comment": "x" * (128 << 10)},
    )
    assert big.status_code == 413 and "larger than" in big.get_json()["error"]
    surrogate = alice.post(
        "/rate/api/rate",
        data='{"uid": "%s", "correctness": 3, "relevance": 3, "helpfulness": 3, "comment": "\\ud800"}' % uid,
        content_type="application/json",
    )
    assert surrogate.status_code == 400 and "comment" in surrogate.get_json()["error"]
    plain = alice.post(
        "/rate/api/rate",
        data=json.dumps({"uid": uid, "correctness": 3, "relevance": 3, "helpfulness": 3}),
        content_type="text/plain",
    )
    assert plain.status_code == 400 and "application/json" in plain.get_json()["error"]
    db = ratings_db_path(experiment)
    db.write_bytes(b"this is not a database" * 100)  # a real failure inside a route: SQLite cannot open it
    for suffix in ("-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    broken = alice.get("/rate/api/queue")
    assert broken.status_code == 500 and broken.is_json
    assert str(experiment) not in broken.get_data(as_text=True) and "sqlite" not in broken.get_data(as_text=True)


def test_rating_app_refuses_foreign_host_headers(experiment, tokens):
    from server.rating import create_rating_app
    from server.security import allowed_hosts

    client = create_rating_app(experiment, allowed=allowed_hosts("127.0.0.1")).test_client()
    headers = {"Authorization": f"Bearer {tokens['alice']}"}
    assert client.get("/rate/api/queue", headers={**headers, "Host": "attacker.example:8765"}).status_code == 400
    assert client.get("/rate/api/queue", headers={**headers, "Host": "localhost:8765"}).status_code == 200


# ------------------------------------------------------------------------------------------------- CSV


def test_csv_round_trip_into_a_fresh_store(tmp_path, experiment, store):
    uids = _uids_by(store)
    _rate(store, "alice", uids[("base", "qa-000")], 2, 3, 4, comment='says "maybe", unsure; ok')
    _rate(store, "bob", uids[("hf-lora", "qa-001")], 5)
    pid = next(iter(store.pairs()))
    a, b = store.pair_sides("alice", pid)
    store.save_pairwise("alice", a, b, "tie", "same")
    export_csv(store, tmp_path / "single.csv")
    export_csv(store, tmp_path / "pairs.csv", kind="pairwise")

    other = make_experiment(tmp_path / "copy")
    fresh = RatingStore.for_experiment(other)
    sync_queue(other, fresh)
    assert import_csv(fresh, tmp_path / "single.csv") == {"kind": "single", "imported": 2, "skipped_empty": 0}
    assert import_csv(fresh, tmp_path / "pairs.csv")["imported"] == 1
    keep = ("rater", "uid", "target", "item_id", *DIMENSIONS, "comment", "created_at")
    assert [{k: r[k] for k in keep} for r in fresh.ratings()] == [{k: r[k] for k in keep} for r in store.ratings()]
    assert all(r["source"] == "csv" for r in fresh.ratings())
    assert [(p["uid_a"], p["uid_b"], p["choice"]) for p in fresh.pairwise()] == [(a, b, "tie")]


def test_spreadsheet_csv_with_semicolons_bom_and_target_item_columns(tmp_path, store):
    sheet = tmp_path / "sheet.csv"
    sheet.write_bytes(
        "\ufeffrater;target;item_id;correctness;relevance;helpfulness;comment\n"
        "Jana;hf-qlora;qa-002;4;4;5;gut\nJana;base;qa-002;;;;\n".encode("utf-8")
    )
    assert import_csv(store, sheet) == {"kind": "single", "imported": 1, "skipped_empty": 1}
    row = store.ratings("Jana")[0]
    assert (row["target"], row["item_id"], row["helpfulness"], row["comment"]) == ("hf-qlora", "qa-002", 5, "gut")


def test_a_bad_csv_row_aborts_the_whole_import_naming_the_line(tmp_path, store):
    sheet = tmp_path / "bad.csv"
    sheet.write_text(
        "rater,target,item_id,correctness,relevance,helpfulness\nJana,base,qa-000,3,3,3\nJana,base,qa-001,3,9,3\n"
    )
    with pytest.raises(RatingError, match=r"bad.csv:3: field 'relevance'"):
        import_csv(store, sheet)
    assert store.ratings() == []
    sheet.write_text("rater,target,item_id,correctness,relevance,helpfulness\nJana,nosuch,qa-000,3,3,3\n")
    with pytest.raises(RatingError, match=r"bad.csv:2: no queued answer for target 'nosuch'"):
        import_csv(store, sheet)


def test_blind_template_has_no_target_and_imports_back(tmp_path, store):
    path = tmp_path / "template.csv"
    assert export_template(store, path, "Kai") == 18
    text = path.read_text()
    internal = [a["uid"] for a in store.current_answers()]  # computable from the answer text
    assert "target" not in text.splitlines()[0] and not any(t in text for t in (*TARGETS, *internal))
    lines = text.splitlines()
    header = lines[0].split(",")
    rows = list(csv.DictReader(path.open()))
    rows[0].update(correctness="2", relevance="3", helpfulness="4")
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=header)
        writer.writeheader()
        writer.writerows(rows)
    assert import_csv(store, path) == {"kind": "single", "imported": 1, "skipped_empty": 17}
    assert store.ratings("Kai")[0]["blind_id"] == rows[0]["answer_id"] == store.single_queue("Kai")[0]


def test_cells_a_spreadsheet_would_run_are_defused_and_import_back(tmp_path, experiment):
    """Exports open in spreadsheets (the documented workflow): a cell starting with = + - @ must be text there."""
    path = experiment / "eval" / "hf-lora" / "generations.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    rows[0]["answer"] = "-3 dB on the bus; =SUM(A1) is not a formula here"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    store = RatingStore.for_experiment(experiment)
    sync_queue(experiment, store)
    uids = _uids_by(store)
    comments = ['=HYPERLINK("http://evil.example","click")', "+1 agree", "@SUM(1+1)", "'=quoted already", "plain"]
    for i, comment in enumerate(comments):
        _rate(store, "alice", uids[("base", f"qa-{i:03d}")], 3, comment=comment)
    export_csv(store, tmp_path / "ratings.csv")
    export_template(store, tmp_path / "sheet.csv", "alice")
    for sheet in ("ratings.csv", "sheet.csv"):
        cells = [c for row in csv.reader((tmp_path / sheet).open()) for c in row]
        assert not [c for c in cells if c[:1] in ("=", "+", "-", "@")], sheet
    sheet_cells = [c for row in csv.reader((tmp_path / "sheet.csv").open()) for c in row]
    assert "'-3 dB on the bus; =SUM(A1) is not a formula here" in sheet_cells
    fresh_dir = make_experiment(tmp_path / "copy")
    fresh = RatingStore.for_experiment(fresh_dir)
    sync_queue(fresh_dir, fresh)
    import_csv(fresh, tmp_path / "ratings.csv")
    assert sorted(r["comment"] for r in fresh.ratings()) == sorted(comments)  # exactly what was typed


# ------------------------------------------------------------------------------------------------- summary


def test_summarize_means_cis_coverage_pairwise_and_judge_spearman(experiment, store):
    assert summarize(experiment) is None  # queue but no ratings yet
    uids = _uids_by(store)
    # hf-lora: item i gets (i+1) from alice and (i+2 capped) from bob -> per-answer means
    expected = []
    for i in range(5):
        a, b = min(i + 1, 5), min(i + 2, 5)
        _rate(store, "alice", uids[("hf-lora", f"qa-{i:03d}")], a)
        _rate(store, "bob", uids[("hf-lora", f"qa-{i:03d}")], b)
        expected.append((a + b) / 2)
    _rate(store, "alice", uids[("base", "qa-000")], 1)
    for rater, choice in (("alice", "a"), ("bob", "a"), ("cem", "tie")):
        pid = next(
            p
            for p, (u1, u2) in store.pairs().items()
            if {u1, u2} == {uids[("base", "qa-003")], uids[("hf-lora", "qa-003")]}
        )
        a, b = store.pair_sides(rater, pid)
        # choose hf-lora whatever side it is shown on (or a tie)
        pick = "tie" if choice == "tie" else ("a" if a == uids[("hf-lora", "qa-003")] else "b")
        store.save_pairwise(rater, a, b, pick)
    judge = experiment / "judge" / "tiny-judge"
    judge.mkdir(parents=True)
    with open(judge / "scores.jsonl", "w") as f:
        for i in range(5):  # monotone in the human means -> rho = 1
            f.write(
                json.dumps(
                    {
                        "target": "hf-lora",
                        "id": f"qa-{i:03d}",
                        "correctness": i,
                        "relevance": 3,
                        "helpfulness": i,
                        "reasons": "x",
                    }
                )
                + "\n"
            )

    s = summarize(experiment, resamples=2000)
    lora = s["targets"]["hf-lora"]["correctness"]
    assert lora["mean"] == pytest.approx(sum(expected) / len(expected)) and lora["n"] == 5
    assert lora["ci_low"] < lora["mean"] < lora["ci_high"]
    assert s["targets"]["base"]["correctness"]["n"] == 1 and "hf-qlora" not in s["targets"]
    assert s["coverage"] == {
        **s["coverage"],
        "items": 18,
        "rated_items": 6,
        "ratings": 11,
        "raters": 2,
        "items_rated_twice": 5,
        "questions": 6,
    }
    assert s["coverage"]["ratings_per_item"] == pytest.approx(11 / 6, abs=1e-3)
    assert s["coverage"]["by_target"]["hf-lora"] == {"items": 6, "rated_items": 5, "ratings": 10}
    assert s["alpha"]["correctness"] is not None and 0 < s["alpha"]["correctness"] < 1
    assert s["judge"] == "tiny-judge"
    assert s["judge_spearman"]["correctness"]["rho"] == pytest.approx(1.0)
    assert s["judge_spearman"]["correctness"]["n"] == 5
    assert s["judge_spearman"]["relevance"]["rho"] is None  # a constant judge score has no rank correlation
    assert s["pairwise"] == [{"a": "hf-lora", "b": "base", "wins": 2, "ties": 1, "losses": 0, "n": 3}]


def test_cli_rate_stats_json_and_export(tmp_path, experiment, store, capsys):
    from harness.cli import main

    _rate(store, "alice", store.current_answers()[0]["uid"], 4)
    assert main(["rate", str(experiment), "--stats", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["coverage"]["ratings"] == 1 and set(out) >= {"targets", "alpha", "coverage", "judge_spearman"}
    assert main(["rate", str(experiment), "--export", str(tmp_path / "r.csv")]) == 0
    assert "alice" in (tmp_path / "r.csv").read_text()
    (tmp_path / "bad.csv").write_text("rater,correctness\n")
    assert main(["rate", str(experiment), "--import", str(tmp_path / "bad.csv")]) == 2


# ------------------------------------------------------------------------------------- lm-eval musicprod_human


def test_musicprod_human_task_queues_generations_then_reports_human_scores(tmp_path, tiny_model_dir):
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager
    from transformers import AutoModelForCausalLM, AutoTokenizer

    experiment = tmp_path / "exp"
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    lm = HFLM(pretrained=model, tokenizer=AutoTokenizer.from_pretrained(tiny_model_dir), batch_size=3)

    def run():
        tm = TaskManager(
            include_path=str(REPO / "benchmarks"),
            include_defaults=False,
            metadata={"experiment_dir": str(experiment), "target": "tiny"},
        )
        out = simple_evaluate(
            model=lm,
            tasks=["musicprod_human"],
            task_manager=tm,
            limit=3,
            bootstrap_iters=0,
            apply_chat_template=True,
            gen_kwargs={"max_gen_toks": 8},
        )
        return out["results"]["musicprod_human"]

    first = run()
    assert first["human_correctness,none"] == "not yet rated (0 of 3)"
    assert first["human_rated,none"] == "0 of 3"
    store = RatingStore.for_experiment(experiment)
    queued = store.current_answers()
    assert len(queued) == 3 and {a["target"] for a in queued} == {"tiny"} and queued[0]["source"] == "lm-eval"

    _rate(store, "alice", queued[0]["uid"], 4, 5, 2)
    assert run()["human_correctness,none"] == "not yet rated (1 of 3)"
    _rate(store, "alice", queued[1]["uid"], 2, 3, 2)
    _rate(store, "bob", queued[1]["uid"], 4, 3, 2)
    _rate(store, "alice", queued[2]["uid"], 5, 1, 2)
    done = run()
    assert done["human_rated,none"] == "3 of 3"
    assert done["human_correctness,none"] == pytest.approx((4 + 3 + 5) / 3)
    assert done["human_relevance,none"] == pytest.approx((5 + 3 + 1) / 3)
    assert done["human_helpfulness,none"] == pytest.approx(2.0)
