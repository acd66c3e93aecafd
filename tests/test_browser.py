"""One real browser test: `tuneloop ui` on a free port, driven by Debian's chromium through Playwright.

Uploads a document on the Ingest page, waits for the background ingest job, accepts a
generated pair on the Review page, opens the Errors page of a seeded run, and saves
screenshots into tmp_path, or into the folder named by ``TUNELOOP_SCREENSHOTS`` (set it to
docs/screenshots to refresh the docs' pictures; the suite never writes there by itself).
Skipped (cleanly) only when chromium or Playwright is missing; `make test` installs chromium
(target browser-deps).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.components import BAR_PX
from store import pair_pages
from store import pairs as pairs_store
from store.db import Project
from store.records import SliceFilter, Status
from store.stats import project_stats
from tests.test_app_pages import seed

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]

HANDBOOK = """# Larkspur Labs field handbook

## Calibrating the Cobalt sensor

Calibrate the Cobalt sensor every six months, and always after a firmware update. Hold the
reset button for five seconds until the light blinks blue, then place the sensor on a level
surface for two minutes.

## Returning hardware

Hardware can be returned within 30 days of delivery. Print the return label from the customer
portal and include the original packaging.
"""

pytestmark = pytest.mark.browser


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def needs_a_browser() -> None:
    """Skip (cleanly) where chromium or Playwright is missing."""
    if not Path(CHROMIUM).exists():
        pytest.skip("chromium is not installed (apt-get install chromium; `make test` does it)")
    pytest.importorskip("playwright.sync_api")


@contextlib.contextmanager
def running_app(project: Project, tmp_path: Path, user: str = "tester") -> Iterator[str]:
    """`tuneloop ui` on ``project`` at a free port, signed in as the local admin ``user``; yields its URL."""
    port = _free_port()
    log = (tmp_path / "server.log").open("wb")
    env = {**os.environ, "TUNELOOP_USER": user}
    proc = subprocess.Popen(
        [sys.executable, "-m", "tuneloop.cli", "ui", "--project", str(project.root), "--port", str(port)],
        cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while True:
        try:
            if urllib.request.urlopen(url + "/_stcore/health", timeout=2).read() == b"ok":
                break
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail("the app did not start:\n" + (tmp_path / "server.log").read_text(errors="replace")[-3000:])
        time.sleep(0.3)
    try:
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()


def click_bar(page, chart, row: int) -> None:
    """Click the middle of the ``row``-th band of a horizontal ``bar_chart`` (``BAR_PX`` per band below
    Vega's 5 px padding): on the longest bar that is inside the bar."""
    box = chart.bounding_box()
    assert box is not None
    page.mouse.click(box["x"] + box["width"] * 0.5, box["y"] + 5 + BAR_PX * row + BAR_PX / 2)


@pytest.fixture
def server(project, tmp_path):
    needs_a_browser()
    info = seed(project)
    with running_app(project, tmp_path) as url:
        yield {"url": url, "project": project, **info}


def test_ingest_review_and_errors_in_a_real_browser(server, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    shots = Path(os.environ.get("TUNELOOP_SCREENSHOTS") or tmp_path / "screenshots")
    shots.mkdir(parents=True, exist_ok=True)
    doc = tmp_path / "field-handbook.md"
    doc.write_text(HANDBOOK, encoding="utf-8")
    p: Project = server["project"]
    url = server["url"]
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(60_000)
        expect.set_options(timeout=60_000)  # a loaded CI box can take seconds per rerun

        page.goto(url)
        expect(page.get_by_role("heading", name="Overview")).to_be_visible()
        expect(page.get_by_text("Error funnel")).to_be_visible()  # the script ran to its end
        page.wait_for_timeout(2000)  # let the charts draw
        page.screenshot(path=str(shots / "overview.png"), full_page=True)

        # A bar is a link to the pairs it counts: the longest bar of "Pairs by status" opens Explore
        # filtered to that status; coming back to the Overview does not replay the click.
        with p.connect(timeout=60) as con:
            by_status = project_stats(con)["pairs_by_status"]
        row, (most, n_most) = max(enumerate(by_status.items()), key=lambda t: t[1][1])
        click_bar(page, page.locator('[data-testid="stVegaLiteChart"]').first, row)
        expect(page.get_by_role("heading", name="Explore")).to_be_visible()
        expect(page.locator('[data-testid="stMetricValue"]').first).to_have_text(f"{n_most:,}")
        expect(page.get_by_text(most, exact=True).first).to_be_visible()  # the status chip in the filter
        page.goto(url)
        expect(page.get_by_text("Error funnel")).to_be_visible()
        page.wait_for_timeout(3000)
        expect(page.get_by_role("heading", name="Overview")).to_be_visible()

        # Ingest: upload a document, the job runs in the background with live progress
        page.goto(url + "/ingest")
        expect(page.get_by_role("heading", name="Ingest")).to_be_visible()
        page.locator("input[type=file][accept*='.pdf']").set_input_files(str(doc))
        expect(page.get_by_text("field-handbook.md").first).to_be_visible()
        page.get_by_role("button", name="Ingest").click()
        expect(page.get_by_text("Done in")).to_be_visible(timeout=240_000)
        page.wait_for_timeout(1000)
        page.screenshot(path=str(shots / "ingest.png"), full_page=True)

        # Review the document's pending pairs: the source span is shown beside the pair; accept one
        page.get_by_role("button", name="Review the pending pairs of this document").click()
        expect(page.get_by_role("heading", name="Review")).to_be_visible()
        expect(page.get_by_text("Only pairs of document")).to_be_visible()
        expect(page.get_by_role("button", name="Accept")).to_be_visible()
        expect(page.get_by_text("Keys:")).to_be_visible()
        page.wait_for_timeout(1000)
        page.screenshot(path=str(shots / "review.png"), full_page=True)
        shown = page.locator("code").filter(has_text=re.compile(r"^p_[0-9a-f]{8,}$")).first.inner_text()
        page.get_by_role("button", name="Accept").click()
        expect(page.get_by_text("accepted:").first).to_be_visible()

        # Errors of the seeded run, and a category drill-down
        page.goto(url + "/errors")
        expect(page.get_by_role("heading", name="Errors")).to_be_visible()
        expect(page.get_by_text("With an error")).to_be_visible()
        expect(page.get_by_text("Correct the data")).to_be_visible()
        page.wait_for_timeout(2000)
        page.screenshot(path=str(shots / "errors.png"), full_page=True)
        # a category's bar drills into that category
        click_bar(page, page.locator('[data-testid="stVegaLiteChart"]').first, 0)
        expect(page.locator('[data-testid="stSelectbox"]').filter(has_text="Category").first).not_to_contain_text(
            "all errors")

        page.goto(url + "/explore")
        expect(page.get_by_role("heading", name="Explore")).to_be_visible()
        expect(page.get_by_text("Matching pairs", exact=True)).to_be_visible()
        page.wait_for_timeout(2000)
        page.screenshot(path=str(shots / "explore.png"), full_page=True)
        browser.close()

    with p.connect(timeout=60) as con:  # the app lets the file go a few seconds after the last click
        pair = pairs_store.get(con, shown)
        made = pair_pages.count(con, SliceFilter(generators=["sections"], exclude_duplicates=False))
        reviews = pairs_store.reviews(con, shown)
    assert made >= 2, "the uploaded handbook made no pairs"
    assert pair.status == Status.accepted and pair.provenance.document_id
    assert reviews[-1].author == "tester"


def test_a_sign_in_survives_a_reload_in_a_real_browser(project, tmp_path):
    """The signed session cookie, as a browser keeps and sends it: sign in once, reload, open another
    page by its URL: still signed in; sign out: the reload shows the sign-in form again."""
    from playwright.sync_api import expect, sync_playwright

    needs_a_browser()
    from store import users as users_store

    with project.connect() as con:
        users_store.create_first_admin(con, "ada", "ada-password-1")
    with running_app(project, tmp_path) as url, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(60_000)
        expect.set_options(timeout=60_000)
        page.goto(url)
        expect(page.get_by_role("heading", name="Sign in to tuneloop")).to_be_visible()
        page.get_by_label("User name").fill("ada")
        page.get_by_role("textbox", name="Password").fill("ada-password-1")
        page.get_by_role("button", name="Sign in").click()
        expect(page.get_by_role("heading", name="Overview")).to_be_visible()
        page.wait_for_timeout(1000)  # the cookie is written by the page's script
        page.reload()
        expect(page.get_by_role("heading", name="Overview")).to_be_visible()
        page.goto(url + "/explore")
        expect(page.get_by_role("heading", name="Explore")).to_be_visible()
        expect(page.get_by_text("Signed in as")).to_be_visible()
        page.get_by_role("button", name="Sign out").click()
        expect(page.get_by_role("heading", name="Sign in to tuneloop")).to_be_visible()
        page.reload()
        expect(page.get_by_role("heading", name="Sign in to tuneloop")).to_be_visible()
        browser.close()
