"""The dashboard in a real browser (Playwright driving Debian's headless Chromium, no
``playwright install``): sign-in by form with the token in no URL, every page showing the
API's numbers, a job cancelled with a button, Swagger UI and ReDoc rendering with no request
leaving this machine. Screenshots of every page land in $BNNBENCH_TEST_ARTIFACTS/screenshots
(default tests/artifacts/screenshots, git-ignored).

One coordinator, one campaign, one browser for the module."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import pytest
from conftest import REPO
from helpers.campaign import (
    FAILURE,
    Campaign,
    dashboard_cells,
    module_coordinator,
    run_campaign,
)

if TYPE_CHECKING:
    from playwright.sync_api import Browser, BrowserContext, ConsoleMessage, Page, Response

pytestmark = pytest.mark.browser

ADMIN = "browser-admin-token-7c2e"
CHROMIUM = os.environ.get("BNNBENCH_CHROMIUM", "/usr/bin/chromium")
SHOTS = (
    Path(os.environ.get("BNNBENCH_TEST_ARTIFACTS", REPO / "tests" / "artifacts")) / "screenshots"
)


@pytest.fixture(scope="module")
def campaign(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Campaign]:
    with module_coordinator(tmp_path_factory, ADMIN, conversion_workers=2) as c:
        yield run_campaign(c, tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if shutil.which(CHROMIUM) is None:
        pytest.fail(f"{CHROMIUM} missing (Debian package chromium; make system-deps installs it)")
    from playwright.sync_api import sync_playwright

    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        # --no-sandbox: CI runs as root, where Chromium's sandbox refuses to start
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        b.close()


class Session:
    """A browser context that records every URL it requests or visits."""

    def __init__(self, browser: Browser, base: str) -> None:
        self.base = base
        self.context: BrowserContext = browser.new_context(viewport={"width": 1280, "height": 900})
        self.context.add_init_script(  # auto-refresh off: no reload in the middle of a check
            "window.localStorage.setItem('bnnbench.autorefresh', 'off')"
        )
        self.urls: list[str] = []
        self.failed: list[tuple[str, str]] = []  # (url, why)
        self.errors: list[str] = []
        self.context.on("request", lambda r: self.urls.append(r.url))
        self.context.on("requestfailed", lambda r: self.failed.append((r.url, r.failure or "")))
        self.page: Page = self.context.new_page()
        # script errors and CSP refusals; a page's own status is checked where it is loaded,
        # a failing sub-resource (CSS, script, chart) is an error
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("console", self._console)
        self.context.on("response", self._response)
        self.page.on("framenavigated", lambda f: self.urls.append(f.url))

    def _console(self, m: ConsoleMessage) -> None:
        if m.type == "error" and not m.text.startswith("Failed to load resource"):
            self.errors.append(m.text)

    def _response(self, r: Response) -> None:
        if r.status >= 400 and r.request.resource_type != "document":
            self.errors.append(f"{r.status} {r.url}")

    def goto(self, path: str, shot: str | None = None) -> int:
        resp = self.page.goto(self.base + path)  # returns after "load": images included
        assert resp is not None
        if shot:
            self.page.screenshot(path=str(SHOTS / f"{shot}.png"), full_page=True)
        return resp.status

    def sign_in(self, token: str) -> None:
        self.page.fill("#token", token)
        with self.page.expect_navigation():
            self.page.click("button[type=submit]")

    def close(self) -> None:
        self.context.close()


@pytest.fixture(scope="module")
def signed_in(browser: Browser, campaign: Campaign) -> Iterator[Session]:
    s = Session(browser, campaign.c.url)
    s.goto("/")
    s.sign_in(ADMIN)
    assert s.page.url == campaign.c.url + "/"
    yield s
    s.close()


def _texts(page: Page, selector: str) -> list[str]:
    return [t.strip() for t in page.locator(selector).all_inner_texts()]


def test_sign_in_keeps_the_token_out_of_every_url(browser: Browser, campaign: Campaign) -> None:
    c = campaign.c
    s = Session(browser, c.url)
    try:
        assert s.goto("/jobs", "login") == 401
        assert s.page.locator("form[action='/login'][method='post']").count() == 1
        s.sign_in("not-the-token")
        assert "wrong token" in s.page.inner_text("#login-error")
        assert s.page.url == c.url + "/login"
        s.sign_in(ADMIN)
        assert s.page.url == c.url + "/jobs"  # back where the sign-in began
        assert s.page.locator("tr[data-job-id]").count() >= 6
        [cookie] = s.context.cookies()
        assert cookie["name"] == "bnnbench_session" and cookie["httpOnly"]
        assert cookie["sameSite"] == "Strict" and ADMIN not in cookie["value"]
        assert s.page.evaluate("document.cookie") == ""  # scripts cannot read it
        # the auto-refresh script ran (the CSP allows our one script file) and obeyed the choice
        assert s.page.locator("#autorefresh").is_checked() is False
        with s.page.expect_navigation():
            s.page.click("#logout")
        assert s.page.url == c.url + "/login" and s.context.cookies() == []
        assert s.goto("/") == 401
        assert not s.errors, s.errors
        # the token was typed into a form: it is in no URL visited or requested, nor the log
        assert s.urls and not [u for u in s.urls if ADMIN in u]
        assert ADMIN not in c.log_path.read_text(errors="replace")
    finally:
        s.close()


def test_every_page_shows_the_apis_numbers(signed_in: Session, campaign: Campaign) -> None:
    c, s, page = campaign.c, signed_in, signed_in.page
    api_devices = c.client.devices()
    jobs = c.client.list_jobs()
    models = {m.id: m for m in c.client.list_models()}
    table = c.client.table()

    assert s.goto("/", "overview") == 200
    assert page.inner_text("#card-devices .big") == str(len(api_devices))
    assert page.inner_text("#card-jobs .big") == str(len(jobs))
    counts = {st: sum(1 for j in jobs if j.status == st) for st in ("done", "failed", "queued")}
    for st, n in counts.items():
        assert page.inner_text(f"#card-jobs [data-count={st}]") == f"{st} {n}"

    api_devices = c.client.devices()  # online is a matter of seconds: read it just before
    assert s.goto("/devices", "devices") == 200
    rows = page.locator("#devices tr[data-device-id]")
    assert rows.count() == len(api_devices)
    for d in api_devices:
        row = page.locator(f"#devices tr[data-device-id='{d.id}']")
        want = ("busy" if d.busy else "online") if d.online else "offline"
        assert row.locator("[data-status]").get_attribute("data-status") == want
        assert d.label in row.inner_text() and d.fingerprint in row.inner_text()

    assert s.goto(f"/devices/{campaign.reg.device_id}", "device") == 200
    assert "BCM2711 / Raspberry Pi 4" in page.inner_text("#device")
    assert "4x Cortex-A72 1.80 GHz" in page.inner_text("#device")

    assert s.goto("/tables", "tables") == 200
    shown = {
        cell.get_attribute("data-cell"): cell.inner_text()
        for cell in page.locator("#latency td[data-cell]").all()
    }
    want = dashboard_cells(table)
    assert shown == want and len(want) == 4
    [om] = table["om"]
    row = page.locator(f"#om tr[data-om='{om['library']}|{om['algorithm']}']")
    assert row.locator("[data-field=speedup]").inner_text() == f"{om['speedup']:.2f}"
    assert row.locator("[data-field=compression]").inner_text() == f"{om['compression']:.2f}"
    assert row.locator("[data-field=om]").inner_text() == f"{om['om']:.2f}"
    widths = page.eval_on_selector_all("figure img", "imgs => imgs.map(i => i.naturalWidth)")
    assert len(widths) == 4 and all(w > 300 for w in widths)  # every chart loaded and drew

    assert s.goto("/jobs", "jobs") == 200
    for j in jobs:
        row = page.locator(f"tr[data-job-id='{j.id}']")
        assert row.locator("td").nth(1).inner_text() == models[j.model_id].name  # not an id
        assert row.locator("[data-status]").inner_text() == j.status
    assert FAILURE in page.locator(f"tr[data-job-id='{campaign.failed_job.id}']").inner_text()

    bnn = campaign.models["bnn"]
    assert s.goto(f"/models/{bnn.id}", "model") == 200
    th = bnn.analysis["theoretical"]["speedup"]  # type: ignore[index]
    assert page.inner_text("#theoretical-speedup") == f"{th:.2f}"
    assert page.locator("#artifacts [data-fidelity='True']").count() == 1

    res = c.client.results(job_id=campaign.jobs[("bnn", 2)].id)[-1]
    assert s.goto(f"/results/{res.id}", "result") == 200
    assert page.inner_text("#samples") == ", ".join(str(x) for x in res.samples_ms)
    assert page.inner_text("[data-stat=median_ms]") == f"{res.stats.median_ms:.3f}"
    assert "performance" in page.inner_text("#env") and "readings_after" in page.inner_text("#env")

    for path, shot in (
        ("/models", "models"),
        ("/results", "results"),
        (f"/jobs/{campaign.failed_job.id}", "job"),
    ):
        assert s.goto(path, shot) == 200
    assert not s.errors, s.errors
    assert not s.failed, s.failed


def test_cancel_a_queued_job_with_its_button(signed_in: Session, campaign: Campaign) -> None:
    c, s, page = campaign.c, signed_in, signed_in.page
    job = campaign.queued_job
    assert c.client.get_job(job.id).status == "queued"
    assert s.goto("/jobs?status=queued") == 200
    row = page.locator(f"tr[data-job-id='{job.id}']")
    with page.expect_navigation():
        row.locator("button[data-action=cancel]").click()
    assert page.url == c.url + "/jobs?status=queued"  # back on the page of the button
    assert page.locator(f"tr[data-job-id='{job.id}']").count() == 0
    assert c.client.get_job(job.id).status == "cancelled"
    assert s.goto(f"/jobs/{job.id}", "job-cancelled") == 200
    assert page.inner_text("#job [data-status]") == "cancelled"
    assert page.locator("button[data-action=retry]").count() == 1


def _external(urls: list[str], base: str) -> list[str]:
    home = urlsplit(base).netloc
    return [
        u for u in urls if urlsplit(u).scheme in ("http", "https") and urlsplit(u).netloc != home
    ]


@pytest.mark.parametrize(
    ("path", "ready"),
    [("/docs", ".opblock"), ("/redoc", "[data-section-id]")],
)
def test_api_docs_render_offline(
    browser: Browser, campaign: Campaign, path: str, ready: str
) -> None:
    s = Session(browser, campaign.c.url)
    try:
        assert s.goto(path) == 200
        s.page.wait_for_selector(ready, timeout=20_000)
        assert s.page.locator(ready).count() >= 10  # the operations rendered from the spec
        s.page.screenshot(path=str(SHOTS / f"{path.strip('/')}.png"))
        # nothing reached another host: ReDoc's footer logo (its CDN) is the one request
        # that page makes elsewhere, and the page's CSP blocks it before it is sent
        blocked = {url for url, why in s.failed if "csp" in why.lower()}  # refused by the CSP
        assert set(_external(s.urls, campaign.c.url)) <= blocked, (s.urls, s.failed)
        assert all(url.startswith("https://cdn.redoc.ly/") for url in blocked), blocked
        assert [f for f in s.failed if f[0] not in blocked] == []
        refused = [e for e in s.errors if "Content Security Policy" in e]
        assert all("https://cdn.redoc.ly/" in e for e in refused), refused
        assert not [e for e in s.errors if e not in refused], s.errors
    finally:
        s.close()
