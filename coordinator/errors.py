"""Errors raised by the coordinator's logic modules; the app turns them into
``{"detail": "..."}`` responses with the status code below."""

from __future__ import annotations


class CoordinatorError(Exception):
    status_code = 400

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class BadRequest(CoordinatorError):
    status_code = 400


class Unauthorized(CoordinatorError):
    status_code = 401


class Forbidden(CoordinatorError):
    status_code = 403


class NotFound(CoordinatorError):
    status_code = 404


class Conflict(CoordinatorError):
    status_code = 409


class PayloadTooLarge(CoordinatorError):
    status_code = 413


class Unprocessable(CoordinatorError):
    status_code = 422
