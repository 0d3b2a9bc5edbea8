"""Errors a client can act on.

Every failure that is the client's fault (or a temporary state of the server) is raised as a
``ServiceError``; the app turns it into ``{"error": "..."}`` with ``status``. Anything else is a bug and
becomes a generic 500 without a traceback or a path in the body.
"""

from __future__ import annotations


class ServiceError(Exception):
    """A failure with an HTTP status and a message that says what to fix."""

    status: int = 400

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status


class BadRequest(ServiceError):
    status = 400


class Unauthorized(ServiceError):
    status = 401


class Forbidden(ServiceError):
    status = 403


class NotFound(ServiceError):
    status = 404


class PayloadTooLarge(ServiceError):
    status = 413


class Unprocessable(ServiceError):
    """Well-formed, but this request cannot be answered as asked (e.g. more digits than allowed)."""

    status = 422


class UnsupportedMediaType(ServiceError):
    status = 415


class Unavailable(ServiceError):
    status = 503
