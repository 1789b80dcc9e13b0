"""The buyers' page at / in a real browser: Debian's headless Chromium, driven by selenium
through Debian's chromedriver (nothing is downloaded; scripts/test installs both)."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from selenium import webdriver
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.wait import WebDriverWait

CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")
# The page polls every 2 s and the service keeps polled answers for 1 s.
SEEN_WITHIN_S = 10
REDRAWN = (NoSuchElementException, StaleElementReferenceException)

needs_chromium = pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER),
    reason="Debian's chromium and chromium-driver are not installed (scripts/test installs them)",
)


@pytest.fixture
def browser() -> Iterator[webdriver.Chrome]:
    options = Options()
    options.binary_location = str(CHROMIUM)
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage"):
        options.add_argument(argument)
    options.add_argument("--window-size=1280,900")
    # What the page's console says (a policy's refusals are errors there).
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def click(driver: webdriver.Chrome, selector: str) -> bool:
    driver.find_element(By.CSS_SELECTOR, selector).click()
    return True


def remaining(driver: webdriver.Chrome) -> int:
    return int(driver.find_element(By.CSS_SELECTOR, ".sale.chosen .remaining").text)


def item_class(driver: webdriver.Chrome, item: int) -> str:
    tile = driver.find_element(By.CSS_SELECTOR, f'#grid .item[data-item="{item}"]')
    return str(tile.get_attribute("class"))


@needs_chromium
async def test_a_buyer_checks_out_and_buys_on_the_page(
    serve: Callable[..., Any],
    db: asyncpg.Connection,
    browser: webdriver.Chrome,
    tmp_path: Path,
) -> None:
    server = await serve(workers=1)
    async with httpx.AsyncClient(base_url=server.base_url) as http:
        page = await http.get("/")
        assert page.headers["content-type"].startswith("text/html")
        policy = page.headers["content-security-policy"]
        assert "default-src 'self'" in policy and "frame-ancestors 'none'" in policy
        assert "unsafe-inline" not in policy and "<script>" not in page.text
        assert page.headers["x-content-type-options"] == "nosniff"
        assert (
            await http.get("/", headers={"If-None-Match": page.headers["etag"]})
        ).status_code == 304
        # Someone else holds item 2 already.
        await http.post("/checkout", params={"user_id": "bob", "id": "2"})

    def buy_item_5() -> str:
        # The page redraws what it polls: an element found may be gone a moment later.
        wait = WebDriverWait(browser, SEEN_WITHIN_S, ignored_exceptions=REDRAWN)
        browser.get(server.base_url + "/")
        browser.find_element(By.ID, "user").send_keys("alice", Keys.TAB)
        try:
            wait.until(lambda d: "available" in item_class(d, 5))
        finally:
            console.extend(browser.get_log("browser"))
        assert "held" in item_class(browser, 2)
        before = remaining(browser)
        wait.until(lambda d: click(d, '#grid .item[data-item="5"]'))
        code = wait.until(lambda d: d.find_element(By.ID, "code").text)
        assert "s" in browser.find_element(By.ID, "countdown").text  # "59 s"
        wait.until(lambda d: click(d, "#buy"))
        wait.until(lambda d: "sold" in item_class(d, 5))
        wait.until(lambda d: remaining(d) == before - 1)
        wait.until(lambda d: "item 5" in d.find_element(By.ID, "purchases").text)
        browser.save_screenshot(str(tmp_path / "page.png"))
        console.extend(browser.get_log("browser"))
        return str(code)

    console: list[dict[str, Any]] = []
    code = await asyncio.to_thread(buy_item_5)
    # No error: nothing refused by the page's policy (no inline script, nothing from
    # elsewhere), no script error. (The icon the browser asks for by itself is not the page's.)
    errors = [e for e in console if e["level"] == "SEVERE" and "favicon.ico" not in e["message"]]
    assert errors == []
    row = await db.fetchrow("SELECT user_id, item_id FROM purchases WHERE code = $1", code)
    assert row is not None and tuple(row) == ("alice", 5)
    assert (tmp_path / "page.png").stat().st_size > 10_000


def queue_state(driver: webdriver.Chrome) -> str:
    return str(driver.find_element(By.ID, "queue-state").text)


@needs_chromium
async def test_in_queue_mode_the_page_shows_the_place_the_admission_and_sold_out(
    serve: Callable[..., Any], db: asyncpg.Connection, browser: webdriver.Chrome
) -> None:
    """One active buyer at a time, 3 items, 1 each: alice waits behind bob, is let in when
    he bought, buys on the page; then di, waiting behind cy, sees the sale sold out. (The
    next sale's pre-queue is shown from PREQUEUE_SECONDS before its start: 0 here.)"""
    server = await serve(
        workers=1,
        admission="queue",
        admission_secret="q" * 32,
        active_max=1,
        sale_size=3,
        user_limit=1,
        prequeue_seconds=0,
        sale_open_seconds=3600,  # no older sale open beside it
    )
    async with httpx.AsyncClient(base_url=server.base_url) as http:
        sale = (await http.get("/sales/current")).json()["sale_id"]
        bob = (await http.post(f"/sales/{sale}/queue", params={"user_id": "bob"})).json()
        assert bob["admitted"]

        def alice_waits() -> None:
            wait = WebDriverWait(browser, SEEN_WITHIN_S, ignored_exceptions=REDRAWN)
            browser.get(server.base_url + "/")
            browser.find_element(By.ID, "user").send_keys("alice", Keys.TAB)
            wait.until(lambda d: click(d, "#join"))
            wait.until(lambda d: queue_state(d).startswith("Your place: 2"))
            wait.until(lambda d: click(d, '#grid .item[data-item="2"]'))  # not admitted yet
            wait.until(lambda d: "queue" in d.find_element(By.ID, "message").text)

        await asyncio.to_thread(alice_waits)
        cy = (await http.post(f"/sales/{sale}/queue", params={"user_id": "cy"})).json()
        di = (await http.post(f"/sales/{sale}/queue", params={"user_id": "di"})).json()
        assert (cy["position"], di["position"]) == (3, 4)
        query = {"user_id": "bob", "id": "1", "admission": bob["admission"]}
        code = (await http.post("/checkout", params=query)).json()["code"]
        assert (await http.post("/purchase", params={"code": code})).status_code == 200

        def alice_buys() -> None:
            wait = WebDriverWait(browser, SEEN_WITHIN_S, ignored_exceptions=REDRAWN)
            wait.until(lambda d: queue_state(d).startswith("You're in!"))
            countdown = browser.find_element(By.ID, "admission-countdown").text
            assert countdown.startswith(("9:", "10:"))  # NOTSALE_ADMISSION_SECONDS: 600
            wait.until(lambda d: click(d, '#grid .item[data-item="2"]'))
            wait.until(lambda d: click(d, "#buy"))
            wait.until(lambda d: "sold" in item_class(d, 2))

        await asyncio.to_thread(alice_buys)
        await asyncio.sleep(1.0)  # cy polls when told; alice is done, so cy is let in
        cy = (await http.get(f"/sales/{sale}/queue", params={"ticket": cy["ticket"]})).json()
        assert cy["admitted"]
        query = {"user_id": "cy", "id": "3", "admission": cy["admission"]}
        code = (await http.post("/checkout", params=query)).json()["code"]
        assert (await http.post("/purchase", params={"code": code})).status_code == 200

        def di_sees_sold_out() -> None:
            wait = WebDriverWait(browser, SEEN_WITHIN_S, ignored_exceptions=REDRAWN)
            field = browser.find_element(By.ID, "user")
            field.clear()
            field.send_keys("di", Keys.TAB)
            wait.until(lambda d: click(d, "#join"))  # her ticket, from another device
            wait.until(lambda d: queue_state(d).startswith("Sold out"))
            errors = [
                e
                for e in browser.get_log("browser")
                if e["level"] == "SEVERE"
                and "favicon.ico" not in e["message"]
                and "/checkout" not in e["message"]  # the refused checkout above
                and "/queue" not in e["message"]  # a poll told to wait
            ]
            assert errors == []

        await asyncio.to_thread(di_sees_sold_out)
    rows = await db.fetch("SELECT user_id, item_id FROM purchases ORDER BY item_id")
    assert [tuple(r) for r in rows] == [("bob", 1), ("alice", 2), ("cy", 3)]
