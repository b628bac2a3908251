"""HTTP helpers shared by the client and the agent (httpx only)."""

from __future__ import annotations

import httpx


class ApiError(Exception):
    """An error answer from the coordinator (or none at all: ``status_code`` 0 when it could
    not be reached), with the server's ``detail`` message."""

    def __init__(self, status_code: int, detail: str, method: str = "", url: str = "") -> None:
        super().__init__(f"{method} {url} -> HTTP {status_code}: {detail}".strip())
        self.status_code = status_code
        self.detail = detail
        self.method = method
        self.url = url


def error_detail(resp: httpx.Response) -> str:
    """The coordinator's ``{"detail": ...}`` message of an error response, else its text."""
    try:
        body = resp.json()
    except ValueError:
        return resp.text[:500] or resp.reason_phrase
    if isinstance(body, dict) and "detail" in body:
        return str(body["detail"])
    return str(body)[:500]
