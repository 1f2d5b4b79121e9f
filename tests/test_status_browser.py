"""The status page in a real browser: headless Chromium (Debian's `chromium` and its `chromedriver`, driven over
WebDriver by Selenium) against the installed `watcher run` and `watcher simulate`, each a process of its own.

The page is opened with the operator token as the password of HTTP Basic, as a person's browser would after its
login prompt; the simulator then moves a campaign on and finishes another, and the page must show both (the
progress bar moved, the `finished` event listed) without being reloaded. Every wait is on the page itself
(WebDriverWait on the DOM); the time limits only turn a hang into a failure.

The screenshots in the README come from here: `UPDATE_SCREENSHOTS=1 pytest tests/test_status_browser.py` writes
docs/status-page.png (desktop) and docs/status-page-phone.png (a phone's width).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import queue
import shutil
import socket
import sqlite3
import subprocess
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

import httpx
import pytest

from .callhealth import collapsed, steady
from .test_cli import WATCHER

DOCS = Path(__file__).parent.parent / "docs"
TOKEN = "ops-browser-token-0123456789"
SAFETY = 30.0  # seconds; only so that a regression fails instead of hanging
PHONE = (390, 844)  # a common phone's CSS viewport
DESKTOP_WIDTH = 1280

CAMPAIGNS: dict[int, dict[str, Any]] = {
    1001: {"name": "Renewals — Tokyo", "status": "running", "progress": 20, "collectionRate": 38},
    1002: {"name": "冬のキャンペーン", "status": "running", "progress": 85, "collectionRate": 41},
    1003: {"name": "Customer survey 2026", "status": "done", "progress": 100, "collectionRate": 57},
    1004: {"name": "Payment reminders", "status": "stop.abnormal", "progress": 35, "collectionRate": 12},
    1005: {"name": "New-year greetings", "status": "pending", "progress": 0, "collectionRate": 0},
}


def _browser() -> tuple[str, str]:
    """Chromium and its driver, or a skip (a failure in CI, where .ci/run installs them)."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if chromium and driver:
        return chromium, driver
    reason = "needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)"
    if os.environ.get("CI") == "true":
        pytest.fail(f"in CI the browser test must run: {reason}")
    pytest.skip(reason)


class Lines:
    """A process's output lines, read by a thread so that waiting for one has a deadline."""

    def __init__(self, stream: IO[str]) -> None:
        self._lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        self._stream = stream
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self._stream:
            self._lines.put(line)

    def close(self) -> None:
        """Once the process has exited: the reader has met the end; close the pipe."""
        self._reader.join(timeout=SAFETY)
        self._stream.close()

    def wait_for(self, predicate: Any) -> str:
        """The first line (from here on) for which `predicate` is true."""
        while True:
            try:
                line = self._lines.get(timeout=SAFETY)
            except queue.Empty:
                raise AssertionError("no such line within the time limit:\n" + "".join(self.seen[-20:])) from None
            self.seen.append(line)
            if predicate(line):
                return line


def _process(args: list[str], cwd: Path) -> tuple[subprocess.Popen[str], Lines]:
    proc = subprocess.Popen(
        args, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, encoding="utf-8"
    )
    assert proc.stdout is not None
    return proc, Lines(proc.stdout)


def _stop(proc: subprocess.Popen[str], lines: Lines) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=SAFETY)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    lines.close()


def _closed_port() -> int:
    """A port nothing listens on: the notifier that fails, for the page to show."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclasses.dataclass
class Site:
    """The page's URL, the simulator's, and the running watcher."""

    page: str
    sim: str
    watcher: subprocess.Popen[str]


@pytest.fixture
def watcher_site(tmp_path: Path) -> Iterator[Site]:
    """`watcher simulate` with the campaigns above and `watcher run` with the page on."""
    sim, sim_lines = _process([WATCHER, "simulate", "--empty", "--port", "0"], tmp_path)
    try:
        first = sim_lines.wait_for(lambda line: line.startswith("simulator: "))
        sim_url, sim_token = first.split()[1], first.split()[3]
        for task_id, fields in CAMPAIGNS.items():
            httpx.post(f"{sim_url}/_sim/tasks/{task_id}", json=fields).raise_for_status()
        config = tmp_path / "watcher.toml"
        config.write_text(
            f"""
[api]
base_url = "{sim_url}"
token = "{sim_token}"
timeout = "2s"

[watch]
tasks = {list(CAMPAIGNS)}
interval = "300ms"
timezone = "Asia/Tokyo"

[store]
path = "state.db"

[http]
listen = "127.0.0.1:0"
ui = true
token = "{TOKEN}"

[delivery]
timeout = "1s"

[[notifiers]]
kind = "log"
name = "ops-log"

[[notifiers]]
kind = "webhook"
name = "ops-hook"
url = "http://127.0.0.1:{_closed_port()}/hook"
""",
            encoding="utf-8",
        )
        config.chmod(0o600)
        run, run_lines = _process([WATCHER, "run", "-c", str(config), "--log-format", "json"], tmp_path)
        try:
            listening = json.loads(run_lines.wait_for(lambda line: '"http.listening"' in line))
            yield Site(f"http://127.0.0.1:{listening['port']}/", sim_url, run)
        finally:
            _stop(run, run_lines)
    finally:
        _stop(sim, sim_lines)


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    """Headless Chromium under its own driver, with the browser's console kept for the test to read."""
    chromium, driver_path = _browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(argument)  # no-sandbox: CI runs as root, where Chromium's sandbox refuses to start
    options.add_argument(f"--window-size={DESKTOP_WIDTH},900")
    options.add_argument(f"--user-data-dir={tmp_path / 'chromium'}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def test_the_page_follows_the_campaigns_live_in_a_real_browser(
    watcher_site: Site, browser: Any, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    page, sim_url = watcher_site.page, watcher_site.sim
    wait = WebDriverWait(browser, SAFETY)

    def progress(task_id: int) -> str:
        return str(browser.find_element(By.ID, f"task-{task_id}").get_attribute("data-progress"))

    # The token as the password of HTTP Basic, in the address as a browser's login prompt would send it.
    browser.get(page.replace("http://", f"http://ops:{TOKEN}@"))
    wait.until(lambda _: progress(1001) == "20" and progress(1003) == "100")
    browser.execute_script("window.stillTheSamePage = true")  # a reload would lose it

    httpx.post(f"{sim_url}/_sim/tasks/1001", json={"progress": 60}).raise_for_status()
    httpx.post(f"{sim_url}/_sim/tasks/1002", json={"status": "done", "progress": 100}).raise_for_status()

    wait.until(lambda _: progress(1001) == "60")
    bar = browser.find_element(By.CSS_SELECTOR, "#task-1001 progress")
    assert bar.get_attribute("value") == "60"
    finished = '#events li[data-type="voicefox.task.finished"]'
    wait.until(lambda _: any("冬のキャンペーン" in li.text for li in browser.find_elements(By.CSS_SELECTOR, finished)))
    assert browser.execute_script("return window.stillTheSamePage === true"), "the page was reloaded"
    assert browser.find_element(By.CSS_SELECTOR, "#task-1001 .eta").text != "–"  # 20 % → 60 %: a pace, an ETA

    # What the call log showed (as the daemon stores it): a finished campaign's calls, and a stopped one whose
    # answered share had collapsed. Both campaigns stand still, so the daemon writes their rows no more.
    now = datetime.now(UTC)
    with contextlib.closing(sqlite3.connect(tmp_path / "state.db", timeout=SAFETY)) as db, db:
        for task_id, health in ((1003, steady(now)), (1004, collapsed(now))):
            db.execute("UPDATE tasks SET health = ? WHERE task_id = ?", (json.dumps(health.to_dict()), task_id))
    wait.until(lambda _: browser.find_elements(By.CSS_SELECTOR, "#task-1004 .answer-drop"))
    assert browser.find_element(By.CSS_SELECTOR, "#task-1004 .calls").text == "312 (41 answered)"
    assert browser.find_element(By.CSS_SELECTOR, "#task-1004 .answer-rate").text == "3%"
    assert browser.find_element(By.CSS_SELECTOR, "#task-1004 .answer-drop").text.startswith("40% → 4% since")
    assert "answer rate dropped" in browser.find_element(By.CSS_SELECTOR, "#task-1004 .badge").text
    assert browser.find_element(By.CSS_SELECTOR, "#task-1003 .calls").text == "120 (48 answered)"
    # A running campaign whose call log the daemon reads, and finds empty (the simulator dials nothing for it):
    # no call in the last hour is said, not hidden.
    wait.until(
        lambda _: [e.text for e in browser.find_elements(By.CSS_SELECTOR, "#task-1001 .calls")] == ["0 (0 answered)"]
    )

    # The failing notifier, as the screenshot should show it.
    wait.until(lambda _: "failing" in browser.find_element(By.ID, "receiver-2").text)

    # Nothing came from elsewhere, and nothing the page did was refused (CSP) or failed.
    here = urlsplit(page).netloc
    resources = browser.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    assert resources and all(urlsplit(str(url)).netloc.rpartition("@")[2] == here for url in resources), resources
    problems = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
    assert problems == []

    _screenshot(browser, DESKTOP_WIDTH, tmp_path / "status-page.png")

    browser.set_window_size(*PHONE)
    wait.until(lambda _: browser.execute_script("return window.innerWidth") <= PHONE[0])
    overflow = browser.execute_script("return document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, "on a phone the page must not scroll sideways"
    _screenshot(browser, PHONE[0], tmp_path / "status-page-phone.png")

    # The watcher stops: the page says so, rather than go on showing what it last knew as if it were news.
    banner = browser.find_element(By.ID, "offline")
    assert not banner.is_displayed()
    watcher_site.watcher.terminate()
    wait.until(lambda _: banner.is_displayed())


def _screenshot(browser: Any, width: int, path: Path) -> None:
    """The whole page at this width (the window made as tall as the page), kept in docs/ when asked to."""
    # The window's height counts the browser's own frame, which the page does not get.
    frame, height = browser.execute_script(
        "return [window.outerHeight - window.innerHeight, document.documentElement.scrollHeight]"
    )
    browser.set_window_size(width, int(frame) + int(height))
    browser.save_screenshot(str(path))
    assert path.read_bytes().startswith(b"\x89PNG")
    if os.environ.get("UPDATE_SCREENSHOTS") == "1":
        DOCS.mkdir(exist_ok=True)
        shutil.copyfile(path, DOCS / path.name)
