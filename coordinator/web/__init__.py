"""The dashboard: server-rendered pages (Jinja2, a small CSS file, a few lines of JS for
auto-refresh), no front-end build.

- ``pages``: the GET pages (overview, devices, jobs, models, results, tables and charts).
- ``actions``: sign in/out and the job actions (POST forms, CSRF-checked).
- ``session``: the signed session cookie and the CSRF token.
- ``queries``: what each page reads from the database.
"""

from __future__ import annotations

from fastapi import APIRouter

from coordinator.web import actions, pages

router = APIRouter(include_in_schema=False)
router.include_router(pages.router)
router.include_router(actions.router)

__all__ = ["router"]
