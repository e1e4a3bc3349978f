"""The web UI in a real browser: Debian's headless Chromium driven by selenium against a real bitharbord process
(every registered service, TMDB and the Internet Archive as local fakes). Log in, add a wanted film, watch files
dropped in a watch folder go through ingest on the status page, search, open an item and play it, see
the storage page (the sandbox box's disks, no pools, the true conditions highlighted) and why the catalog
chose its copy.

One PNG per page is saved to $BITHARBOR_ARTIFACTS (default tests/artifacts/web-ui/). The browser and the helpers
are tests/web_support.py's; the storage page over a real pool on loop devices is tests/test_web_ui_storage.py."""

from __future__ import annotations

import shutil
import sqlite3
import time
from collections.abc import Iterator
from typing import Any

import pytest
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import Select

from bitharbord.store import db
from tests.api_support import ALICE_PASSWORD, Live, start_live
from tests.media import make_jpeg, make_video
from tests.web_support import browser, call, el, no_js_errors, shot, wait_for  # noqa: F401 (a fixture)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    box = start_live(tmp_path_factory.mktemp("webui"), rows=False)
    yield box
    box.stop()


def api(live: Live, method: str, path: str, body: Any = None) -> Any:
    return call(live.url, method, path, body)


# ----------------------------------------------------------------------------- the walk through


def test_login(live: Live, browser: WebDriver) -> None:  # noqa: F811
    browser.get(f"{live.url}/")
    form = el(browser, "#login-form")
    assert "BitHarbor" in form.text
    shot(browser, "01-login")
    el(browser, "#name").send_keys("alice")
    el(browser, "#password").send_keys("not the password")
    el(browser, "#login-submit").click()
    alert = el(browser, "#login-form .error")
    assert alert.text == "Wrong name or password."
    assert browser.execute_script("return sessionStorage.getItem('bitharbor.token')") is None
    el(browser, "#name").clear()
    el(browser, "#name").send_keys("alice")
    el(browser, "#password").send_keys(ALICE_PASSWORD)
    el(browser, "#login-submit").click()
    el(browser, "#search-form")
    assert browser.current_url.endswith("#/search")
    assert el(browser, "#who").text == "alice"
    no_js_errors(browser)


def test_catalog_search_and_add_to_wanted(live: Live, browser: WebDriver) -> None:  # noqa: F811
    browser.get(f"{live.url}/#/catalog")
    el(browser, "#catalog-q").send_keys("Nosferatu")
    el(browser, "#catalog-year").send_keys("1922")
    el(browser, "#catalog-form button[type=submit]").click()
    film = wait_for("a film", lambda: [f for f in browser.find_elements(By.CSS_SELECTOR, "#catalog-results .film")
                                       if "Nosferatu" in f.text])[0]
    assert "1922" in film.text
    button = film.find_element(By.CSS_SELECTOR, "button.add-wanted")
    button.click()
    wait_for("the entry to be added", lambda: button.text.startswith(("Added", "Already wanted")))
    # Added by its TMDB id (653): labelled "tmdb 653" until the catalog service has looked it up.
    row = wait_for("the wanted list", lambda: [r for r in browser.find_elements(By.CSS_SELECTOR, "#wanted tbody tr")
                                              if "653" in r.text or "Nosferatu" in r.text])
    assert row[0].find_elements(By.CSS_SELECTOR, ".badge")
    entries = api(live, "GET", "/v1/catalog")["entries"]
    assert [e["key"] for e in entries] == ["tmdb:653"]
    shot(browser, "05-catalog")
    no_js_errors(browser)


def test_status_shows_ingest_progress(live: Live, browser: WebDriver) -> None:  # noqa: F811
    inbox = live.harbord.state / "root" / "box" / "inbox"
    inbox.mkdir(parents=True, exist_ok=True)
    staging = live.tmp / "staging"
    files = [make_jpeg(staging / f"boat-{i}.jpg", size=(320, 240), color=c)
             for i, c in enumerate([(200, 40, 40), (40, 160, 60), (40, 80, 200)])]
    files.append(make_video(staging / "harbour.mp4", seconds=2.0, size=(320, 240)))
    for f in files:  # moved in whole, like a person dropping files
        shutil.move(f, inbox / f.name)
    browser.get(f"{live.url}/#/status")
    el(browser, "#status-ingest")
    for sid in ("status-box", "status-storage", "status-index", "status-wanted"):
        el(browser, f"#{sid}")

    def ingest() -> dict[str, Any]:
        # Read in one go: the page re-renders every 2 s, so element handles go stale.
        state: dict[str, Any] = browser.execute_script("""
            const s = document.querySelector('#status-ingest');
            if (!s) return {};
            const out = {text: s.textContent};
            for (const st of s.querySelectorAll('.stat'))
                out[st.querySelector('.muted').textContent] = st.querySelector('.big').textContent;
            const bar = s.querySelector('#ingest-progress progress');
            out.value = bar ? bar.value : null;
            out.progress = (s.querySelector('#ingest-progress') || {}).textContent || '';
            return out;""")
        return state

    seen: list[str] = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        state = ingest()
        seen.append(state.get("progress", ""))
        if str(state.get("done", "")).isdigit() and int(state["done"]) >= len(files):
            break
        time.sleep(0.1)
    state = ingest()
    assert "Ingest queue" in state["text"]
    assert int(state["done"]) >= len(files), state
    assert state["value"] == 1 and state["progress"] == "queue empty", state
    print("ingest progress seen:", sorted(set(seen)))
    wait_for("the wanted film, looked up", lambda: "Nosferatu" in browser.execute_script(
        "return (document.querySelector('#status-wanted') || {}).textContent || ''"))
    shot(browser, "03-status")
    no_js_errors(browser)


def test_search_with_thumbnails_type_filter_and_scores(live: Live, browser: WebDriver) -> None:  # noqa: F811
    browser.get(f"{live.url}/#/search")
    cards = wait_for("cards", lambda: [c for c in browser.find_elements(By.CSS_SELECTOR, "#results .card")] or None)
    assert len(cards) >= 4

    def thumbs_loaded() -> int:
        return int(browser.execute_script(
            "return [...document.querySelectorAll('#results .card img')]"
            ".filter(i => i.complete && i.naturalWidth > 0).length"))

    wait_for("thumbnails", lambda: thumbs_loaded() >= 4)
    Select(el(browser, "#type")).select_by_value("movie")
    el(browser, "#search-form button[type=submit]").click()
    wait_for("the movie filter", lambda: "movie" in browser.current_url and el(browser, "#results .resultinfo"))
    assert all("movie" in c.text for c in browser.find_elements(By.CSS_SELECTOR, "#results .card"))
    Select(el(browser, "#type")).select_by_value("personal")
    el(browser, "#search-form button[type=submit]").click()
    wait_for("personal items", lambda: "type=personal" in browser.current_url
             and len(browser.find_elements(By.CSS_SELECTOR, "#results .card")) >= 4)
    doc = api(live, "GET", "/v1/openapi.json")
    if "/v1/search" in doc["paths"]:
        box = el(browser, "#q")
        box.clear()
        box.send_keys("a boat on the water")

        def scored() -> list[WebElement]:
            el(browser, "#search-form button[type=submit]").click()  # again: the items may still be embedding
            time.sleep(1.0)
            return browser.find_elements(By.CSS_SELECTOR, "#results .card .score")

        scores = wait_for("scored results", scored, timeout=180)
        assert all(s.text.startswith("score ") for s in scores)
        assert browser.find_elements(By.CSS_SELECTOR, "#results .card .scorebar span")
    else:
        el(browser, "#q").send_keys("boat")
        el(browser, "#search-form button[type=submit]").click()
        assert "not available" in el(browser, "#results .notice").text
        browser.get(f"{live.url}/#/search?type=personal")
        wait_for("cards", lambda: browser.find_elements(By.CSS_SELECTOR, "#results .card img"))
        wait_for("thumbnails", lambda: thumbs_loaded() >= 4)
    shot(browser, "02-search")
    no_js_errors(browser)


def test_item_page_plays_the_video(live: Live, browser: WebDriver) -> None:  # noqa: F811
    items = api(live, "GET", "/v1/media?kind=video")["items"]
    assert items, "the dropped video was ingested"
    browser.get(f"{live.url}/#/search?type=personal")
    card = wait_for("the video's card", lambda: browser.find_elements(
        By.CSS_SELECTOR, f"#results .card[data-id='{items[0]['id']}']"))[0]
    card.click()
    el(browser, "#item-title")
    video = el(browser, "video#player")
    assert (video.get_attribute("src") or "").endswith(f"/v1/media/{items[0]['id']}/content")
    duration = wait_for("the video's metadata", lambda: browser.execute_script(
        "const v = document.querySelector('video#player'); return v.readyState >= 1 ? v.duration : null"))
    assert 1.5 <= float(duration) <= 2.5
    browser.execute_script("const v = document.querySelector('video#player'); v.muted = true; v.currentTime = 1.0")
    wait_for("seeking (an HTTP Range request)", lambda: browser.execute_script(
        "const v = document.querySelector('video#player'); return !v.seeking && v.currentTime >= 0.9"))
    page = el(browser, "main").text
    assert "On the box" in page and "Found at" in page and str(live.harbord.state) in page
    shot(browser, "04-item")
    no_js_errors(browser)


# ----------------------------------------------------------------------------- storage, and why this copy


def status_condition(live: Live, kind: str) -> dict[str, Any] | None:
    return next((c for c in api(live, "GET", "/v1/status")["conditions"] if c["type"] == kind), None)


def test_storage_page_shows_the_sandbox_box_as_it_is(live: Live, browser: WebDriver) -> None:  # noqa: F811
    # a file ingest cannot read: IngestFailing becomes true, a problem the storage page must not hide
    inbox = live.harbord.state / "root" / "box" / "inbox"
    (inbox / "corrupt.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    wait_for("IngestFailing", lambda: (status_condition(live, "IngestFailing") or {}).get("status"), timeout=120)
    devices = api(live, "GET", "/v1/devices")
    storage = api(live, "GET", "/v1/status")["services"]["storage"]
    assert storage["pools"] == []  # the test's harbor.yaml declares no pool (a loop-free sandbox can make none)

    browser.get(f"{live.url}/#/search")
    el(browser, "#search-form")
    nav = el(browser, "header nav a[data-nav=storage]")
    assert nav.text == "Storage"
    nav.click()
    el(browser, "#storage-disks")
    assert browser.current_url.endswith("#/storage") and "active" in (nav.get_attribute("class") or "")
    page = wait_for("the storage page", lambda: browser.execute_script("""
        const text = id => (document.getElementById(id) || {}).textContent || null;
        return document.getElementById('storage-mounts') && {
            conditions: text('storage-conditions'), pools: text('storage-pools'), disks: text('storage-disks'),
            arrays: text('storage-arrays'), mounts: text('storage-mounts'), sandbox: text('storage-sandbox'),
            noPools: text('storage-no-pools'), noConditions: text('storage-no-conditions'),
            problems: [...document.querySelectorAll('#storage-conditions .condition.bad')].map(
                c => ({type: c.dataset.type, text: c.textContent, color: getComputedStyle(c).backgroundColor})),
            rows: [...document.querySelectorAll('#storage-disks tbody tr')].map(
                r => [...r.querySelectorAll('td')].map(td => td.textContent)),
        };"""))
    # what is missing is said plainly
    assert page["noPools"] and "No storage pools are declared in harbor.yaml" in page["noPools"]
    assert "media_root is not on a storage pool" in page["pools"]
    assert page["noConditions"] and "no pool declared" in page["noConditions"]
    assert page["sandbox"] and str(live.harbord.state) in page["sandbox"]
    if devices["md_driver"] is False:
        assert "md RAID driver is not loaded" in page["arrays"]
    # every device /v1/devices lists is a row: path, by-id (or that there is none), size, verdict and its reason
    assert len(page["rows"]) == len(devices["devices"]) >= 1
    for dev, row in zip(devices["devices"], page["rows"], strict=True):
        assert row[0].startswith(dev["path"])
        by_id = [i for i in dev["ids"] if "/by-id/" in i]
        assert all(i.replace("/dev/disk/", "") in row[1] for i in by_id) if by_id else (
            "no /dev/disk/by-id name" in row[1])
        assert row[2].startswith("0 B" if not dev["size"] else tuple("123456789"))  # human: "256 GB"
        assert dev["verdict"]["state"] in row[4] and dev["verdict"]["reason"] in row[4]
        if dev["root"]:
            assert "system disk (/)" in row[0]
        for mount in dev["mountpoints"]:
            assert mount in page["mounts"]
    # true problems, whatever status reports, are highlighted; false conditions are not
    true_problems = {c["type"] for c in api(live, "GET", "/v1/status")["conditions"]
                     if (c["type"] == "Ready") != bool(c["status"])}
    assert "IngestFailing" in true_problems
    assert {p["type"] for p in page["problems"]} == true_problems
    failing = next(p for p in page["problems"] if p["type"] == "IngestFailing")
    assert "IngestFailing" in failing["text"] and failing["color"] == "rgb(253, 236, 236)"  # the warning style
    shot(browser, "06-storage")
    no_js_errors(browser)


def test_catalog_page_shows_why_this_copy(live: Live, browser: WebDriver) -> None:  # noqa: F811
    def entry() -> dict[str, Any] | None:
        found = api(live, "GET", "/v1/catalog/entries/tmdb:653")["entry"]
        return found if found.get("candidates") else None

    wanted = wait_for("tmdb:653 searched, its candidates recorded", entry, timeout=120)
    assert wanted["identifier"] == "nosferatu1922"
    assert "candidates" not in api(live, "GET", "/v1/catalog")["entries"][0]  # the list stays lean
    browser.get(f"{live.url}/#/catalog")
    why = el(browser, "#why details.why[data-key='tmdb:653'][data-loaded]")  # fetched when opened
    assert why.get_attribute("open") is not None  # few entries: open, readable at once
    assert "chosen nosferatu1922" in why.find_element(By.CSS_SELECTOR, "summary").text
    rows = why.find_elements(By.CSS_SELECTOR, "table.candidates tbody tr")
    assert [r.get_attribute("data-identifier") for r in rows] == [c["identifier"] for c in wanted["candidates"]]
    by_id = {r.get_attribute("data-identifier"): r for r in rows}
    chosen, trailer = by_id["nosferatu1922"], by_id["nosferatu_trailer"]
    assert "chosen" in (chosen.get_attribute("class") or "") and "chosen" in chosen.text
    best = wanted["candidates"][0]
    assert f"{best['score']:.1f}" in chosen.find_element(By.CSS_SELECTOR, "td.score").text
    assert "format h.264 +35" in chosen.text and "h.264" in chosen.text
    assert "rejected" in trailer.text and "rejected: runtime" in trailer.text
    assert trailer.find_element(By.CSS_SELECTOR, ".badge.bad").text == "rejected"
    shot(browser, "07-catalog-why")
    # a row searched by an older version (its details hold no candidates) says so instead of showing nothing
    conn = sqlite3.connect(live.media_root / db.DB_NAME, timeout=30)
    try:
        with conn:
            conn.execute("UPDATE catalog_entries SET details_json=json_remove(details_json, '$.candidates') "
                         "WHERE key='tmdb:653'")
    finally:
        conn.close()
    assert api(live, "GET", "/v1/catalog/entries/tmdb:653")["entry"]["candidates"] is None
    browser.refresh()
    note = el(browser, "#why details.why[data-key='tmdb:653'] .not-recorded")
    assert "not recorded; searched before this version" in note.text
    assert not browser.find_elements(By.CSS_SELECTOR, "#why table.candidates")
    no_js_errors(browser)
