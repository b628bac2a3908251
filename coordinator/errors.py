"""Errors raised by the coordinator's logic modules; the app turns them into
``{"detail": "..."}`` responses with the error's status code."""

from __future__ import annotations

from http import HTTPStatus
from typing import Any


class CoordinatorError(Exception):
    """An error answer (400 unless a subclass names its status in its class line)."""

    status_code: int = HTTPStatus.BAD_REQUEST

    def __init_subclass__(cls, status: HTTPStatus = HTTPStatus.BAD_REQUEST, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        cls.status_code = int(status)

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


# one status each; the docstrings say when the coordinator answers with it
class Unauthorized(CoordinatorError, status=HTTPStatus.UNAUTHORIZED):
    """No bearer token, or one that is neither the admin's nor a registered agent's."""


class Forbidden(CoordinatorError, status=HTTPStatus.FORBIDDEN):
    """A valid token of the wrong kind for the endpoint."""


class NotFound(CoordinatorError, status=HTTPStatus.NOT_FOUND):
    """No such model, artifact, job or device."""


class Conflict(CoordinatorError, status=HTTPStatus.CONFLICT):
    """The state forbids it now: a stale lease, an artifact not ready or not failed."""


class PayloadTooLarge(CoordinatorError, status=HTTPStatus.REQUEST_ENTITY_TOO_LARGE):
    """An upload above max_upload_bytes (any other body above max_json_bytes is refused
    before it is read, by coordinator.app.BodyLimit)."""


class Unprocessable(CoordinatorError, status=HTTPStatus.UNPROCESSABLE_ENTITY):
    """Well-formed but invalid: not an ONNX model, threads out of range, no such device."""
