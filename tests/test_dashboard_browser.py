"""The dashboard in a real browser: ``sleepfm dashboard``'s server on a free local port, every page
opened in headless Chromium (Selenium + chromedriver), a widget clicked, screenshots saved.

Set ``SLEEPFM_SCREENSHOTS=DIR`` to keep the screenshots, and ``SLEEPFM_DASHBOARD_TEST_RUN=RUN_DIR``
to show another run than the test's small demo (README's screenshots: the ``make demo`` run).
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from sleepfm import dashboard_command

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
from selenium.common.exceptions import StaleElementReferenceException  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
pytestmark = [pytest.mark.slow, pytest.mark.skipif(
    not (CHROMIUM and DRIVER), reason="no Chromium/chromedriver (Debian: apt-get install -y "
    "chromium chromium-driver; .ci/run installs them where it can)")]
#: URL path of each page (Streamlit names them after their files) and its title.
PAGES = {"": "Run overview", "embeddings": "Embeddings explorer",
         "fairness": "Subgroup fairness", "enrichment": "Trial enrichment",
         "records": "Record viewer"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _outward_address() -> str | None:
    """This machine's address on its default route (no packet is sent), or None."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("10.255.255.255", 1))
            address = s.getsockname()[0]
    except OSError:
        return None
    return None if address.startswith("127.") else address


@pytest.fixture(scope="module")
def shown_run(request) -> Path:
    given = os.environ.get("SLEEPFM_DASHBOARD_TEST_RUN")
    return Path(given) if given else request.getfixturevalue("demo_run")[0]


@pytest.fixture(scope="module")
def server(shown_run):
    run = shown_run
    port = _free_port()
    process = subprocess.Popen(dashboard_command(run, port=port), stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 90
    while True:
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                if r.status == 200:
                    break
        except OSError:
            if process.poll() is not None or time.time() > deadline:
                process.kill()
                pytest.fail(f"the dashboard did not start: {process.stdout.read()[-2000:]}")
            time.sleep(0.5)
    yield url, port
    process.terminate()
    process.wait(timeout=30)


@pytest.fixture(scope="module")
def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-dev-shm-usage", "--window-size=1400,1100"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=webdriver.ChromeService(DRIVER), options=options)
    yield driver
    driver.quit()


def _wait(driver, timeout: float) -> WebDriverWait:
    """A wait that polls through re-renders (an element replaced while read is retried)."""
    return WebDriverWait(driver, timeout, poll_frequency=0.5,
                         ignored_exceptions=(StaleElementReferenceException,))


def _click(driver, xpath: str) -> None:
    """Click the element at ``xpath``, again if a re-render replaced it meanwhile."""
    _wait(driver, 30).until(lambda d: d.find_element(By.XPATH, xpath).click() or True)


def _rendered(driver, title: str, timeout: float = 120) -> None:
    """Wait until the page shows ``title``, nothing is running and the text has settled."""
    seen = []

    def done(d):
        heads = [h.text for h in d.find_elements(By.CSS_SELECTOR, "h1")]
        busy = d.find_elements(By.CSS_SELECTOR, '[data-testid="stStatusWidget"], '
                                                '[data-testid="stSpinner"]')
        seen.append(d.find_element(By.TAG_NAME, "body").text)
        return title in heads and not busy and len(seen) > 2 and seen[-1] == seen[-2] == seen[-3]
    _wait(driver, timeout).until(done)
    time.sleep(1.0)  # charts settle


def _shots(tmp_path) -> Path:
    folder = Path(os.environ.get("SLEEPFM_SCREENSHOTS", tmp_path))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def test_every_page_in_chromium(server, browser, tmp_path):
    url, _ = server
    shots = _shots(tmp_path)
    for path, title in PAGES.items():
        browser.get(f"{url}/{path}")
        _rendered(browser, title)
        assert not browser.find_elements(By.CSS_SELECTOR, '[data-testid="stException"]'), path
        body = browser.find_element(By.TAG_NAME, "body").text
        assert "Traceback" not in body
        name = path or "overview"
        browser.save_screenshot(str(shots / f"{name}.png"))
        assert (shots / f"{name}.png").stat().st_size > 10_000
    # the overview names what the run holds; the enrichment page its candidates
    browser.get(url)
    _rendered(browser, "Run overview")
    assert "records" in browser.find_element(By.TAG_NAME, "body").text


def test_clicking_a_widget_changes_the_page(server, browser, shown_run):
    url, _ = server
    nights = f"{len(list((shown_run / 'embeddings').glob('*.h5')))} points"
    browser.get(f"{url}/embeddings")
    _rendered(browser, "Embeddings explorer")
    body = browser.find_element(By.TAG_NAME, "body").text
    assert nights in body
    _click(browser, "//*[@data-testid='stRadio']//label[normalize-space(.)='epochs']")
    _wait(browser, 120).until(
        lambda d: nights not in d.find_element(By.TAG_NAME, "body").text
        and " points, " in d.find_element(By.TAG_NAME, "body").text)
    assert not browser.find_elements(By.CSS_SELECTOR, '[data-testid="stException"]')
    # the navigation is a widget too
    _click(browser, "//a[normalize-space(.)='Trial enrichment']")
    _rendered(browser, "Trial enrichment")
    assert "eligible candidates" in browser.find_element(By.TAG_NAME, "body").text


def test_not_reachable_on_another_address(server):
    _, port = server
    address = _outward_address()
    if address is None:
        pytest.skip("this machine has no non-loopback address to try")
    with pytest.raises(OSError):
        socket.create_connection((address, port), timeout=3).close()
