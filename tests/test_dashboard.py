"""The dashboard over plain HTTP (no browser): sign-in by POST form into a signed HttpOnly,
SameSite=Strict cookie (``/?token=`` no longer signs in), sign-out revokes it, action forms
need the session's CSRF token and a same-origin post, pages show the API's data, and the
API docs (Swagger UI, ReDoc) load only assets this server serves."""

from __future__ import annotations

import re
from collections.abc import Iterator
from html.parser import HTMLParser

import httpx
import pytest
from helpers.campaign import (
    FAILURE,
    Campaign,
    dashboard_cells,
    module_coordinator,
    run_campaign,
)

ADMIN = "dash-admin-token-3f9a"
PAGES = [
    "/",
    "/devices",
    "/devices/1",
    "/jobs",
    "/jobs/1",
    "/models",
    "/models/1",
    "/results",
    "/results/1",
    "/tables",
]


@pytest.fixture(scope="module")
def campaign(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Campaign]:
    with module_coordinator(tmp_path_factory, ADMIN, conversion_workers=2) as c:
        yield run_campaign(c, tmp_path_factory.mktemp("models"))


def _browser(campaign: Campaign) -> httpx.Client:
    return httpx.Client(base_url=campaign.c.url, timeout=30)


def _sign_in(b: httpx.Client, token: str = ADMIN, next_path: str = "/") -> httpx.Response:
    return b.post("/login", data={"token": token, "next": next_path})


def _csrf(html: str) -> str:
    m = re.search(r'name="csrf" value="([^"]+)"', html)
    assert m, "no CSRF field on the page"
    return m.group(1)


class _Assets(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        url = a.get("src") if tag in ("script", "img") else a.get("href") if tag == "link" else None
        if url:
            self.urls.append(url)


def test_docs_load_only_local_assets(campaign: Campaign) -> None:
    with _browser(campaign) as b:
        for page, needs in (
            ("/docs", ("swagger-ui-bundle.js", "swagger-ui.css")),
            ("/redoc", ("redoc.standalone.js",)),
        ):
            r = b.get(page)
            assert r.status_code == 200
            # no CDN, no Google fonts, no validator badge: nothing outside this server
            assert "http://" not in r.text and "https://" not in r.text, r.text
            if page == "/docs":
                assert '"validatorUrl": null' in r.text
            parser = _Assets()
            parser.feed(r.text)
            assert parser.urls and all(u.startswith("/static/apidocs/") for u in parser.urls)
            for name in needs:
                assert f"/static/apidocs/{name}" in parser.urls
            for url in parser.urls:
                asset = b.get(url)
                assert asset.status_code == 200 and len(asset.content) > 1000, url
                if url.endswith(".js"):
                    assert "javascript" in asset.headers["content-type"]
        spec = b.get("/openapi.json").json()
        assert "/api/v1/jobs/{job_id}/cancel" in spec["paths"]
        assert "/api/v1/results/plots/{kind}.{fmt}" in spec["paths"]


def test_pages_need_a_sign_in_and_the_token_link_is_dead(campaign: Campaign) -> None:
    with _browser(campaign) as b:
        for page in [*PAGES, "/charts/latency.svg"]:
            r = b.get(page)
            assert r.status_code == 401, page
        r = b.get("/", params={"token": ADMIN})
        assert r.status_code == 401 and "not accepted" in r.text
        assert "set-cookie" not in r.headers and not b.cookies
        assert 'method="post" action="/login"' in r.text and 'name="token"' in r.text
        # the old cookie carried the raw token: it means nothing now
        b.cookies.set("bnnbench_token", ADMIN)
        assert b.get("/").status_code == 401


def test_sign_in_sets_a_signed_strict_httponly_cookie(campaign: Campaign) -> None:
    with _browser(campaign) as b:
        r = _sign_in(b, "wrong-token", "/jobs")
        assert r.status_code == 401 and "wrong token" in r.text and "set-cookie" not in r.headers
        r = _sign_in(b, ADMIN, "/jobs")
        assert r.status_code == 303 and r.headers["location"] == "/jobs"
        cookie = r.headers["set-cookie"]
        for attr in ("bnnbench_session=", "HttpOnly", "SameSite=strict", "Path=/", "Max-Age="):
            assert attr.lower() in cookie.lower(), cookie
        value = b.cookies["bnnbench_session"]
        assert ADMIN not in value and ADMIN not in cookie  # the token never reaches the browser
        assert b.get("/jobs").status_code == 200
        # a forged or altered cookie is refused
        sid, expires, sig = value.split(".")
        for forged in (f"{sid}.{int(expires) + 10**6}.{sig}", f"{sid}x.{expires}.{sig}", "a.b.c"):
            b.cookies.set("bnnbench_session", forged)
            assert b.get("/jobs").status_code == 401, forged
    with _browser(campaign) as b:
        r = _sign_in(b, ADMIN, "//evil.example/phish")  # no open redirect
        assert r.status_code == 303 and r.headers["location"] == "/"
        r = b.post("/login", data={"token": ADMIN}, headers={"Origin": "http://evil.example"})
        assert r.status_code == 403 and "set-cookie" not in r.headers


def test_sign_out_revokes_the_session(campaign: Campaign) -> None:
    with _browser(campaign) as b:
        _sign_in(b)
        old = b.cookies["bnnbench_session"]
        page = b.get("/")
        assert b.post("/logout", data={}).status_code == 403  # no CSRF token
        r = b.post("/logout", data={"csrf": _csrf(page.text)})
        assert r.status_code == 303 and r.headers["location"] == "/login"
        assert (
            'bnnbench_session=""' in r.headers["set-cookie"]
            or "Max-Age=0" in r.headers["set-cookie"]
        )
        b.cookies.clear()
        b.cookies.set("bnnbench_session", old)  # replaying the signed-out cookie
        assert b.get("/").status_code == 401


def test_action_forms_need_csrf_and_the_same_origin(campaign: Campaign) -> None:
    c = campaign.c
    (job,) = c.client.create_jobs(campaign.models["bnn"].id, "native", [2], runs=3)
    with _browser(campaign) as b, _browser(campaign) as other:
        _sign_in(b)
        _sign_in(other)
        csrf = _csrf(b.get("/jobs").text)
        foreign = _csrf(other.get("/jobs").text)  # another session's token
        cancel = f"/jobs/{job.id}/cancel"
        for data, headers in (
            ({}, {}),
            ({"csrf": "bogus"}, {}),
            ({"csrf": foreign}, {}),
            ({"csrf": csrf}, {"Origin": "http://evil.example"}),
            ({"csrf": csrf}, {"Origin": "null"}),
        ):
            r = b.post(cancel, data=data, headers=headers)
            assert r.status_code == 403 and "Cannot do that" in r.text, (data, headers)
        assert c.client.get_job(job.id).status == "queued"  # nothing happened
        # without a session cookie the token alone does nothing either
        anon = httpx.post(f"{c.url}{cancel}", data={"csrf": csrf})
        assert anon.status_code == 403
        r = b.post(
            cancel, data={"csrf": csrf, "next": "/jobs?status=cancelled"}, headers={"Origin": c.url}
        )
        assert r.status_code == 303 and r.headers["location"] == "/jobs?status=cancelled"
        assert c.client.get_job(job.id).status == "cancelled"
        r = b.post(f"/jobs/{job.id}/retry", data={"csrf": csrf})
        assert r.status_code == 303 and c.client.get_job(job.id).status == "queued"
        r = b.post(f"/jobs/{job.id}/rerun", data={"csrf": csrf})
        new_id = int(r.headers["location"].rsplit("/", 1)[1])
        assert new_id > job.id and c.client.get_job(new_id).threads == 2
        # a refused action is an error page naming the cause, with its status
        r = b.post(f"/jobs/{campaign.jobs[('bnn', 1)].id}/cancel", data={"csrf": csrf})
        assert r.status_code == 409 and "only waiting, queued or leased" in r.text
        for j in (job.id, new_id):
            c.client.cancel_job(j)


def test_pages_show_the_apis_numbers(campaign: Campaign) -> None:
    c = campaign.c
    with _browser(campaign) as b:
        _sign_in(b)
        for page in PAGES:
            r = b.get(page)
            assert r.status_code == 200, page
            assert "default-src 'self'" in r.headers["content-security-policy"]
            assert "<script>" not in r.text  # no inline script: the CSP would block it
        table = c.client.table()
        html = b.get("/tables").text
        cells = dict(re.findall(r'data-cell="([^"]+)">([^<]*)<', html))
        want = dashboard_cells(table)
        assert cells == want and len(want) == 4
        for kind in ("latency", "speedup", "storage", "theoretical"):
            assert f'src="/charts/{kind}.svg"' in html
            img = b.get(f"/charts/{kind}.svg")
            assert img.status_code == 200 and img.content == c.client.plot(kind, "svg")
        jobs = b.get("/jobs").text
        assert "tiny_bnn.onnx" in jobs and FAILURE in jobs
        failed = b.get(f"/jobs/{campaign.failed_job.id}").text
        assert FAILURE in failed and 'data-action="retry"' in failed
        bnn = campaign.models["bnn"]
        model = b.get(f"/models/{bnn.id}").text
        th = bnn.analysis["theoretical"]["speedup"]  # type: ignore[index]
        assert f'id="theoretical-speedup">{th:.2f}<' in model
        assert 'data-fidelity="True"' in model and "vs onnxruntime" in model
        res = c.client.results(job_id=campaign.jobs[("fp32", 1)].id)[-1]
        page = b.get(f"/results/{res.id}").text
        assert ", ".join(str(x) for x in res.samples_ms) in page
        assert "readings_before" in page and "performance" in page
        # scripts may read pages with the bearer header (no session, no forms)
        r = httpx.get(f"{c.url}/devices", headers={"Authorization": f"Bearer {ADMIN}"})
        assert r.status_code == 200 and "SM8250" in r.text and 'name="csrf"' not in r.text
