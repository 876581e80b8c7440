"""End to end in real Chromium (Debian `chromium` + `chromium-driver`, driven by Selenium): rate three items with
keyboard and mouse, then check the stored rows; two raters in two tabs of one browser. Each rater opens their
personal link (?token=...), as printed by `musicprod rate --raters`. Screenshots go to the pytest tmp dir and are
kept in $MUSICPROD_SCREENSHOT_DIR (default reports/out/screenshots/) for a person to look at."""

from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path

import pytest

from harness.ratings import RatingStore
from tests.ratings_helpers import TARGETS, make_experiment

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
SCREENSHOTS = Path(
    os.environ.get(
        "MUSICPROD_SCREENSHOT_DIR", Path(__file__).resolve().parent.parent / "reports" / "out" / "screenshots"
    )
)

pytestmark = pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER),
    reason="needs Debian's chromium and chromium-driver (apt-get install -y chromium chromium-driver)",
)


@pytest.fixture
def served(tmp_path):
    """(experiment, {rater: personal link})."""
    from werkzeug.serving import make_server

    from server.rating import create_rating_app

    experiment = make_experiment(tmp_path, n=4)
    store = RatingStore.for_experiment(experiment)
    server = make_server("127.0.0.1", 0, create_rating_app(experiment), threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_port}/rate/"
    yield experiment, {name: f"{base}?token={store.issue_token(name)}" for name in ("Tess", "Pia", "Uwe")}
    server.shutdown()


@pytest.fixture
def browser():
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is in the dev extra")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--lang=en-US",
        "--window-size=1280,1400",
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.implicitly_wait(0)
    yield driver
    driver.quit()


def _wait_text(driver, element_id: str, text: str, timeout: float = 10):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, timeout).until(
        lambda d: text in d.find_element(By.ID, element_id).text, f"#{element_id} never showed {text!r}"
    )


def _keys(driver, keys: str):
    from selenium.webdriver.common.action_chains import ActionChains

    ActionChains(driver).send_keys(keys).perform()


def _save_screenshot(driver, tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    driver.save_screenshot(str(path))
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    shutil.copy(path, SCREENSHOTS / name)
    return path


def test_rate_three_items_in_chromium(served, browser, tmp_path):
    from selenium.webdriver.common.by import By

    experiment, links = served
    store = RatingStore.for_experiment(experiment)
    order = store.single_queue("Tess")
    questions = {a["blind_id"]: a["question"] for a in store.current_answers()}
    references = {a["blind_id"]: a["reference"] for a in store.current_answers()}
    browser.get(links["Tess"])
    assert "Tess" in browser.find_element(By.ID, "rating-as").text
    browser.find_element(By.ID, "start").click()
    _wait_text(browser, "progress-text", "0 of 12 rated")
    assert browser.find_element(By.ID, "question").text == questions[order[0]]

    # item 1: keyboard only (1-5 score the highlighted scale and move on; n saves and goes to the next item)
    _keys(browser, "453n")
    _wait_text(browser, "progress-text", "1 of 12 rated")
    _wait_text(browser, "status", "Previous rating saved.")
    assert not browser.find_element(By.ID, "pair-choice").is_displayed()  # single mode shows no A/B buttons
    assert browser.find_element(By.ID, "question").text == questions[order[1]]

    # item 2: mouse, with the reference shown and a comment
    assert not browser.find_element(By.ID, "reference").is_displayed()
    browser.find_element(By.ID, "toggle-ref").click()
    assert browser.find_element(By.ID, "reference").text == references[order[1]]
    for dim, score in (("correctness", 2), ("relevance", 3), ("helpfulness", 1)):
        browser.find_element(By.CSS_SELECTOR, f"label:has(#{dim}-{score})").click()
    browser.find_element(By.ID, "comment").send_keys("too vague")
    _save_screenshot(browser, tmp_path, "rating.png")  # a filled-in item, for people to look at
    browser.find_element(By.ID, "save").click()
    _wait_text(browser, "progress-text", "2 of 12 rated")

    # item 3: skip it, come back to it with "p", rate it with keys and Enter
    _keys(browser, "s")
    _wait_text(browser, "question", questions[order[3]])
    _keys(browser, "p")
    _wait_text(browser, "question", questions[order[2]])
    _keys(browser, "555")
    _keys(browser, "\n")
    _wait_text(browser, "progress-text", "3 of 12 rated")

    page = browser.find_element(By.TAG_NAME, "body").text
    assert not any(t in page for t in TARGETS), "the page reveals a system name"
    rows = {r["blind_id"]: r for r in store.ratings("Tess")}
    assert {uid: (r["correctness"], r["relevance"], r["helpfulness"], r["comment"]) for uid, r in rows.items()} == {
        order[0]: (4, 5, 3, ""),
        order[1]: (2, 3, 1, "too vague"),
        order[2]: (5, 5, 5, ""),
    }

    # German UI, narrow window: the rubric is translated and the levels stack into one column
    from selenium.webdriver.support.ui import Select

    Select(browser.find_element(By.ID, "ui-lang")).select_by_value("de")
    _wait_text(browser, "progress-text", "3 von 12 bewertet")
    assert "Korrektheit" in browser.find_element(By.ID, "scales").text
    browser.set_window_size(420, 1400)
    levels = browser.find_elements(By.CSS_SELECTOR, "#scale-correctness .level")
    assert len({round(el.location["x"]) for el in levels}) == 1  # one column
    assert browser.execute_script("return document.documentElement.scrollWidth <= window.innerWidth")
    _save_screenshot(browser, tmp_path, "rating_narrow_de.png")


def test_pairwise_choice_in_chromium(served, browser, tmp_path):
    from selenium.webdriver.common.by import By

    experiment, links = served
    store = RatingStore.for_experiment(experiment)
    browser.get(links["Pia"])
    browser.find_element(By.CSS_SELECTOR, "input[name=mode][value=pairwise]").click()
    browser.find_element(By.ID, "start").click()
    _wait_text(browser, "progress-text", "0 of 12 rated")
    shown_a = browser.find_element(By.ID, "answer").text
    _keys(browser, "b")
    _wait_text(browser, "progress-text", "1 of 12 rated")
    browser.find_element(By.ID, "choose-tie").click()
    _wait_text(browser, "progress-text", "2 of 12 rated")
    _save_screenshot(browser, tmp_path, "rating_pairwise.png")
    rows = store.pairwise("Pia")
    assert [r["choice"] for r in rows] == ["b", "tie"]
    assert store.answer(rows[0]["uid_a"])["answer"] == shown_a


def test_two_raters_in_two_tabs_keep_their_own_ratings(served, browser):
    """Pia and Uwe in two tabs of one browser (shared localStorage and cookies): each save lands under the
    tab's own rater, and Uwe's tab, asking for Pia's item, gets no rating of Pia's."""
    from selenium.webdriver.common.by import By

    experiment, links = served
    store = RatingStore.for_experiment(experiment)
    tabs = {}
    for name in ("Pia", "Uwe"):
        browser.switch_to.new_window("tab")
        tabs[name] = browser.current_window_handle
        browser.get(links[name])
        browser.find_element(By.ID, "start").click()
        _wait_text(browser, "progress-text", "0 of 12 rated")
    for name, keys in (("Pia", "121n"), ("Uwe", "545n")):
        browser.switch_to.window(tabs[name])
        _keys(browser, keys)
        _wait_text(browser, "progress-text", "1 of 12 rated")
    pia_item, uwe_item = store.single_queue("Pia")[0], store.single_queue("Uwe")[0]
    assert [(r["rater"], r["blind_id"], r["correctness"], r["relevance"]) for r in store.ratings()] == [
        ("Pia", pia_item, 1, 2),
        ("Uwe", uwe_item, 5, 4),
    ]
    browser.switch_to.window(tabs["Uwe"])
    seen = browser.execute_async_script(
        """
        const done = arguments[arguments.length - 1];
        const token = new URLSearchParams(location.search).get("token");
        fetch("api/item/" + arguments[0], {headers: {Authorization: "Bearer " + token}})
          .then((r) => r.json()).then(done);""",
        pia_item,
    )
    assert seen["rating"] is None if pia_item != uwe_item else seen["rating"]["correctness"] == 5
    browser.switch_to.window(tabs["Pia"])
    browser.refresh()
    browser.find_element(By.ID, "start").click()
    _wait_text(browser, "progress-text", "1 of 12 rated")  # Uwe's save did not count for Pia
