"""The API's error tree. Each maps to one `extensions.code`; anything else is masked."""

from __future__ import annotations

from typing import ClassVar


class ApiError(Exception):
    """An error the API reports as it is: the message is for the user."""

    code: ClassVar[str] = "BAD_USER_INPUT"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
        # graphql-core copies an original error's `extensions` into the GraphQL error, so the
        # code reaches every transport (HTTP and websocket) the same way.
        self.extensions = {"code": self.code}


class Unauthenticated(ApiError):
    code = "UNAUTHENTICATED"


class Forbidden(ApiError):
    code = "FORBIDDEN"


class BadUserInput(ApiError):
    code = "BAD_USER_INPUT"


class NotFound(ApiError):
    code = "NOT_FOUND"
