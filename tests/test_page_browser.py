"""The page in a real headless Chromium against a real `smartprice serve`: paste, upload, download, every bad input.

Uses Debian's chromium (`apt-get install -y chromium`) driven by Playwright (`pip install playwright`,
the dev extra); Playwright's own browser downloads are not used (they need the network). A
screenshot of each state is saved under the test's tmp_path.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

import pandas as pd
import pytest

from conftest import shared_file
from smartprice import PricePredictor
from smartprice.serve import MAX_BODY_BYTES, MAX_TEXT_CHARS

sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright is not installed: pip install 'smartprice[dev]'")
httpx = pytest.importorskip("httpx", reason="the serve extra is not installed: pip install 'smartprice[serve]'")

CHROMIUM = os.environ.get("SMARTPRICE_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no Chromium on this machine: apt-get install -y chromium "
                                                         "(or set SMARTPRICE_CHROMIUM to a Chromium executable)")
TRAIN_ROWS = 1500  # of train.csv: real neighbours and prices in a few seconds of fitting


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    train = pd.read_csv(shared_file("train.csv"), dtype={"sample_id": str}).head(TRAIN_ROWS)
    path = tmp_path_factory.mktemp("browser") / "model"
    PricePredictor(preset="cpu", trees=100, folds=3).fit(train).save(path)
    return path


@pytest.fixture(scope="module")
def server(model_dir):
    """`smartprice serve MODEL` on a free port, as a user starts it."""
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "smartprice", "serve", str(model_dir), "--port", str(port)],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while time.time() < deadline and process.poll() is None:
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            time.sleep(0.2)
    else:
        process.kill()
        pytest.fail(f"server did not start: {process.communicate()[0][-2000:]}")
    yield url
    process.terminate()
    process.wait(timeout=30)


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])  # root in CI containers
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, server):
    """A fresh tab that records every request to another host (there must be none) and every dialog (none either)."""
    context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    tab = context.new_page()
    tab.foreign, tab.dialogs = [], []
    host = urlparse(server).netloc

    def only_ours(route):
        if urlparse(route.request.url).netloc != host:
            tab.foreign.append(route.request.url)
            return route.abort()
        return route.continue_()

    tab.route("**/*", only_ours)
    tab.on("dialog", lambda dialog: (tab.dialogs.append(dialog.message), dialog.dismiss()))
    tab.goto(server)
    yield tab
    assert not tab.foreign, f"the page asked another host: {tab.foreign}"
    assert not tab.dialogs, f"listing text ran as script: {tab.dialogs}"
    context.close()


def shot(tab, tmp_path: Path, name: str) -> None:
    tab.screenshot(path=str(tmp_path / f"{name}.png"), full_page=True)
    assert (tmp_path / f"{name}.png").stat().st_size > 1000


def test_paste_a_real_listing_and_read_price_and_neighbours(page, model_dir, tmp_path):
    shot(page, tmp_path, "01-empty")
    listing = pd.read_csv(shared_file("holdout.csv"), dtype={"sample_id": str}).catalog_content[7]
    page.fill("#listing", listing)
    page.click("text=Price it")
    page.wait_for_selector("#answer")
    shown = page.text_content(".price")
    expected = PricePredictor.load(model_dir).predict(pd.DataFrame({"catalog_content": [listing]}))[0]
    assert shown == f"{expected:,.2f}"
    neighbours = page.locator("table.neighbours tbody tr")
    assert neighbours.count() == 5
    first = neighbours.nth(0).locator("td")
    assert first.nth(0).text_content().strip() and float(first.nth(1).text_content().replace(",", "")) > 0
    assert page.locator("ul.effects li").count() >= 1
    assert "Likely between" in page.text_content(".range")  # the model has calibrated ranges
    assert page.input_value("#listing") == listing.replace("\r\n", "\n")  # the form keeps what was pasted
    shot(page, tmp_path, "02-answer")


def test_upload_200_rows_and_download_what_predict_writes(page, model_dir, tmp_path):
    rows = pd.read_csv(shared_file("test_unlabeled.csv"), dtype=str, keep_default_na=False).head(200)
    source = tmp_path / "two hundred.csv"
    rows.to_csv(source, index=False)
    page.set_input_files("#file", str(source))
    with page.expect_download() as waiting:
        page.click("text=Price the file")
    download = waiting.value
    assert download.suggested_filename == "two hundred-priced.csv"
    got = tmp_path / "downloaded.csv"
    download.save_as(str(got))
    cli = tmp_path / "cli.csv"
    subprocess.run([sys.executable, "-m", "smartprice", "predict", str(model_dir), str(source), "--out", str(cli)],
                   check=True, capture_output=True)
    assert got.read_bytes() == cli.read_bytes()  # identical ids, order and prices
    assert len(pd.read_csv(got)) == 200
    shot(page, tmp_path, "03-after-download")

    page.check("#ranges")  # the same file with range columns, against `smartprice predict --interval 0.8`
    page.select_option("#coverage", "0.8")
    with page.expect_download() as waiting:
        page.click("text=Price the file")
    waiting.value.save_as(str(got))
    subprocess.run([sys.executable, "-m", "smartprice", "predict", str(model_dir), str(source), "--out", str(cli),
                    "--interval", "0.8"], check=True, capture_output=True)
    assert got.read_bytes() == cli.read_bytes()
    assert got.read_text().startswith("sample_id,price,price_low,price_high\n")


def error_after(page, field: str) -> str:
    page.wait_for_selector(f"#{field}-error")
    assert page.get_attribute(f"#{field}", "aria-invalid") == "true"
    return page.text_content(f"#{field}-error")


def test_each_bad_input_gets_its_message(page, tmp_path):
    page.click("text=Price it")  # nothing pasted
    assert "paste a listing" in error_after(page, "listing")
    shot(page, tmp_path, "04-empty-listing")

    page.fill("#listing", "x" * (MAX_TEXT_CHARS + 1))
    page.click("text=Price it")
    assert f"the limit is {MAX_TEXT_CHARS:,}" in error_after(page, "listing")
    shot(page, tmp_path, "05-listing-too-long")

    page.fill("#listing", "")
    page.click("summary:text('Or type its parts')")
    page.fill("#item_name", "Green Tea <b>bold</b>")
    page.fill("#value", "a dozen")
    page.click("text=Price it")
    assert "must be a number above 0" in error_after(page, "value")
    shot(page, tmp_path, "06-bad-value")

    not_catalog = tmp_path / "holiday <photo>.csv"
    not_catalog.write_text("name,price\nsocks,3\n")
    page.set_input_files("#file", str(not_catalog))
    page.click("text=Price the file")
    message = error_after(page, "file")
    assert "holiday <photo>.csv: missing required column 'sample_id', 'catalog_content'" in message
    shot(page, tmp_path, "07-not-a-catalog")

    huge = tmp_path / "huge.csv"
    with open(huge, "wb") as handle:
        handle.write(b"sample_id,catalog_content\n")
        handle.write(b"".join(b"%d,Item Name: Tea\n" % i for i in range(MAX_BODY_BYTES // 16)))
    page.set_input_files("#file", str(huge))
    page.click("text=Price the file")
    assert "over the limit of 20 MB" in error_after(page, "file")
    shot(page, tmp_path, "08-file-too-large")

    page.set_input_files("#file", [])
    page.click("text=Price the file")
    assert "choose a file" in error_after(page, "file")
    shot(page, tmp_path, "09-no-file")


def test_markup_in_a_listing_stays_text(page, tmp_path):
    page.fill("#listing", "Item Name: Sauce <script>alert(1)</script><img src=x onerror=alert(2)>\nValue: 12\nUnit: Ounce")
    page.click("text=Price it")
    page.wait_for_selector("#answer")
    assert "<script>alert(1)</script>" in page.text_content("dl.facts dd")  # shown as the characters typed
    assert page.locator("#answer img, #answer script").count() == 0
    shot(page, tmp_path, "10-markup-as-text")


def test_keyboard_alone_and_a_phone_screen(page, tmp_path):
    page.set_viewport_size({"width": 375, "height": 740})
    page.focus("#listing")
    page.keyboard.type("Item Name: Kerrygold Pure Irish Butter 8 oz\nValue: 8\nUnit: Ounce")
    for _ in range(6):  # Tab from the text box to the form's button
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.textContent") == "Price it":
            break
    page.keyboard.press("Enter")
    page.wait_for_selector("#answer")
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")  # no sideways scrolling
    shot(page, tmp_path, "11-phone-keyboard")


def test_it_works_without_javascript(browser, server, tmp_path):
    context = browser.new_context(java_script_enabled=False)
    tab = context.new_page()
    tab.goto(server)
    tab.fill("#listing", "Item Name: Barilla Spaghetti Pasta 16 oz (Pack of 12)\nValue: 192\nUnit: Ounce")
    tab.click("text=Price it")
    tab.wait_for_selector("#answer")
    assert float(tab.text_content(".price").replace(",", "")) > 0
    shot(tab, tmp_path, "12-no-javascript")
    context.close()
