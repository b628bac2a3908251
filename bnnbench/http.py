"""HTTP helpers shared by the client and the agent (httpx only)."""

from __future__ import annotations

import httpx


def error_detail(resp: httpx.Response) -> str:
    """The coordinator's ``{"detail": ...}`` message of an error response, else its text."""
    try:
        body = resp.json()
    except ValueError:
        return resp.text[:500] or resp.reason_phrase
    if isinstance(body, dict) and "detail" in body:
        return str(body["detail"])
    return str(body)[:500]
