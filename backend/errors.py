"""Errors that are the caller's fault: each becomes a 4xx JSON answer with a message, never a 500."""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    status = 400

    def __init__(self, message: str, status: int | None = None, **details: Any):
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status
        self.details = details

    def to_json(self) -> dict[str, Any]:
        return {"error": self.message, "status": self.status, **self.details}


class InvalidTasks(ApiError):
    status = 422


class PayloadTooLarge(ApiError):
    status = 413
